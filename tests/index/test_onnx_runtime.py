"""Tests of the ONNX Runtime text embedder: the export, its checksum, and the refusal without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mll_index.index import embed as E
from mll_index.index import onnx_runtime as O

TEXTS = ["a photo of a tench.", "golden retriever", "crème brûlée", "a big red fire truck at night"]


@pytest.fixture(scope="module")
def export_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache root with a fresh export of the default model."""
    root = tmp_path_factory.mktemp("onnx-cache")
    O.OnnxEmbedder(E._minilm_dir(), E.MINILM_ID, root)
    return root


def onnx_file(root: Path) -> Path:
    return O.export_dir(E._minilm_dir(), root) / "model.onnx"


@pytest.mark.slow
def test_export_is_recorded_with_its_checksum(export_root: Path, embedder: E.TextEmbedder) -> None:
    record = json.loads((onnx_file(export_root).parent / "export.json").read_text())
    assert record["sha256"] == O.sha256_file(onnx_file(export_root))
    assert record["bytes"] == onnx_file(export_root).stat().st_size
    assert (record["dim"], record["max_seq_length"]) == (384, 256)
    again = O.OnnxEmbedder(E._minilm_dir(), E.MINILM_ID, export_root)
    assert np.sum(again.encode(TEXTS) * embedder.encode(TEXTS), axis=1).min() > 0.99999


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_export_is_detected_and_made_again(export_root: Path, embedder: E.TextEmbedder, damage: str) -> None:
    path = onnx_file(export_root)
    good = O.sha256_file(path)
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # a weight, not the header: the graph would still load, with a wrong vector
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        os.truncate(path, path.stat().st_size // 3)
    else:
        path.unlink()
    embedder_again = O.OnnxEmbedder(E._minilm_dir(), E.MINILM_ID, export_root)
    assert O.sha256_file(path) == good
    assert np.sum(embedder_again.encode(TEXTS) * embedder.encode(TEXTS), axis=1).min() > 0.99999


@pytest.mark.slow
def test_damaged_export_without_torch_is_refused_in_one_line(export_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    target = O.export_dir(E._minilm_dir(), root)
    target.mkdir(parents=True)
    for name in ("model.onnx", "export.json"):
        (target / name).write_bytes((onnx_file(export_root).parent / name).read_bytes())
    with open(target / "model.onnx", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\0" * 64)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # as on a machine without torch
        from pathlib import Path
        from mll_index.index import embed
        from mll_index.index import onnx_runtime as embed_onnx
        from mll_index.errors import MLLIndexError
        try:
            embed_onnx.OnnxEmbedder(embed._minilm_dir(), embed.MINILM_ID, Path({str(root)!r}))
        except MLLIndexError as exc:
            print("ERROR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("ERROR") and "\n" not in line
    assert "torch" in line and "setup.sh" in line


def test_spec_grammar_is_checked() -> None:
    with pytest.raises(E.InputError, match="runtime 'cuda'"):
        E.load_embedder("minilm@fp32/cuda")
    with pytest.raises(E.InputError, match="fp32 on the CPU only"):
        E.load_embedder("minilm@bf16/onnx")
