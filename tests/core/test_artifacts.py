"""Tests of mll_index.core.artifacts: atomic files and directories, crash recovery, manifests."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from mll_index import __version__
from mll_index.core import artifacts as A
from mll_index.errors import IndexFormatError

KIND = "test-artifact"


class Boom(RuntimeError):
    pass


def make_artifact(directory: Path, files: dict[str, bytes] | None = None) -> dict:
    """A sealed artifact directory with the given files (written atomically)."""
    files = files if files is not None else {"a.bin": b"alpha" * 100, "b.txt": b"beta\n"}
    with A.atomic_dir(directory) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        manifest = A.new_manifest(KIND, note="hello")
        A.seal_manifest(tmp, manifest, list(files))
    return manifest


def leftovers(parent: Path, name: str) -> list[str]:
    """Temporary or backup entries next to `name`."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# --- files ----------------------------------------------------------------------------------

def test_atomic_file_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "new" / "data.txt"
    with A.atomic_file(path) as handle:
        handle.write("first")
    assert path.read_text() == "first"
    with A.atomic_file(path, "wb") as handle:
        handle.write(b"second")
    assert path.read_bytes() == b"second"
    assert leftovers(path.parent, "data.txt") == []


def test_atomic_file_keeps_the_old_file_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("old content")
    with pytest.raises(Boom):
        with A.atomic_file(path) as handle:
            handle.write("half of the new")
            raise Boom()
    assert path.read_text() == "old content"
    assert leftovers(tmp_path, "data.txt") == []


def test_atomic_file_creates_nothing_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "never.txt"
    with pytest.raises(Boom):
        with A.atomic_file(path) as handle:
            handle.write("x")
            raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_json_round_trip_and_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    A.write_json(path, {"crème": [1, 2.5, None]})
    assert A.read_json(path) == {"crème": [1, 2.5, None]}
    path.write_text('{"truncated": [1, 2')
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ": not valid JSON"):
        A.read_json(path)
    with pytest.raises(IndexFormatError, match=re.escape(str(tmp_path / "missing.json")) + ": file is missing"):
        A.read_json(tmp_path / "missing.json")


