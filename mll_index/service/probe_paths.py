"""A client's `probe_images` paths, checked and resolved inside the operator's probe roots.

The service reads images only under the folders `serve --probe-root` names (none: a task with
probe_images is refused). A path a client sends is resolved on the server (symlinks followed),
and is served only when the result lies inside a root; `..` is refused outright. Folders are
listed here, as `probes.probe_files` lists them (the images in a folder and in its immediate
subfolders, hidden names skipped), and only regular files are kept, each within the byte limit:
what reaches selection is a list of resolved regular files, no folder and no FIFO, device or
socket. Every message names the paths as the client wrote them (`ResolvedProbes.names` maps
back), never the server's folders, a symlink's target, the working folder or counts of what
else is there.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from mll_index.images.decoding import IMAGE_SUFFIXES
from mll_index.service.errors import RequestError
from mll_index.service.settings import ServiceSettings

NAME_MAX = 255  # bytes per path component on Linux, macOS and Windows file systems
NO_ROOTS = ("probe_images: this service reads no image paths (it was started without --probe-root); "
            "send the class names alone")


@dataclass(frozen=True)
class ResolvedProbes:
    """files: the resolved regular image files, sorted by the client's names; names: each resolved
    file -> the path as the client wrote it ("D/a.png"). (The selector keys its probe cache by the
    files' identity itself: `selection.probes.probe_identity`.)"""

    files: tuple[str, ...]
    names: dict[str, str]


def _check_text(path: str, where: str, settings: ServiceSettings) -> None:
    """RequestError 400 for a path no file system takes, or one that climbs out with `..`."""
    shown = path if len(path) <= 60 else path[:40] + "..."
    if not path or "\x00" in path:
        raise RequestError(400, where, f"{where}: {shown!r}: not a path (empty, or holding a NUL)")
    if len(path) > settings.max_path_chars:
        raise RequestError(400, where, f"{where}: {shown}: a path of {len(path)} characters; "
                           f"at most {settings.max_path_chars}")
    parts = PurePosixPath(path).parts
    if any(len(part.encode("utf-8", "surrogatepass")) > NAME_MAX for part in parts):
        raise RequestError(400, where, f"{where}: {shown}: a name in it is over {NAME_MAX} bytes")
    if ".." in parts:
        raise RequestError(400, where, f"{where}: {shown}: '..' is not allowed; name a path inside the probe roots")


def _inside(real: str, roots: Sequence[str]) -> bool:
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _locate(path: str, roots: Sequence[str], where: str) -> tuple[str, os.stat_result]:
    """The resolved path of `path` inside a root, and its stat; relative paths are tried in each root."""
    candidates = [path] if os.path.isabs(path) else [os.path.join(root, path) for root in roots]
    outside = False
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if not _inside(real, roots):
            outside = True
            continue
        try:
            return real, os.stat(real)
        except OSError:
            continue
    if outside:
        raise RequestError(403, where, f"{where}: {path}: outside the folders this service reads images from")
    raise RequestError(422, where, f"{where}: {path}: no such file or folder under the probe roots")


@dataclass
class _Listing:
    """Regular image files found so far (resolved path -> client name, stat), within the request's limits."""

    settings: ServiceSettings
    roots: Sequence[str]
    where: str
    found: dict[str, tuple[str, os.stat_result]] = field(default_factory=dict)
    entries: int = 0

    def add_file(self, real: str, st: os.stat_result, shown: str) -> None:
        if st.st_size > self.settings.max_probe_bytes:
            raise RequestError(413, self.where, f"{self.where}: {shown}: {st.st_size} bytes; at most "
                               f"{self.settings.max_probe_bytes} per image")
        self.found.setdefault(real, (shown, st))
        if len(self.found) > self.settings.max_probe_files:
            raise RequestError(413, self.where, f"{self.where}: more than {self.settings.max_probe_files} "
                               "image files; name fewer folders or files")

    def add_folder(self, real: str, shown: str, depth: int) -> None:
        """The image files directly in the folder, and (depth 0) in its immediate non-hidden subfolders."""
        try:
            with os.scandir(real) as scan:
                names = []
                for entry in scan:
                    self.entries += 1
                    if self.entries > self.settings.max_probe_entries:
                        raise RequestError(413, self.where, f"{self.where}: {shown}: more than "
                                           f"{self.settings.max_probe_entries} folder entries to look at")
                    if not entry.name.startswith("."):
                        names.append(entry.name)
        except OSError as exc:
            if depth:
                return  # a subfolder that cannot be listed holds no task images, as probe_files has it
            raise RequestError(422, self.where, f"{self.where}: {shown}: cannot be listed "
                               f"({exc.strerror or type(exc).__name__})") from None
        for name in sorted(names):
            child = os.path.realpath(os.path.join(real, name))
            if not _inside(child, self.roots):
                continue  # a symlink out of the roots: never followed
            try:
                st = os.stat(child)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and depth == 0:
                self.add_folder(child, f"{shown.rstrip('/')}/{name}", 1)
            elif stat.S_ISREG(st.st_mode) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                self.add_file(child, st, f"{shown.rstrip('/')}/{name}")


def resolve_probe_images(paths: Sequence[str], settings: ServiceSettings, where: str) -> ResolvedProbes:
    """The task's probe_images (as the client sent them) as resolved regular image files inside the roots.

    Raises:
        RequestError: 403 without probe roots or for a path resolving outside them; 400 for a path no file
            system takes (too long, a name over 255 bytes, a NUL) or holding `..`; 413 over the limits on
            files, folder entries or bytes per file; 422 for a path that is missing, not a regular file
            or folder, or that holds no image file.
    """
    if not settings.probe_roots:
        raise RequestError(403, where, NO_ROOTS)
    for path in paths:
        _check_text(path, where, settings)
    roots = [os.path.realpath(root) for root in settings.probe_roots]
    listing = _Listing(settings, roots, where)
    for path in paths:
        real, st = _locate(path, roots, where)
        if stat.S_ISDIR(st.st_mode):
            listing.add_folder(real, path, 0)
        elif stat.S_ISREG(st.st_mode):
            listing.add_file(real, st, path)
        else:
            raise RequestError(422, where, f"{where}: {path}: not a regular file or folder")
    if not listing.found:
        raise RequestError(422, where, f"{where}: no image file in {', '.join(paths)} (image suffixes: "
                           ".jpg, .png, .webp, ...)")
    order = sorted(listing.found, key=lambda real: listing.found[real][0])
    return ResolvedProbes(tuple(order), {real: listing.found[real][0] for real in order})


def client_text(text: str, names: dict[str, str], roots: Sequence[str] = ()) -> str:
    """`text` with every resolved file named as the client wrote it, and any root left as "<probe root>"."""
    for real in sorted(names, key=len, reverse=True):
        text = text.replace(real, names[real])
    for root in sorted({os.path.realpath(r) for r in roots} | set(roots), key=len, reverse=True):
        text = text.replace(root, "<probe root>")
    return text


def client_answer(answer: dict[str, Any], names: dict[str, str], roots: Sequence[str] = ()) -> dict[str, Any]:
    """The answer with its warnings and probe summary naming files as the client wrote them."""
    if not names:
        return answer

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return client_text(value, names, roots)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {**answer, **{key: plain(answer[key]) for key in ("warnings", "probe") if key in answer}}


def task_with_probes(task: Any, settings: ServiceSettings) -> tuple[Any, ResolvedProbes | None]:
    """The task with its probe_images resolved (`resolve_probe_images`, field "<where>.probe_images"), and
    what they resolved to; the task as it is, and None, when it names none."""
    from dataclasses import replace

    if not task.probe_images:
        return task, None
    probes = resolve_probe_images(task.probe_images, settings, f"{task.where or 'task'}.probe_images")
    return replace(task, probe_images=probes.files), probes
