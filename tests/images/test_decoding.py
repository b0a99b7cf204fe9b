"""Tests of mll_index.images.decoding: every image decoded the way an image viewer shows it.

Each test writes its images with Pillow; the end-to-end tests run the CLI in a subprocess
with a tiny open_clip model (tests/tinyclip.py).
"""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mll_index.errors import InputError
from mll_index.images.decoding import IMAGE_SUFFIXES, UnreadableImageError, image_files, max_pixels, open_image

from tests.conftest import TENCH, run_cli
from tests.tinyclip import make_sample_images, make_tiny_checkpoint, write_tiny_arch

WHITE = (255, 255, 255)


def pixels(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of open_image(path), decoded with every warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = open_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def write_bomb(path: Path, width: int = 20000, height: int = 10000) -> Path:
    """A PNG whose header declares width x height but whose data is a 1x1 image's.

    A real 200-megapixel PNG of one colour is only ~25 KB on disk; this one is smaller still,
    and since its pixel data is far too short, a decoder that went past the header would
    fail with "truncated" instead of the size: so the test also shows nothing was decoded.
    """
    Image.new("1", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_16_bit_gray_is_scaled_by_its_bit_depth(tmp_path: Path) -> None:
    ramp = np.arange(256, dtype=np.uint16) * 257  # 0 .. 65535
    Image.fromarray(np.tile(ramp, (4, 1))).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    out = pixels(tmp_path / "g16.png")
    assert out.shape == (4, 256, 3)
    np.testing.assert_array_equal(out[0, :, 0], np.arange(256))  # not all white: 65535 → 255, 257 → 1
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_32_bit_integer_and_float_gray(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 2**30, 2**31 - 1, -5]], dtype=np.int32)).save(tmp_path / "i32.tif")
    np.testing.assert_array_equal(pixels(tmp_path / "i32.tif")[0, :, 0], [0, 128, 255, 0])
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(pixels(tmp_path / "unit.tif")[0, :, 0], [0, 128, 255])
    # Floats outside [0, 1] have no nominal range: stretched from min to max, not clipped to white.
    Image.fromarray(np.array([[100.0, 202.0, 610.0]], dtype=np.float32)).save(tmp_path / "wide.tif")
    np.testing.assert_array_equal(pixels(tmp_path / "wide.tif")[0, :, 0], [0, 51, 255])


def test_rgba_colour_on_transparent_is_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.paste((200, 30, 60, 255), (0, 0, 4, 8))
    image.putpixel((7, 7), (0, 0, 0, 128))
    image.save(tmp_path / "rgba.png")
    out = pixels(tmp_path / "rgba.png")
    assert tuple(out[0, 0]) == (200, 30, 60) and tuple(out[0, 7]) == WHITE
    assert abs(int(out[7, 7, 0]) - 127) <= 1  # half-transparent black over white is mid grey


def test_palette_with_transparent_index_is_on_white_without_a_warning(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 0, 0, 255, 255, 0, 0] + [0] * 759)
    image.paste(1, (0, 0, 4, 8))
    image.putpixel((7, 7), 2)
    # Alpha per palette index (0: transparent black, 1: opaque blue, 2: half-transparent red) is
    # stored as bytes: Pillow warns when such an image is converted straight to RGB, and paints
    # the background black.
    image.save(tmp_path / "p.png", transparency=bytes([0, 255, 128]))
    assert isinstance(Image.open(tmp_path / "p.png").info["transparency"], bytes)
    out = pixels(tmp_path / "p.png")  # warnings are errors here
    assert tuple(out[0, 0]) == (0, 0, 255) and tuple(out[0, 7]) == WHITE
    assert out[7, 7, 0] == 255 and abs(int(out[7, 7, 1]) - 127) <= 1
    # A single transparent index (stored as an int) too.
    image.save(tmp_path / "p1.png", transparency=0)
    assert Image.open(tmp_path / "p1.png").info["transparency"] == 0
    assert tuple(pixels(tmp_path / "p1.png")[0, 7]) == WHITE
    assert capfd.readouterr().err == ""


