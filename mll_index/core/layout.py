"""The layout of an index folder: every file and folder name it holds, and how a model id names its folder.

    <index>/
        manifest.json               the node index's manifest (index/node_index.py)
        graph.json                  the taxonomy and segment 0's node set
        nodes.jsonl                 segment 0's node table
        node_vectors.npy            segment 0's node vectors
        nodes.faiss                 the trained IVF index (IVF search only)
        nodes-<k>.jsonl             segment k's node table (k: six digits)
        node_vectors-<k>.npy        segment k's node vectors
        .lock                       the writers' lock file
        labels/                     model labels (labels/folders.py)
            samples-<fp>.json       a sample image table, named by the sample set's fingerprint
            <model folder>/         one model's label (see `model_folder_name`)
            matrix/                 the label matrix (labels/matrix.py)
                manifest.json, log-<n>.jsonl, shard-<n>/
            .pixels/                decoded sample images, a cache
        published/                  published labels (published/store.py)
        selection_rule/             the calibrated selection rule (selection/calibrated_rule.py)

Writes go through temporary siblings named `.<name>.<random>.tmp`; a folder swap keeps the old
folder as `.<name>.old` between its two renames (core/artifacts.py). Names starting with "." are
therefore never data.

A model's folder is its id percent-encoded: every byte outside [A-Za-z0-9._-] becomes %XX (UTF-8),
so the mapping is one-to-one and `model_id_of_folder` reverses it. An encoded id that would be a
reserved name (`matrix`, `samples-…`, any name starting with ".", compared case-insensitively,
since some file systems are) has its first character encoded as well. An encoded id longer than
MAX_NAME_BYTES is cut and ends in "~" and a hash of the whole id ("~" is always encoded, so only
such names hold one); its id is then read from the folder's manifest. Folders written before
this rule (unsafe runs replaced by "_", `legacy_folder_name`) are still read when their manifest
names the model.

Imports nothing from the package but its errors: artifacts.py takes its names from here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import quote, unquote

from mll_index.errors import InputError

MANIFEST = "manifest.json"          # every artifact folder's manifest (artifacts.py)

# The node index.
GRAPH = "graph.json"
NODE_TABLE = "nodes.jsonl"
NODE_VECTORS = "node_vectors.npy"
FAISS_FILE = "nodes.faiss"
LOCK = ".lock"

# Labels.
LABELS = "labels"
MATRIX = "matrix"
PIXEL_CACHE = ".pixels"
SAMPLE_TABLE_PREFIX = "samples-"
PUBLISHED = "published"
SELECTION_RULE = "selection_rule"     # the calibrated selection rule (selection/calibrated_rule.py)

# Temporary names (artifacts.atomic_file / atomic_dir): `.<name>.<writer pid>-<random>.tmp`, and `.<name>.old`.
TEMP_SUFFIX = ".tmp"
BACKUP_SUFFIX = ".old"

# Every model folder name is at most this long: file systems cap a name at 255 bytes, and a
# write goes through `.<name>.<pid>-<8 random>.tmp`, about 22 bytes more.
MAX_NAME_BYTES = 200
_HASH_CHARS = 32
_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_RESERVED = (MATRIX,)
_RESERVED_PREFIXES = (SAMPLE_TABLE_PREFIX, ".")


def segment_files(number: int) -> tuple[str, str]:
    """(vectors, node table) file names of node segment `number` (1 and up; segment 0 is NODE_VECTORS, NODE_TABLE)."""
    return f"node_vectors-{number:06d}.npy", f"nodes-{number:06d}.jsonl"


# Segment files a crashed growth may leave: the segments and their temporary files.
SEGMENT_PATTERNS = ("node_vectors-*.npy", "nodes-*.jsonl", ".node_vectors-*.tmp", ".nodes-*.tmp")


def shard_name(number: int) -> str:
    """The folder name of label-matrix shard `number`."""
    return f"shard-{number:06d}"


def log_name(number: int) -> str:
    """The file name of the label matrix's log that starts at shard `number`."""
    return f"log-{number:06d}.jsonl"


def labels_dir(index_path: Path) -> Path:
    """<index>/labels."""
    return Path(index_path) / LABELS


def matrix_dir(index_path: Path) -> Path:
    """<index>/labels/matrix."""
    return labels_dir(index_path) / MATRIX


def published_dir(index_path: Path) -> Path:
    """<index>/published."""
    return Path(index_path) / PUBLISHED


def selection_rule_dir(index_path: Path) -> Path:
    """<index>/selection_rule: the selection rule `mll-index calibrate` fitted to the index's labels."""
    return Path(index_path) / SELECTION_RULE


def sample_table_path(index_path: Path, fingerprint: str) -> Path:
    """<index>/labels/samples-<fingerprint>.json."""
    return labels_dir(index_path) / f"{SAMPLE_TABLE_PREFIX}{fingerprint}.json"


def topk_table_path(index_path: Path, fingerprint: str) -> Path:
    """<index>/labels/samples-<fingerprint>.topk: every model's top nodes on that sample set, stacked
    (a reserved name by its prefix, so never taken for a model's folder)."""
    return labels_dir(index_path) / f"{SAMPLE_TABLE_PREFIX}{fingerprint}.topk"


def is_reserved(name: str) -> bool:
    """Whether a name in labels/ belongs to the layout (matrix, sample tables, hidden and temporary
    names), never to a model. Case-insensitive: `Matrix` is `matrix` on some file systems."""
    folded = name.casefold()
    return folded in _RESERVED or folded.startswith(_RESERVED_PREFIXES)


def _percent(text: str) -> str:
    # quote() keeps "~" unreserved; it is encoded too, so that it only ever marks a hashed name.
    return quote(text, safe="").replace("~", "%7E")


def model_folder_name(model_id: str) -> str:
    """The folder of a model's label in labels/: its id, percent-encoded (see the module docstring).

    One-to-one: two ids never share a folder, and `model_id_of_folder` gives the id back
    (for names up to MAX_NAME_BYTES; a longer one is cut and hashed).

    Raises:
        InputError: an empty id.
    """
    if not isinstance(model_id, str) or not model_id:
        raise InputError(f"model id {model_id!r}: a model id must be a non-empty string")
    name = _percent(model_id)
    if is_reserved(name):
        name = f"%{ord(name[0]):02X}{name[1:]}"   # safe characters are ASCII: one byte
    if len(name) > MAX_NAME_BYTES:
        keep = MAX_NAME_BYTES - _HASH_CHARS - 1
        cut = name[:keep]
        if "%" in cut[-2:]:                         # do not split a %XX escape
            cut = cut[:cut.rindex("%", len(cut) - 2)]
        name = f"{cut}~{hashlib.sha256(model_id.encode('utf-8')).hexdigest()[:_HASH_CHARS]}"
    return name


def model_id_of_folder(name: str) -> str | None:
    """The model id a folder name encodes; None for a hashed (long id) name or one no id encodes to.

    Legacy folder names (`legacy_folder_name`) decode to themselves or to nothing: their
    manifest tells the id.
    """
    if "~" in name or is_reserved(name):
        return None
    try:
        model_id = unquote(name, errors="strict")
    except UnicodeDecodeError:
        return None
    return model_id if model_id and model_folder_name(model_id) == name else None


def legacy_folder_name(model_id: str) -> str:
    """The folder name labels were written under before `model_folder_name`: runs of characters outside
    [A-Za-z0-9._-] replaced by "_" (lossy: `a/b` and `a_b` shared a folder). Still read when the
    folder's manifest names the model."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)
