"""Emoji art from registry packages: the raw images of the emoji world, one style per vendor.

Three npm packages hold the art: `emoji-datasource-google` (Noto Color Emoji, Apache-2.0,
64x64 PNG), `emoji-datasource-twitter` (Twemoji, CC-BY-4.0, 64x64 PNG) and `openmoji`
(OpenMoji, CC-BY-SA-4.0, colour and black-outline SVG, rendered here with cairosvg). Their
tarballs are fetched once with `npm pack` into the cache and read in place; nothing of
them is committed. Apple's and Facebook's sets are not licensed for this use and are never read.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mll_index.errors import InputError

log = logging.getLogger(__name__)

ART_SIZE = 64


@dataclass(frozen=True)
class Vendor:
    """One emoji set: the npm package that ships it and where its images are inside the tarball."""

    name: str
    package: str
    version: str
    licence: str
    member: str  # path of one emoji's image in the tarball, with {code} for its code points

    @property
    def tarball(self) -> str:
        return f"{self.package}-{self.version}.tgz"


VENDORS = {
    "noto": Vendor("noto", "emoji-datasource-google", "16.0.0", "Apache-2.0",
                   "package/img/google/64/{code}.png"),
    "twemoji": Vendor("twemoji", "emoji-datasource-twitter", "16.0.0", "CC-BY-4.0",
                      "package/img/twitter/64/{code}.png"),
    "openmoji": Vendor("openmoji", "openmoji", "17.0.0", "CC-BY-SA-4.0", "package/color/svg/{CODE}.svg"),
    "openmoji-outline": Vendor("openmoji-outline", "openmoji", "17.0.0", "CC-BY-SA-4.0",
                               "package/black/svg/{CODE}.svg"),
}


def fetch_package(vendor: Vendor, folder: Path) -> Path:
    """The vendor's npm tarball in `folder`, fetched with `npm pack` the first time.

    Raises:
        InputError: npm is missing or the registry cannot be reached, naming the package and
            where a tarball brought by hand would be read from.
    """
    folder = Path(folder)
    target = folder / vendor.tarball
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    npm = shutil.which("npm")
    where = f"or put {vendor.tarball} (from `npm pack {vendor.package}@{vendor.version}`) in {folder}"
    if npm is None:
        raise InputError(f"the emoji world needs npm to fetch {vendor.package}@{vendor.version} once; "
                         f"install npm (Debian package npm) {where}")
    log.info("fetching %s@%s with npm", vendor.package, vendor.version)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".npm-") as tmp:
        try:
            done = subprocess.run([npm, "pack", f"{vendor.package}@{vendor.version}", "--silent"], cwd=tmp,
                                  capture_output=True, text=True, timeout=600, check=False)
        except subprocess.TimeoutExpired:
            raise InputError(f"npm pack {vendor.package}@{vendor.version} timed out after 10 minutes; {where}") from None
        packed = Path(tmp) / vendor.tarball
        if done.returncode != 0 or not packed.is_file():
            detail = " ".join((done.stderr or done.stdout).split())[-300:]
            raise InputError(f"npm pack {vendor.package}@{vendor.version} failed ({detail}); {where}")
        packed.replace(target)
    return target


def fetch_art_packages(folder: Path) -> dict[str, Path]:
    """Fetch every vendor's npm tarball into `folder` (once); returns package name → tarball."""
    out: dict[str, Path] = {}
    for vendor in VENDORS.values():
        if vendor.package not in out:
            out[vendor.package] = fetch_package(vendor, folder)
    return out


def _member_name(vendor: Vendor, unified: str) -> str:
    return vendor.member.format(code=unified.lower(), CODE=unified.upper())


def _render_svg(data: bytes, size: int) -> np.ndarray:
    import cairosvg
    from PIL import Image

    png = cairosvg.svg2png(bytestring=data, output_width=size, output_height=size)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def _decode_png(data: bytes, size: int) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGBA")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image)


def read_art(vendor: Vendor, tarball: Path, codes: Iterable[str], size: int = ART_SIZE) -> dict[str, np.ndarray]:
    """The vendor's image of each emoji, as (size, size, 4) uint8 RGBA arrays keyed by code.

    Emoji the vendor does not draw are absent from the result. One pass over the tarball.
    """
    wanted = {}
    for code in codes:
        # Vendors differ on the emoji presentation selector: try the code with and without it.
        for variant in (code, "-".join(p for p in code.split("-") if p.upper() != "FE0F")):
            wanted.setdefault(_member_name(vendor, variant), code)
    art: dict[str, np.ndarray] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                code = wanted.get(member.name)
                if code is None or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                data = handle.read()
                art[code] = _render_svg(data, size) if member.name.endswith(".svg") else _decode_png(data, size)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise InputError(f"{tarball}: not a readable npm tarball ({exc}); delete it to fetch it again") from None
    return art