def test_la_and_colour_key_transparency(tmp_path: Path) -> None:
    image = Image.new("LA", (8, 8), (0, 0))
    image.paste((90, 255), (0, 0, 4, 8))
    image.save(tmp_path / "la.png")
    out = pixels(tmp_path / "la.png")
    assert tuple(out[0, 0]) == (90, 90, 90) and tuple(out[0, 7]) == WHITE
    rgb = Image.new("RGB", (8, 8), (0, 0, 0))
    rgb.paste((10, 200, 10), (0, 0, 4, 8))
    rgb.save(tmp_path / "key.png", transparency=(0, 0, 0))
    out = pixels(tmp_path / "key.png")
    assert tuple(out[0, 0]) == (10, 200, 10) and tuple(out[0, 7]) == WHITE


def test_cmyk_and_gray_jpegs(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    r, g, b = pixels(tmp_path / "cmyk.jpg")[8, 8].astype(int)
    assert r > 240 and g < 15 and b < 15  # cyan 0, magenta and yellow full: red
    Image.new("L", (16, 16), 77).save(tmp_path / "gray.jpg")
    assert np.abs(pixels(tmp_path / "gray.jpg").astype(int) - 77).max() <= 1
    Image.new("1", (4, 4), 1).save(tmp_path / "bw.bmp")
    assert (pixels(tmp_path / "bw.bmp") == 255).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (64, 32), (220, 0, 0))
    image.paste((0, 0, 220), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: turn 90 degrees clockwise to show
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = pixels(tmp_path / "rotated.jpg")
    assert out.shape == (64, 32, 3)  # portrait, as a viewer shows it
    assert out[8, 16, 0] > 200 and out[8, 16, 2] < 40  # the stored left half (red) is now on top
    assert out[56, 16, 2] > 200 and out[56, 16, 0] < 40


def test_icc_profiles_do_not_lose_the_image(tmp_path: Path) -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (4, 4), (12, 140, 230)).save(tmp_path / "tagged.png", icc_profile=srgb)
    assert tuple(pixels(tmp_path / "tagged.png")[0, 0]) == (12, 140, 230)
    # A CMYK image whose profile does not fit (or is damaged) keeps Pillow's plain conversion.
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk-rgb-profile.jpg", icc_profile=srgb)
    assert tuple(pixels(tmp_path / "cmyk-rgb-profile.jpg")[8, 8] > 200) == (True, False, False)
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk-bad.jpg", icc_profile=b"not a profile")
    assert tuple(pixels(tmp_path / "cmyk-bad.jpg")[8, 8] > 200) == (True, False, False)


def test_decompression_bomb_is_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MLL_INDEX_MAX_PIXELS", raising=False)
    bomb = write_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1000 and max_pixels() == Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UnreadableImageError) as caught:
            open_image(bomb)
    assert str(caught.value) == (f"{bomb}: 200.0 megapixels (20000x10000), over the limit of 89.5 "
                                 "(set $MLL_INDEX_MAX_PIXELS to a number of pixels to allow more)")
    assert caught.value.reason.startswith("200.0 megapixels") and caught.value.path == str(bomb)
    assert isinstance(caught.value, InputError) and capfd.readouterr().err == ""
    # Over Pillow's own hard limit (2 x 89.5 MP) when allowed: decoding is tried, and this file's
    # data is short, which shows the refusal above came before any decoding.
    monkeypatch.setenv("MLL_INDEX_MAX_PIXELS", "0")
    with pytest.raises(UnreadableImageError, match="truncated|broken|buffer|data"):
        open_image(write_bomb(tmp_path / "small-bomb.png", 100, 100))
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's global is left as it was


