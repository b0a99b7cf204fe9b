"""Decoding a user's image file into the 8-bit RGB picture that an image viewer shows.

Labeling (sample sets), reuse and evaluation (task images) all decode through
`open_image`, so an image means the same thing everywhere:

- the EXIF orientation is applied;
- 16-bit grayscale (as scientific and medical tools save) is scaled to 8 bits by its bit
  depth (65535 → 255), not clipped; 32-bit integers likewise (2**31 - 1 → 255); floats
  in [0, 1] are scaled by 255, other float ranges are stretched from their minimum to
  their maximum;
- CMYK, YCbCr, 1-bit, gray and palette images become RGB; a CMYK image's embedded ICC
  profile is converted to sRGB with Pillow's ImageCms (Pillow's plain CMYK conversion is
  far off for print profiles). RGB profiles (Adobe RGB, Display P3) are not converted:
  that costs ~40 ms per megapixel, more than decoding, for a slight change of saturation;
- transparency (RGBA, LA, PA, a palette or colour key marked transparent) is composited
  on white, as image viewers show it and as the emoji world's own art is drawn;
- an image of more than `max_pixels()` pixels (Pillow's own default, 89,478,485, unless
  `$MLL_INDEX_MAX_PIXELS` says otherwise) is refused from its header, before any pixel
  is decoded: a small file can declare a huge picture (a "decompression bomb").

Pillow is imported where it is used, so that importing this module (for
`IMAGE_SUFFIXES`) costs nothing.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mll_index.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

#: File name suffixes (lower case) read as images, for sample sets and task folders alike.
IMAGE_SUFFIXES: frozenset[str] = frozenset({
    ".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp",
})
#: Pillow's `Image.MAX_IMAGE_PIXELS` (1 GiB of 24-bit pixels / 3 / 4), the default limit.
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "MLL_INDEX_MAX_PIXELS"

#: The largest image file read (bytes): the file is read whole into memory before it is decoded.
DEFAULT_MAX_FILE_BYTES = 1 << 30

# Pillow checks sizes against its process-wide MAX_IMAGE_PIXELS inside Image.open (a warning
# above it, an error above twice it). This module applies its own limit instead, so Pillow's is
# lifted while a header is read; the lock keeps the swap and warnings.catch_warnings (which is
# process-wide, not per thread) consistent when samples are decoded in several threads. It is
# only ever held over bytes already in memory (`read_image_bytes` reads the file first): a FIFO
# or a slow disk holding it would stall every decoding thread of the process.
_HEADER_LOCK = threading.Lock()

_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class UnreadableImageError(InputError):
    """An image file cannot be decoded (damaged, truncated, unknown format) or is refused (too large).

    The message is one line: the file, then the reason.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """The image files (by `IMAGE_SUFFIXES`, any case) in `folder`, sorted; hidden ones are skipped.

    Hidden files and folders are skipped because macOS leaves `._name.jpg` resource forks that
    are not images.
    """
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def max_pixels() -> int | None:
    """The largest image accepted, in pixels (width x height); None when there is no limit.

    `$MLL_INDEX_MAX_PIXELS` overrides the default (89,478,485, Pillow's own limit); it takes
    a positive integer (underscores allowed, like 200_000_000), or 0 for no limit.

    Raises:
        InputError: `$MLL_INDEX_MAX_PIXELS` is not a non-negative integer.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InputError(f"${MAX_PIXELS_ENV}={raw!r}: give a number of pixels (like 200000000), or 0 for no limit")
    return value or None


def _not_regular(mode: int) -> str | None:
    """What a file of this st_mode is when it is not a regular file ("a FIFO", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def read_image_bytes(path: Path | str, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The whole content of a regular file, never blocking on what is not one.

    The file is checked with os.stat before it is opened (a FIFO, device or socket is never
    opened: opening a tape or a terminal has effects of its own), opened with O_NONBLOCK (a FIFO
    swapped in between the two gives no writer to wait for) and checked again on the open
    descriptor, which must be the file that was stat'ed.

    Raises:
        UnreadableImageError: not a regular file, missing, unreadable, or over `max_bytes` (None: no limit).
    """
    try:
        before = os.stat(path)
        kind = _not_regular(before.st_mode)
        if kind is not None:
            raise UnreadableImageError(path, f"{kind}, not an image file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UnreadableImageError(path, "no such file") from None
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        opened = os.fstat(fd)
        kind = _not_regular(opened.st_mode)
        if kind is not None or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise UnreadableImageError(path, f"{kind or 'another file'} swapped in while it was opened")
        if max_bytes is not None and opened.st_size > max_bytes:
            raise UnreadableImageError(path, f"{opened.st_size} bytes, over the limit of {max_bytes} per image")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                raise UnreadableImageError(path, f"over {max_bytes} bytes, the limit per image")
            chunks.append(chunk)
    except BlockingIOError:
        raise UnreadableImageError(path, "would block; not a regular file") from None
    except OSError as exc:
        raise UnreadableImageError(path, f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _open_header(path: Path, data: bytes) -> Image.Image:
    """Image.open of the file's bytes (the header only: no pixel is decoded yet), Pillow's size check lifted."""
    from PIL import Image

    with _HEADER_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            image = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    for w in caught:
        log.debug("%s: %s", path, w.message)
    return image


def _source_bits(image: Image.Image) -> int:
    """Bits per sample of an integer grayscale image, read from its decoder before `load()`.

    Pillow stores 16-bit samples in mode "I" (32-bit) for some formats; the decoder's raw mode
    ("I;16B", "I;16", ...) still says 16.
    """
    if image.mode.startswith("I;16"):
        return 16
    for tile in getattr(image, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and rawmode.startswith("I;16"):
            return 16
    return 32


def _gray_to_8bit(image: Image.Image, bits: int) -> Image.Image:
    """An "I;16*", "I" or "F" image as mode "L": integers scaled by their bit depth, floats by their range."""
    from PIL import Image

    values = np.asarray(image)
    if image.mode == "F":
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low >= 0.0 and high <= 1.0:
            scaled = values * 255.0
        else:
            # No nominal range outside [0, 1]: stretch what is there, so the picture is not all white.
            scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    else:
        top = 65535.0 if bits == 16 else float(2**31 - 1)
        # Negative intensities (signed 32-bit only) have no 8-bit counterpart: they show as black.
        scaled = np.clip(values.astype(np.float64), 0.0, top) * (255.0 / top)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def _on_white(image: Image.Image) -> Image.Image:
    """RGB of an image with transparency, composited on a white background."""
    from PIL import Image

    # Straight to RGBA: converting a palette with per-index alpha to RGB directly would drop the
    # alpha (black backgrounds) with a Pillow warning.
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_srgb(image: Image.Image, icc: bytes | None, path: Path) -> Image.Image:
    """An RGB image as it is; a CMYK one as sRGB through its ICC profile, or Pillow's plain conversion."""
    if icc and image.mode == "CMYK":
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return converted
        except Exception as exc:  # noqa: BLE001 - ImageCms.PyCMSError derives from Exception alone
            # A damaged or unsupported profile: the pixels are still good, shown as if sRGB.
            log.warning("%s: ICC profile not applied, colours as Pillow converts them (%s)", path, exc)
    return image if image.mode == "RGB" else image.convert("RGB")


def open_image(path: Path | str, limit: int | None | str = "env",
               max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> Image.Image:
    """Decode an image file into an 8-bit RGB PIL image, as an image viewer shows it.

    See the module docstring for what is converted and how. Multi-frame files (GIF, TIFF)
    give their first frame. No Pillow warning is emitted; they are logged at debug level.

    Args:
        path: the image file.
        limit: the largest number of pixels accepted; None for no limit; "env" (default)
            for `max_pixels()`, i.e. `$MLL_INDEX_MAX_PIXELS` or Pillow's default.
        max_bytes: the largest file read (`read_image_bytes`; None: no limit).
    Returns:
        A loaded PIL image of mode "RGB", independent of the file (which is closed).
    Raises:
        UnreadableImageError: the file cannot be decoded, is not a regular file (a FIFO, a device:
            never opened), or is larger than the limits (refused from its header, before decoding).
        InputError: `$MLL_INDEX_MAX_PIXELS` is invalid.
    """
    path = Path(path)
    cap = max_pixels() if limit == "env" else limit
    data = read_image_bytes(path, max_bytes)
    try:
        image = _open_header(path, data)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, struct.error...)
        raise UnreadableImageError(path, _reason(exc)) from exc
    with image:
        width, height = image.size
        if cap is not None and width * height > cap:
            raise UnreadableImageError(
                path, f"{width * height / 1e6:.1f} megapixels ({width}x{height}), over the limit of "
                      f"{cap / 1e6:.1f} (set ${MAX_PIXELS_ENV} to a number of pixels to allow more)")
        try:
            bits = _source_bits(image)
            image.load()
            icc = image.info.get("icc_profile")
            with _HEADER_LOCK, warnings.catch_warnings(record=True) as caught:
                # Reading EXIF may warn about a damaged block; the orientation is then left as it is.
                warnings.simplefilter("always")
                from PIL import ImageOps

                ImageOps.exif_transpose(image, in_place=True)
            for w in caught:
                log.debug("%s: %s", path, w.message)
            picture = image
            if picture.mode in ("I", "F") or picture.mode.startswith("I;16"):
                picture = _gray_to_8bit(picture, bits)
            if _has_alpha(picture):
                picture = _on_white(picture)
            elif picture.mode not in ("RGB", "CMYK"):
                picture = picture.convert("RGB")
            picture = _to_srgb(picture, icc, path)
            if picture is image:
                picture = image.copy()  # independent of the file object closed below
        except UnreadableImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated data, a corrupt stream or an unsupported mode
            raise UnreadableImageError(path, _reason(exc)) from exc
    return picture


def _reason(exc: BaseException) -> str:
    """One line saying why Pillow failed, without repeating the file name it may hold."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "cannot identify image file" in text:
        return "not an image Pillow can read (unknown format or damaged header)"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return f"cannot decode ({text})" if type(exc) is OSError else f"cannot decode ({type(exc).__name__}: {text})"
