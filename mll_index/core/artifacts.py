"""On-disk artifacts: atomic writes, checksums and the versioned manifest of an index directory.

Imports nothing else from the package but its errors, so every stage can use it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import tempfile
import threading
import time
import tokenize
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mll_index import __version__
from mll_index.core.layout import LOCK, MANIFEST, labels_dir, matrix_dir
from mll_index.errors import IndexFormatError, IndexWriteError, MLLIndexError

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def _failed_write(file: Path, exc: BaseException) -> IndexWriteError | None:
    """The one-line error for a write that failed for lack of room, or None for any other failure.

    ENOSPC and EFBIG are told apart by errno; numpy's `tofile` (under np.save) and FAISS report a
    short write without one ("N requested and M written", "write error in F: ..."), so the cause
    is then the file-size limit if one is set, else the disk.
    """
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "Disk quota" in text:
        why = "no space left on device"
    elif code == errno.EFBIG or "File too large" in text:
        why = "file size limit reached"
    elif (isinstance(exc, OSError) and code is None and "requested and" in text) or \
            (isinstance(exc, RuntimeError) and "write error" in text):
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        why = "no space left on device" if limit == resource.RLIM_INFINITY else "file size limit reached"
    else:
        return None
    return IndexWriteError(f"{why} while writing {file}")


@contextlib.contextmanager
def writing(file: Path) -> Iterator[None]:
    """Turn a write that fails for lack of room (full disk, quota, file-size limit; an OSError, or
    FAISS's RuntimeError) into an IndexWriteError naming `file`; other errors pass unchanged."""
    try:
        yield
    except MLLIndexError:
        raise
    except (OSError, RuntimeError) as exc:
        failure = _failed_write(Path(file), exc)
        if failure is None:
            raise
        raise failure from None


def _temp_prefix(path: Path) -> str:
    # The writer's pid in the name tells whether a temporary left beside an index is still someone's.
    return f".{path.name}.{os.getpid()}-"


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; it replaces `path` only if the block succeeds.

    Raises:
        IndexWriteError: the disk is full or a file-size limit is reached (`path` is left as it was).
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
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
    """Finish or undo a directory swap that a crash interrupted between its two renames.

    Only for a caller that holds the writer lock of `path` (or knows no writer runs): a writer
    caught between its renames looks exactly like a crash there.
    """
    path = Path(path)
    backup = _backup_of(path)
    if backup.exists():
        if path.exists():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.rename(backup, path)


def settle_swap(directory: Path, own_lock: bool = False, timeout: float = 5.0) -> None:
    """For a reader that finds `directory` missing while its swap backup is there: wait for the
    writer between its two renames to finish (at most `timeout` seconds).

    With `own_lock` (the directory holds its writer's `.lock`, as an index does), a backup whose
    lock nobody holds was left by a crash, and is put back under that lock; otherwise the
    directory stays missing until the next writer restores it.
    """
    directory = Path(directory)
    backup = _backup_of(directory)
    deadline = time.monotonic() + timeout
    while not directory.exists() and backup.is_dir():
        if own_lock:
            with contextlib.suppress(OSError), open(backup / LOCK, "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass                        # a live writer: it renames the new folder in shortly
                else:
                    recover_dir(directory)
                    return
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` only if the block succeeds.

    A crash inside the block leaves `path` as it was. The swap is two renames; a crash
    between them leaves the old directory at a backup name, which the next writer (under its
    lock) puts back.

    Raises:
        IndexWriteError: the disk is full or a file-size limit is reached (`path` is left as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        with writing(path):
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
            yield tmp
            backup = _backup_of(path)
            if path.exists():
                os.rename(path, backup)
            os.rename(tmp, path)
            shutil.rmtree(backup, ignore_errors=True)
    except IndexWriteError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        # Name the file as it would have been, not its temporary folder.
        raise IndexWriteError(str(exc).replace(str(tmp), str(path))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- the writer lock ------------------------------------------------------------------------

lock_log = logging.getLogger(__name__ + ".lock")
_held: dict[tuple[str, int], int] = {}      # (folder, thread) -> nesting depth of writer_lock


def _holder(handle: Any) -> str:
    """The pid the lock's holder wrote into it ("?" if unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        handle.seek(0)
        return handle.read(32).strip() or "?"
    return "?"


def _acquire(folder: Path) -> Any:
    announced = False
    missing_since = None
    while True:
        try:
            handle = open(folder / LOCK, "a+")
        except FileNotFoundError:
            # Between the two renames of a swap the folder is briefly missing (its backup is there):
            # making it here would block the writer's second rename, so wait for it first.
            missing_since = missing_since or time.monotonic()
            if not _backup_of(folder).is_dir() or time.monotonic() - missing_since > 5:
                folder.mkdir(parents=True, exist_ok=True)
            else:
                time.sleep(0.01)
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not announced:
                lock_log.warning("waiting for another writer of %s (pid %s)…", folder, _holder(handle))
                announced = True
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            current = os.stat(folder / LOCK).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            return handle
        handle.close()


@contextlib.contextmanager
def writer_lock(folder: Path) -> Iterator[bool]:
    """Hold `folder/.lock` exclusively: one writer at a time for artifacts that grow in place.

    A writer that swaps the whole folder in (`atomic_dir`) leaves waiting writers holding the
    old folder's lock file; they notice that it is no longer the folder's and lock the new one.
    A waiting writer says so once (a warning naming the holder's pid). The lock is re-entrant
    within a thread; the block gets True where this is the outermost hold.
    """
    folder = Path(folder)
    key = (os.path.realpath(folder), threading.get_ident())
    if key in _held:
        _held[key] += 1
        try:
            yield False
        finally:
            _held[key] -= 1
        return
    handle = _acquire(folder)
    _held[key] = 1
    try:
        yield True
    finally:
        del _held[key]
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


# --- leftovers ------------------------------------------------------------------------------

# Ours: `.<name>.<pid>-<random>.tmp` (older: without the pid) from atomic_file/atomic_dir, and
# `.<name>.old`, the backup of a directory swap.
_TEMP = re.compile(r"\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[a-z0-9_]+\.tmp")
_OLD = re.compile(r"\.(?P<name>.+)\.old")


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def find_leftovers(index_path: Path) -> list[Path]:
    """Temporary files and folders and swap backups of an index's writers (a killed or crashed
    write leaves them): in the index folder, labels/ and labels/matrix/, and the index's own
    beside it. Whether a live writer still holds one is not checked (see `clear_leftovers`)."""
    index_path = Path(index_path)
    found = []
    for folder in (index_path, labels_dir(index_path), matrix_dir(index_path)):
        found += [c for c in _children(folder) if _TEMP.fullmatch(c.name) or _OLD.fullmatch(c.name)]
    for child in _children(index_path.parent):
        match = _TEMP.fullmatch(child.name) or _OLD.fullmatch(child.name)
        if match and match["name"] == index_path.name:
            found.append(child)
    return sorted(found)


def size_of(paths: Sequence[Path]) -> int:
    """Bytes of these files and folders (everything below a folder)."""
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
            else:
                total += path.lstat().st_size
    return total


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_leftovers(index_path: Path) -> int:
    """Remove what `find_leftovers` finds that no live writer holds; returns the bytes freed.

    For a caller holding the index's writer lock: every writer inside the index holds it, so
    what is there is a dead writer's. Beside the index, a first build (there was nothing to
    lock) may be writing: a temporary there is kept while the pid in its name runs. A swap
    backup is put back if its directory is missing (the crash came between the two renames).
    """
    index_path = Path(index_path)
    freed = 0
    for path in find_leftovers(index_path):
        old = _OLD.fullmatch(path.name)
        if old:
            target = path.with_name(old["name"])
            if not target.exists():
                recover_dir(target)
                continue
        else:
            pid = _TEMP.fullmatch(path.name)["pid"]  # type: ignore[index]
            beside = path.parent == index_path.parent
            if beside and pid and int(pid) != os.getpid() and _pid_alive(int(pid)):
                continue
        freed += size_of([path])
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if freed:
        log.info("%s: removed %d bytes that interrupted writes left", index_path, freed)
    return freed


@contextlib.contextmanager
def index_lock(index_path: Path) -> Iterator[None]:
    """The index-wide writer lock (`<index>/.lock`) that every writer of an index holds (build,
    growth, labels, compaction, published import); on taking it, the leftovers of interrupted
    writers are cleared."""
    with writer_lock(Path(index_path)) as outermost:
        if outermost:
            clear_leftovers(Path(index_path))
        yield


# --- readers --------------------------------------------------------------------------------

def _version(paths: Sequence[Path]) -> tuple[Any, ...]:
    out: list[Any] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        # A folder's own entries change with every write in it: only its identity names a version.
        out.append(st.st_ino if os.path.isdir(path) else (st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


def read_consistent(read: Callable[[], T], versions: Sequence[Path], attempts: int = 50) -> T:
    """`read()`, run again while the files naming a version (a manifest, the folder holding it)
    changed during it: a writer replaced them meanwhile, and the read may have seen a mix of two
    versions (or failed on a file the new version no longer has).

    Raises:
        whatever `read` raises when no writer changed the version meanwhile (or after `attempts`).
    """
    for attempt in range(attempts):
        before = _version(versions)
        try:
            result = read()
        except (IndexFormatError, OSError):
            if attempt + 1 == attempts or _version(versions) == before:
                raise
            continue
        if _version(versions) == before:
            return result
        time.sleep(0.001 * attempt)
    return result


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
                  versions: Sequence[int] = (FORMAT_VERSION,), own_lock: bool = False) -> dict[str, Any]:
    """Read and check a manifest: format, version, kind, and every listed file's size.

    Args:
        directory: the artifact directory.
        kind: the artifact kind expected (e.g. "node-index").
        verify: also compare each file's SHA-256 (reads every byte).
        versions: the format versions of this kind that the caller reads.
        own_lock: the directory holds its writers' `.lock` (see `settle_swap`).
    Raises:
        IndexFormatError: naming the directory or the file that is wrong.
    """
    directory = Path(directory)
    if not directory.is_dir():
        settle_swap(directory, own_lock)
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



def check_then_open(directory: Path, kind: str, open_it: Callable[[], Any], checksums: bool = False,
                    versions: Sequence[int] = (FORMAT_VERSION,)) -> list[str]:
    """`check_manifest`'s problems; when there are none, also what opening the artifact as its
    readers do (`open_it`) says is wrong (shapes, counts), one line each naming the file."""
    manifest, problems = check_manifest(directory, kind, checksums=checksums, versions=versions)
    if manifest is not None and not problems:
        try:
            open_it()
        except IndexFormatError as exc:
            problems.append(str(exc))
    return problems


def load_arrays(folder: Path, files: list[str]) -> dict[str, np.ndarray]:
    """Memory-map the .npy files of an artifact folder, keyed by name without ".npy"; an unreadable one
    is an IndexFormatError naming it.

    Each is a read-only ndarray view of its mapping (which the view keeps open), not an np.memmap:
    the subclass's hooks cost 20 us per index, and the restricted confusion indexes a label's
    arrays tens of times per task."""
    arrays = {}
    for name in files:
        try:
            arrays[name[:-4]] = np.asarray(np.load(Path(folder) / name, mmap_mode="r"))
        except (ValueError, OSError, SyntaxError, tokenize.TokenError) as exc:   # a damaged .npy header
            raise IndexFormatError(f"{Path(folder) / name}: cannot read ({exc})") from None
    return arrays
