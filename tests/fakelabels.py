"""Model labels written by the package's own writers (labels.write_label, sync_matrix) from seeded
random embeddings: the files a labeling run writes, without loading a vision model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mll_index.labels.folders import SampleTable, write_label, write_sample_table
from mll_index.labels.sync import sync_matrix


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def fake_label(index: Path, model_id: str, wnids: Sequence[str], *, per_node: int = 2, dim: int = 8,
               seed: int = 0, matrix: bool = True) -> None:
    """Write a label folder for `model_id` over `per_node` images of each wnid (and its sample table),
    then add it to the label matrix unless `matrix` is False."""
    rng = np.random.default_rng(seed)
    paths = tuple(f"{w}/{i}.png" for w in wnids for i in range(per_node))
    table = SampleTable("/nowhere", paths, tuple(w for w in wnids for _ in range(per_node)), tuple(sorted(wnids)),
                        tuple("1:1" for _ in paths))
    fingerprint = f"fake{len(paths)}"
    write_sample_table(index, fingerprint, table)
    write_label(index, {"id": model_id, "arch": "fake"}, table, fingerprint,
                _unit(rng.normal(size=(len(paths), dim))), _unit(rng.normal(size=(len(wnids), dim))), 10.0)
    if matrix:
        sync_matrix(index)