def test_sha256_and_file_record(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert A.sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert A.file_record(path) == {"bytes": 3, "sha256": A.sha256_file(path)}


def test_atomic_file_respects_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    old = os.umask(0o022)
    try:
        A.write_json(path, {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_atomic_dir_respects_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with A.atomic_dir(tmp_path / "shared") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755


# --- directories ----------------------------------------------------------------------------

def test_atomic_dir_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "parent" / "artifact"
    make_artifact(target, {"one": b"1"})
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "one"]
    make_artifact(target, {"two": b"22"})
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "two"]
    assert leftovers(target.parent, "artifact") == []


def test_atomic_dir_keeps_the_old_directory_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(Boom):
        with A.atomic_dir(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            (tmp / "a.bin").write_bytes(b"new half-written data")
            (tmp / "extra").write_text("x")
            raise Boom()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert leftovers(tmp_path, "artifact") == []
    assert A.read_manifest(target, KIND, verify=True)["note"] == "hello"


def test_atomic_dir_creates_nothing_when_the_first_build_raises(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with A.atomic_dir(tmp_path / "artifact") as tmp:
            (tmp / "f").write_text("x")
            raise KeyboardInterrupt()
    assert list(tmp_path.iterdir()) == []


def test_recover_dir_restores_the_backup_after_a_crash_between_renames(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    # The crash: the old directory was moved to its backup name, the new one never arrived.
    os.rename(target, tmp_path / ".artifact.old")
    assert not target.exists()
    A.recover_dir(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert leftovers(tmp_path, "artifact") == []


def test_read_manifest_recovers_the_backup_only_when_no_writer_holds_it(tmp_path: Path) -> None:
    import fcntl

    target = tmp_path / "artifact"
    make_artifact(target)
    backup = tmp_path / ".artifact.old"
    os.rename(target, backup)
    with open(backup / ".lock", "a") as handle:             # a writer between its two renames
        fcntl.flock(handle, fcntl.LOCK_EX)
        A.settle_swap(target, own_lock=True, timeout=0.05)
        assert not target.exists() and backup.is_dir()      # left to the writer
    assert A.read_manifest(target, KIND, verify=True, own_lock=True)["kind"] == KIND
    assert target.is_dir() and not backup.exists()


def test_recover_dir_drops_a_stale_backup_when_the_new_directory_is_in_place(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target, {"new": b"new"})
    stale = tmp_path / ".artifact.old"
    stale.mkdir()
    (stale / "old").write_text("old")
    A.recover_dir(target)
    assert not stale.exists()
    assert (target / "new").read_bytes() == b"new"


def test_atomic_dir_recovers_before_writing(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target, {"old": b"old"})
    os.rename(target, tmp_path / ".artifact.old")
    with pytest.raises(Boom):
        with A.atomic_dir(target):
            raise Boom()
    assert (target / "old").read_bytes() == b"old"  # the interrupted swap was undone first
    assert leftovers(tmp_path, "artifact") == []


def test_recover_dir_without_backup_does_nothing(tmp_path: Path) -> None:
    A.recover_dir(tmp_path / "nothing")
    assert list(tmp_path.iterdir()) == []


# --- manifests ------------------------------------------------------------------------------

def test_manifest_fields(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    m = A.read_manifest(target, KIND, verify=True)
    assert m["format"] == "mll-index"
    assert m["format_version"] == A.FORMAT_VERSION
    assert m["package_version"] == __version__
    assert m["kind"] == KIND
    assert m["note"] == "hello"
    assert m["files"]["a.bin"] == {"bytes": 500, "sha256": A.sha256_file(target / "a.bin")}
    assert set(m["files"]) == {"a.bin", "b.txt"}


def test_read_manifest_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(IndexFormatError, match=re.escape(str(missing)) + ": no index here"):
        A.read_manifest(missing, KIND)


def test_read_manifest_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match=re.escape(str(tmp_path / "manifest.json")) + ": file is missing"):
        A.read_manifest(tmp_path, KIND)


def edit_manifest(directory: Path, **changes: object) -> Path:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def test_read_manifest_other_format_version(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    path = edit_manifest(target, format_version=2)
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + r": format version 2.*reads version 1"):
        A.read_manifest(target, KIND)


def test_read_manifest_accepts_the_versions_a_kind_reads(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    path = edit_manifest(target, format_version=2)
    assert A.read_manifest(target, KIND, versions=(1, 2))["format_version"] == 2
    edit_manifest(target, format_version=3)
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + r": format version 3.*reads versions 1, 2"):
        A.read_manifest(target, KIND, versions=(1, 2))


def test_writer_lock_follows_a_folder_swapped_while_waiting(tmp_path: Path) -> None:
    import fcntl
    import threading

    target = tmp_path / "artifact"
    make_artifact(target)
    order: list[str] = []
    held = A.writer_lock(target)

    def wait() -> None:
        held.__enter__()
        order.append("locked")

    with A.writer_lock(target):
        waiter = threading.Thread(target=wait)
        waiter.start()
        waiter.join(0.2)
        assert order == []                                   # waits for the holder
        make_artifact(target, {"c.txt": b"new\n"})              # the folder is swapped in while held
    waiter.join(5)
    assert order == ["locked"]
    with open(target / ".lock") as handle:                   # the waiter holds the new folder's lock
        with pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held.__exit__(None, None, None)


def test_read_manifest_not_our_format(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    path = edit_manifest(target, format="something-else")
    with pytest.raises(IndexFormatError, match=re.escape(str(path)) + ": not an mll-index manifest"):
        A.read_manifest(target, KIND)
    path.write_text("[1, 2]")
    with pytest.raises(IndexFormatError, match="not an mll-index manifest"):
        A.read_manifest(target, KIND)


def test_read_manifest_wrong_kind(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    with pytest.raises(IndexFormatError, match=r"manifest\.json: holds a 'test-artifact', expected 'node-index'"):
        A.read_manifest(target, "node-index")


def test_read_manifest_garbage_manifest(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    (target / "manifest.json").write_bytes(b"\x00\x01garbage")
    with pytest.raises(IndexFormatError, match=re.escape(str(target / "manifest.json"))):
        A.read_manifest(target, KIND)


def test_read_manifest_truncated_file_names_it(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    (target / "a.bin").write_bytes(b"alpha" * 50)
    with pytest.raises(IndexFormatError, match=re.escape(str(target / "a.bin")) + r": 250 bytes, the manifest says 500"):
        A.read_manifest(target, KIND)


def test_read_manifest_missing_listed_file_names_it(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    (target / "b.txt").unlink()
    with pytest.raises(IndexFormatError, match=re.escape(str(target / "b.txt")) + ": file listed in the manifest is missing"):
        A.read_manifest(target, KIND)


def test_read_manifest_checksum_mismatch_only_with_verify(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_artifact(target)
    (target / "a.bin").write_bytes(b"ALPHA" * 100)  # same size, other bytes
    assert A.read_manifest(target, KIND)["kind"] == KIND  # sizes only: not noticed
    with pytest.raises(IndexFormatError, match=re.escape(str(target / "a.bin")) + ": checksum differs"):
        A.read_manifest(target, KIND, verify=True)
