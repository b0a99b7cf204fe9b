"""A sentence-transformers text model through ONNX Runtime: exported once, checksummed, tokenised without torch.

Why ONNX Runtime for the default: it runs fp32 at the same speed or faster than torch on every
x86-64 CPU we measured (AVX2 and AVX-512 alike), it imports in a fraction of a second where
sentence-transformers takes seconds, and its vectors equal torch fp32's to a cosine of 0.9999999,
so an index built with either runtime answers queries embedded by the other.

The export is made once per machine from the model's own torch weights (`torch.onnx.export`,
the standard exporter) into the cache folder:

    <cache>/onnx/<slug>/model.onnx     the graph: token ids and mask in, unit mean-pooled vectors out
    <cache>/onnx/<slug>/export.json    source model, dimension, sequence length, size and SHA-256 of model.onnx

Every load checks the file against export.json's checksum. A missing or damaged export is made
again when torch is installed, and refused with one line naming the fix when it is not; a wrong
vector is never returned.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mll_index.core.artifacts import atomic_file, sha256_file, write_json
from mll_index.errors import ModelLoadError

log = logging.getLogger(__name__)

EXPORT_VERSION = 1
OPSET = 17


def export_dir(model_dir: Path, cache_root: Path) -> Path:
    """Where the export of the model in `model_dir` lives under the cache root."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_dir).resolve().as_posix().strip("/"))
    return Path(cache_root) / "onnx" / slug[-120:]


def _max_seq_length(model_dir: Path) -> int:
    """The sequence length sentence-transformers truncates at (sentence_bert_config.json), else 512."""
    try:
        return int(json.loads((Path(model_dir) / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError, TypeError):
        return 512


def export_model(model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Export a sentence-transformers model (BERT-like encoder, mean pooling) to ONNX; returns export.json's record.

    The graph holds the pooling and the L2 normalisation, so its output is the sentence vector:
    inputs `input_ids` and `attention_mask`, (b, s) int64; output `embedding`, (b, d) float32, unit rows.

    Raises:
        ModelLoadError: torch or transformers is not installed, or the model cannot be read or exported.
    """
    try:
        import torch
        import transformers
        from transformers import AutoModel
    except ImportError:
        raise ModelLoadError("the ONNX export of the text model is missing or damaged, and re-exporting it "
                             "needs torch and transformers (pip install mll-index, or run `bash setup.sh`)") from None
    transformers.logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    except Exception as exc:  # noqa: BLE001 - any load failure is the same for the user
        raise ModelLoadError(f"cannot read the text model at {model_dir}: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}") from exc

    class _Pooled(torch.nn.Module):
        """The encoder with sentence-transformers' mean pooling and normalisation."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    out_dir.mkdir(parents=True, exist_ok=True)
    dummy = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    with atomic_file(out_dir / "model.onnx", "wb") as handle, torch.inference_mode():
        import warnings

        with warnings.catch_warnings():
            # The tracer's notes on constant shapes concern branches the dynamic axes keep correct.
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(_Pooled(model), dummy, handle, input_names=["input_ids", "attention_mask"],
                                  output_names=["embedding"], opset_version=OPSET, dynamo=False,
                                  dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                                "attention_mask": {0: "batch", 1: "tokens"},
                                                "embedding": {0: "batch"}})
            except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
                raise ModelLoadError(f"cannot export {model_dir} to ONNX: {type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]}") from exc
    onnx_file = out_dir / "model.onnx"
    record = {"version": EXPORT_VERSION, "source": str(Path(model_dir).resolve()), "opset": OPSET,
              "dim": int(model.config.hidden_size), "max_seq_length": _max_seq_length(model_dir),
              "torch": torch.__version__, "bytes": onnx_file.stat().st_size, "sha256": sha256_file(onnx_file)}
    write_json(out_dir / "export.json", record)
    log.info("exported %s to %s (%d bytes)", model_dir, onnx_file, record["bytes"])
    return record


def _valid_export(out_dir: Path, model_dir: Path) -> dict[str, Any] | None:
    """export.json's record if the export exists and its model.onnx matches it byte for byte, else None."""
    try:
        record = json.loads((out_dir / "export.json").read_text())
        onnx_file = out_dir / "model.onnx"
        if record.get("version") != EXPORT_VERSION or record.get("source") != str(Path(model_dir).resolve()):
            return None
        if onnx_file.stat().st_size != record["bytes"] or sha256_file(onnx_file) != record["sha256"]:
            log.warning("%s does not match its checksum in export.json; exporting it again", onnx_file)
            return None
        return record
    except (OSError, ValueError, KeyError, TypeError):
        return None


class OnnxEmbedder:
    """A sentence-transformers model's fp32 vectors computed by ONNX Runtime on the CPU.

    Texts are tokenised by the model's own `tokenizer.json` (the `tokenizers` package), truncated
    at the model's max_seq_length, and encoded in batches sorted by length (less padding).
    """

    runtime = "onnxruntime"
    precision = "fp32"

    def __init__(self, model_dir: Path, model_id: str, cache_root: Path, *, batch_size: int = 64,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelLoadError(f"the ONNX text runtime needs the packages onnxruntime and tokenizers "
                                 f"({exc.name} is missing): pip install onnxruntime tokenizers") from None
        model_dir = Path(model_dir)
        out = export_dir(model_dir, cache_root)
        record = _valid_export(out, model_dir) or export_model(model_dir, out)
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 - a tokenizer file of any other shape
            raise ModelLoadError(f"cannot read {model_dir / 'tokenizer.json'}: {exc}") from exc
        # The file's own padding (fixed length) and truncation (128) are not sentence-transformers'.
        tokenizer.enable_truncation(int(record["max_seq_length"]))
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            raise ModelLoadError(f"cannot load {out / 'model.onnx'}: {' '.join(str(exc).split())[:200]}; "
                                 f"delete {out} to export it again") from exc
        self.embedder_id = model_id
        self.dim = int(record["dim"])
        self.batch_size = batch_size
        self.pad_id = int(tokenizer.token_to_id("[PAD]") or 0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, unit rows, in the order of `texts`."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        encodings = self._tokenizer.encode_batch([str(t) for t in texts])
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.full((len(rows), width), self.pad_id, np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for j, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[j, :n] = encodings[i].ids
                mask[j, :n] = 1
            out[rows] = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def onnx_runtime_available() -> bool:
    """Whether onnxruntime and tokenizers can be imported here (without importing them)."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("tokenizers") is not None