def test_pixel_limit_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (20, 10), (1, 2, 3)).save(tmp_path / "small.png")
    monkeypatch.setenv("MLL_INDEX_MAX_PIXELS", "199")
    with pytest.raises(UnreadableImageError, match=r"small.png: 0.0 megapixels \(20x10\), over the limit of 0.0"):
        open_image(tmp_path / "small.png")
    monkeypatch.setenv("MLL_INDEX_MAX_PIXELS", "200")
    assert open_image(tmp_path / "small.png").size == (20, 10)
    assert open_image(tmp_path / "small.png", limit=None).size == (20, 10)
    with pytest.raises(UnreadableImageError, match="over the limit"):
        open_image(tmp_path / "small.png", limit=100)
    monkeypatch.setenv("MLL_INDEX_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match=r"\$MLL_INDEX_MAX_PIXELS='lots': give a number of pixels") as caught:
        open_image(tmp_path / "small.png")
    assert not isinstance(caught.value, UnreadableImageError)  # a setting error stops the run, not one image


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_files_name_the_reason(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    data = {"truncated": good.read_bytes()[: good.stat().st_size // 2], "garbage": b"not an image at all",
            "empty": b""}[damage]
    bad = tmp_path / f"{damage}.png"
    bad.write_bytes(data)
    with pytest.raises(UnreadableImageError) as caught:
        open_image(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ") and "\n" not in message
    assert message.endswith("cannot decode (image file is truncated)" if damage == "truncated" else
                            "not an image Pillow can read (unknown format or damaged header)")
    with pytest.raises(UnreadableImageError, match="missing.png: no such file$"):
        open_image(tmp_path / "missing.png")


def test_one_suffix_list_and_hidden_files_skipped(tmp_path: Path) -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"} <= IMAGE_SUFFIXES
    for name in ("a.PNG", "b.tiff", "c.gif", "._d.jpg", "notes.txt", "sub/e.jpg", ".hidden/f.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)] == ["a.PNG", "b.tiff", "c.gif", "sub/e.jpg"]
    assert [p.name for p in image_files(tmp_path, recursive=False)] == ["a.PNG", "b.tiff", "c.gif"]


# End to end, through the CLI in a subprocess.


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images-hub")
    arch = write_tiny_arch(root, "imagestest-tiny-vit32")
    make_tiny_checkpoint(arch, root / "tiny.pt")
    (root / "hub.json").write_text(json.dumps({"name": "tiny", "models": [
        {"id": "tiny", "arch": arch.stem, "checkpoint": "tiny.pt", "config": arch.name}]}))
    return root / "hub.json"


def test_cli_reuse_skips_a_bomb_with_its_reason(tmp_path: Path, tiny_hub: Path) -> None:
    flat = tmp_path / "task"
    flat.mkdir()
    for i, path in enumerate(make_sample_images(tmp_path / "made", ["n00000001"], per_node=2)):
        shutil.copy(path, flat / f"{i}.png")
    write_bomb(flat / "bomb.png")
    selection = tmp_path / "selection.json"
    selection.write_text(json.dumps({"task": "t", "classes": [{"name": n, "models": [{"model": "tiny"}]}
                                                              for n in ("cat", "dog")]}))
    done = run_cli("reuse", str(flat), "--hub", str(tiny_hub), "--selection", str(selection), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "skipped 1 unreadable image(s)" in done.stderr
    assert "bomb.png: 200.0 megapixels (20000x10000), over the limit of 89.5" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["images"] == 2 and summary["unreadable"] == ["bomb.png"]
    # No readable image at all: one line and exit 1.
    only = tmp_path / "only-bomb"
    only.mkdir()
    write_bomb(only / "bomb.png")
    failed = run_cli("reuse", str(only), "--hub", str(tiny_hub), "--selection", str(selection), "--device", "cpu")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert [line for line in failed.stderr.splitlines() if "predict" not in line][-1].startswith("mll-index: ")
    assert "none of the 1 images could be read: bomb.png: 200.0 megapixels" in failed.stderr


def test_cli_label_lists_a_bomb_as_unreadable_with_its_reason(tmp_path: Path, index_dir: Path,
                                                             tiny_hub: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(index_dir, index)
    samples = tmp_path / "samples"
    make_sample_images(samples, [TENCH], per_node=2)
    write_bomb(samples / TENCH / "bomb.png")
    done = run_cli("label", "--index", str(index), "--hub", str(tiny_hub), "--samples", str(samples),
                   "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "labeled  tiny" in done.stdout and "Traceback" not in done.stderr
    assert "skipped 1 unreadable image(s)" in done.stderr
    assert f"{TENCH}/bomb.png: 200.0 megapixels (20000x10000), over the limit of 89.5" in done.stderr
