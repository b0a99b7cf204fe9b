"""Visual domains of the emoji world and the seeded augmentation that draws their images.

A domain is a source style (a vendor's art) plus an optional transform: the vendors' own
styles (Noto, Twemoji, OpenMoji colour, OpenMoji black outline) and styles derived from
them (grayscale, edge sketch, low resolution, cluttered background). Every image is drawn
from one emoji's art with a random crop, scale (0.7-1), rotation (+-15 degrees), flip, background and colour
jitter; the random generator is seeded from (world seed, emoji, domain, pool, index), so a
rebuild gives the same pixels and different pools never hold the same image.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32  # pixels of every image of the world (the hub's models take 32x32 input)
CANVAS = 64      # the art's size; images are composed at this size, then reduced


@dataclass(frozen=True)
class Domain:
    """A visual domain: where its art comes from (vendors, cycled by image) and what is done to it."""

    name: str
    sources: tuple[str, ...]
    transform: str  # one of TRANSFORMS
    description: str


TRANSFORMS = ("none", "grayscale", "sketch", "lowres", "clutter")

DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("noto", ("noto",), "none", "Noto Color Emoji art"),
    Domain("twemoji", ("twemoji",), "none", "Twemoji art"),
    Domain("openmoji", ("openmoji",), "none", "OpenMoji colour art"),
    Domain("outline", ("openmoji-outline",), "none", "OpenMoji black line art"),
    Domain("grayscale", ("noto", "twemoji"), "grayscale", "Noto and Twemoji art in shades of grey"),
    Domain("sketch", ("noto", "twemoji"), "sketch", "edges of Noto and Twemoji art, dark lines on white"),
    Domain("lowres", ("twemoji", "openmoji"), "lowres", "Twemoji and OpenMoji art at 8 to 12 pixels, blown up"),
    Domain("clutter", ("noto", "openmoji"), "clutter", "Noto and OpenMoji art on a busy background of shapes"),
)}


def image_rng(seed: int, unified: str, domain: str, pool: str, index: int) -> np.random.Generator:
    """The generator of one image; distinct for every (emoji, domain, pool, index)."""
    key = [seed, zlib.crc32(unified.encode()), zlib.crc32(domain.encode()), zlib.crc32(pool.encode()), index]
    return np.random.default_rng(key)


def _jitter(rgba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation, each within +-20%, on the opaque pixels' colours."""
    rgb = rgba[..., :3].astype(np.float32)
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + (rgb - grey) * rng.uniform(0.8, 1.2)                 # saturation
    rgb = rgb.mean() + (rgb - rgb.mean()) * rng.uniform(0.8, 1.2)     # contrast
    rgb = rgb * rng.uniform(0.8, 1.2)                                 # brightness
    out = rgba.copy()
    out[..., :3] = np.clip(rgb, 0, 255).astype(np.uint8)
    return out


def _background(rng: np.random.Generator, busy: bool) -> object:
    from PIL import Image, ImageDraw

    if not busy:
        # Mostly white or pale plain backgrounds, as emoji are shown; sometimes a stronger colour.
        if rng.random() < 0.4:
            colour = (255, 255, 255)
        else:
            low = 190 if rng.random() < 0.8 else 60
            colour = tuple(int(v) for v in rng.integers(low, 256, 3))
        return Image.new("RGB", (CANVAS, CANVAS), colour)
    noise = rng.integers(0, 256, (CANVAS // 8, CANVAS // 8, 3), dtype=np.uint8)
    image = Image.fromarray(noise).resize((CANVAS, CANVAS), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 10))):
        x0, y0 = (int(v) for v in rng.integers(-8, CANVAS, 2))
        w, h = (int(v) for v in rng.integers(6, 28, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        elif shape == 1:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.line((x0, y0, x0 + w, y0 + h), fill=colour, width=int(rng.integers(1, 4)))
    return image


def draw_image(art: np.ndarray, domain: Domain, rng: np.random.Generator) -> np.ndarray:
    """One augmented image of an emoji in a domain.

    Args:
        art: (64, 64, 4) uint8 RGBA, the emoji in the domain's source style.
    Returns:
        (IMAGE_SIZE, IMAGE_SIZE, 3) uint8 RGB.
    """
    from PIL import Image, ImageFilter, ImageOps

    rgba = _jitter(art, rng) if domain.transform in ("none", "clutter", "lowres") else art
    sprite = Image.fromarray(rgba, "RGBA")
    if rng.random() < 0.5:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    sprite = sprite.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
    side = int(CANVAS * rng.uniform(0.7, 1.0))
    sprite = sprite.resize((side, side), Image.Resampling.BILINEAR)
    # The sprite may stick out of the canvas by up to a tenth of its size: a random crop.
    slack = side // 10
    x, y = (int(v) for v in rng.integers(-slack, CANVAS - side + slack + 1, 2))
    if domain.transform == "sketch":
        canvas = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    else:
        canvas = _background(rng, busy=domain.transform == "clutter")
    canvas.paste(sprite, (x, y), sprite)
    if domain.transform == "grayscale":
        canvas = ImageOps.grayscale(canvas).convert("RGB")
    elif domain.transform == "sketch":
        edges = np.asarray(ImageOps.autocontrast(ImageOps.grayscale(canvas).filter(ImageFilter.FIND_EDGES))).copy()
        # The edge filter marks the canvas border too; a drawing has no frame.
        edges[[0, -1], :] = 0
        edges[:, [0, -1]] = 0
        canvas = Image.fromarray(255 - edges).convert("RGB")
    elif domain.transform == "lowres":
        tiny = int(rng.integers(8, 13))
        canvas = canvas.resize((tiny, tiny), Image.Resampling.BOX).resize((IMAGE_SIZE, IMAGE_SIZE),
                                                                          Image.Resampling.NEAREST)
    if canvas.size != (IMAGE_SIZE, IMAGE_SIZE):
        canvas = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(canvas, dtype=np.uint8)
