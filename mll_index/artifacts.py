"""On-disk artifacts: atomic writes, checksums and the versioned manifest of an index directory.

Imports nothing else from the package but its errors, so every stage can use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mll_index import __version__
from mll_index.errors import IndexFormatError
from mll_index.layout import MANIFEST

FORMAT_NAME = "mll-index"
FORMAT_VERSION = 1
SELF_DIGEST = "manifest_sha256"   # a manifest's checksum of its own content, where it has one


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """The manifest entry of one file: its size and checksum."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file 0600; give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def read_json(path: Path) -> Any:
    """Read a JSON file; a missing or unparsable file is an IndexFormatError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: not valid JSON ({exc})") from None


def _backup_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_dir(path: Path) -> None:
    """Finish or undo a directory swap that a crash interrupted between its two renames."""
    path = Path(path)
    backup = _backup_of(path)
    if backup.exists():
        if path.exists():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(backup, path)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds.

    A crash inside the block leaves `path` as it was. The swap is two renames; a crash
    between them leaves the old directory at a backup name, which `recover_dir` (called by
    every loader) puts back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        yield tmp
        backup = _backup_of(path)
        if path.exists():
            os.rename(path, backup)
        os.rename(tmp, path)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold `folder/.lock` exclusively: one writer at a time for artifacts that grow in place.

    A writer that swaps the whole folder in (`atomic_dir`) leaves waiting writers holding the
    old folder's lock file; they notice that it is no longer the folder's and lock the new one.
    """
    folder = Path(folder)
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            current = os.stat(folder / ".lock").st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def new_manifest(kind: str, version: int = FORMAT_VERSION, **fields: Any) -> dict[str, Any]:
    """A manifest skeleton: format name and version, package version, artifact kind."""
    return {
        "format": FORMAT_NAME,
        "format_version": version,
        "kind": kind,
        "package_version": __version__,
        **fields,
        "files": {},
    }


def seal_manifest(directory: Path, manifest: dict[str, Any], files: list[str]) -> None:
    """Record size and checksum of `files` (relative to `directory`) and write the manifest."""
    manifest["files"] = {name: file_record(directory / name) for name in files}
    write_json(directory / MANIFEST, manifest)


def read_manifest(directory: Path, kind: str, verify: bool = False,
                  versions: Sequence[int] = (FORMAT_VERSION,)) -> dict[str, Any]:
    """Read and check a manifest: format, version, kind, and every listed file's size.

    Args:
        directory: the artifact directory.
        kind: the artifact kind expected (e.g. "node-index").
        verify: also compare each file's SHA-256 (reads every byte).
        versions: the format versions of this kind that the caller reads.
    Raises:
        IndexFormatError: naming the directory or the file that is wrong.
    """
    directory = Path(directory)
    recover_dir(directory)
    if not directory.is_dir():
        raise IndexFormatError(f"{directory}: no index here (directory is missing)")
    manifest = read_json(directory / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{directory / MANIFEST}: not an {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if version not in versions:
        readable = ", ".join(str(v) for v in versions)
        raise IndexFormatError(
            f"{directory / MANIFEST}: format version {version!r}, this mll-index {__version__} "
            f"reads version{'s' if len(versions) > 1 else ''} {readable}; rebuild the index"
        )
    if manifest.get("kind") != kind:
        raise IndexFormatError(f"{directory / MANIFEST}: holds a {manifest.get('kind')!r}, expected {kind!r}")
    for name, record in manifest.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            raise IndexFormatError(f"{file}: file listed in the manifest is missing")
        size = file.stat().st_size
        if size != record["bytes"]:
            raise IndexFormatError(f"{file}: {size} bytes, the manifest says {record['bytes']} (truncated or changed)")
        if verify and sha256_file(file) != record["sha256"]:
            raise IndexFormatError(f"{file}: checksum differs from the manifest (corrupt)")
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """Hex SHA-256 of a manifest's content but its SELF_DIGEST field (canonical JSON: sorted keys, no spaces).

    The files' checksums catch a changed file; this catches a changed manifest (a flipped digit in
    a count, an id, a checksum) in the manifests written once and never rewritten.
    """
    body = {key: value for key, value in manifest.items() if key != SELF_DIGEST}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_self_digest(directory: Path, manifest: dict[str, Any]) -> str | None:
    """The problem, one line, if a manifest holding SELF_DIGEST does not match it; None otherwise."""
    if SELF_DIGEST in manifest and manifest[SELF_DIGEST] != manifest_digest(manifest):
        return f"{Path(directory) / MANIFEST}: its content differs from its own checksum (changed or corrupt)"
    return None


def check_manifest(directory: Path, kind: str, checksums: bool = False,
                   versions: Sequence[int] = (FORMAT_VERSION,)) -> tuple[dict[str, Any] | None, list[str]]:
    """Check a manifest and every file it lists, collecting each problem rather than stopping at the first.

    Returns:
        (the manifest, or None if it cannot be read or is of another format, version or kind;
        one line per problem, naming the file: [] when all is sound). With `checksums`, each
        listed file's SHA-256 is compared too.
    """
    directory = Path(directory)
    try:
        manifest = read_json(directory / MANIFEST)
    except IndexFormatError as exc:
        return None, [str(exc)]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME \
            or manifest.get("format_version") not in versions or manifest.get("kind") != kind:
        try:
            read_manifest(directory, kind, versions=versions)   # its message says what is wrong
        except IndexFormatError as exc:
            return None, [str(exc)]
    if not isinstance(manifest.get("files", {}), dict):
        return None, [f"{directory / MANIFEST}: malformed field 'files'"]
    own = check_self_digest(directory, manifest)
    problems = [own] if own else []
    for name, record in manifest.get("files", {}).items():
        file = directory / name
        try:
            size = file.stat().st_size
            if not file.is_file():
                problems.append(f"{file}: listed in the manifest, not a file")
            elif size != record["bytes"]:
                problems.append(f"{file}: {size} bytes, the manifest says {record['bytes']} (truncated or changed)")
            elif checksums and sha256_file(file) != record["sha256"]:
                problems.append(f"{file}: checksum differs from the manifest (corrupt)")
        except FileNotFoundError:
            problems.append(f"{file}: file listed in the manifest is missing")
        except (KeyError, TypeError):
            problems.append(f"{directory / MANIFEST}: malformed record of {name!r}")
    return manifest, problems


def load_arrays(folder: Path, files: list[str]) -> dict[str, np.ndarray]:
    """Memory-map the .npy files of an artifact folder, keyed by name without ".npy"; an unreadable one
    is an IndexFormatError naming it."""
    arrays = {}
    for name in files:
        try:
            arrays[name[:-4]] = np.load(Path(folder) / name, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise IndexFormatError(f"{Path(folder) / name}: cannot read ({exc})") from None
    return arrays
