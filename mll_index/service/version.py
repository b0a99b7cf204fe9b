"""`index_version`: a fingerprint of the files selection reads, cheap enough to poll every second.

Every writer of an index replaces files by rename (a new inode) or appends to the label
matrix's log (a new size), so the (inode, mtime_ns, size) of a few files and folders tells a
new version from the old one without reading anything: the index manifest (node growth and
compaction), the label matrix's manifest and logs (labeling, `labels compact`), the labels
folder itself (a label folder swapped in), and the published labels' manifest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_FILES = ("manifest.json", "labels", "labels/matrix", "labels/matrix/manifest.json", "published/manifest.json")


def _stat_line(path: Path) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path.name}:-"
    return f"{path.name}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"


def index_version(path: Path) -> str:
    """A 16-hex-digit fingerprint of the index at `path`: equal while nothing selection reads changed.

    Costs a handful of stat calls (no file is read). Two reads of an unchanged index agree;
    a new manifest, a label matrix append or compaction, a label folder or published labels
    swapped in all give a new value. A missing index gives a value too (opening it then fails).
    """
    root = Path(path)
    lines = [_stat_line(root / name) for name in _FILES]
    matrix = root / "labels" / "matrix"
    try:
        logs = sorted(entry.name for entry in os.scandir(matrix) if entry.name.startswith("log-"))
    except (FileNotFoundError, NotADirectoryError):
        logs = []
    lines += [_stat_line(matrix / name) for name in logs]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
