"""Checking a whole index folder: every file it holds, each problem reported by path.

An index holds the node index (manifest, graph, node tables and vectors of every segment, the
FAISS file), the model labels (one folder per model, the sample tables), the label matrix
(manifest, log, shards), the stacked top-nodes tables and the published labels (see layout.py).
`check_index` checks each part with the part's own check, then what only the parts together can
tell: that the label matrix's nodes are WordNet synsets and that its hub entries are those of the
label folders they were read from. `unchecked_parts` lists what an older version wrote without the
checksum its part now carries (sample tables, top-nodes tables, the published manifest): they open,
and a user is told their content cannot be checked.
"""

from __future__ import annotations

from pathlib import Path

from mll_index.core.artifacts import SELF_DIGEST, read_json
from mll_index.core.layout import MANIFEST, matrix_dir, published_dir
from mll_index.errors import MLLIndexError
from mll_index.index.node_index import check_index_files, load_index_graph
from mll_index.labels.folders import check_labels, load_label, sample_tables_without_checksum, scan_labels
from mll_index.labels.matrix import check_matrix, has_matrix, open_matrix
from mll_index.labels.sync import matrix_entry
from mll_index.labels.topk_table import check_topk_tables, topk_tables_without_checksum
from mll_index.published.store import check_published, unusable_published


def _check_matrix_axes(index_path: Path) -> list[str]:
    """What a damaged matrix manifest or log can hold while parsing: a node that is no synset, or a model's
    hub entry that is not its label folder's (the log and base manifest carry no checksums)."""
    graph = load_index_graph(index_path)
    matrix = open_matrix(index_path)
    folder = matrix_dir(index_path)
    problems = [f"{folder}: node {w!r} of the label matrix is not a WordNet noun synset (a damaged manifest or log)"
                for w in matrix.node_wnids if w not in graph.row_of]
    scan = scan_labels(index_path)
    for model_id, entry in zip(matrix.model_ids, matrix.entries):
        current = model_id in scan.samples and isinstance(entry, dict) \
            and entry.get("label_samples") == scan.samples[model_id]
        if current and entry != matrix_entry(load_label(index_path, model_id)):
            problems.append(f"{folder}: the entry of model {model_id!r} differs from its label folder's "
                            f"({scan.folders[model_id] / 'manifest.json'}): a damaged manifest or log")
    return problems


def check_index(index_path: Path, checksums: bool = False) -> list[str]:
    """Every problem of an index folder, one line each naming the file; [] when all is sound.

    Without `checksums` the cheap checks run (manifests, file sizes, the label matrix's log and
    shards, the label folders' manifests); with it, every listed file's SHA-256 is compared and
    every label folder's arrays are opened too.

    Raises:
        IndexFormatError: `index_path` is not an index (no manifest.json), or its folder is missing.
    """
    index_path = Path(index_path)
    problems = check_index_files(index_path, checksums)
    labels = check_labels(index_path, checksums)
    matrix = check_matrix(index_path, checksums)
    problems += labels + matrix
    if not problems and has_matrix(index_path):
        try:
            problems += _check_matrix_axes(index_path)
        except MLLIndexError as exc:
            problems.append(str(exc))
    problems += check_topk_tables(index_path, checksums)
    published = check_published(index_path, checksums)
    problems += published or [p for p in [unusable_published(index_path)] if p]
    return list(dict.fromkeys(problems))


def unchecked_parts(index_path: Path) -> list[str]:
    """One line per part written before it carried a checksum of its own content, naming the file; [] when
    every part has one. Not problems (they open and select reads them), but a change to them goes unseen.
    """
    index_path = Path(index_path)
    lines = [f"{p}: a sample table without a checksum (written by an older version); its content cannot be "
             "checked" for p in sample_tables_without_checksum(index_path)]
    lines += [f"{p}: a top-nodes table manifest without its own checksum (written by an older version); "
              "`mll-index labels compact` writes it again with one" for p in topk_tables_without_checksum(index_path)]
    manifest = published_dir(index_path) / MANIFEST
    try:
        data = read_json(manifest) if manifest.is_file() else None
    except MLLIndexError:
        data = None                 # named among check_index's problems
    if isinstance(data, dict) and SELF_DIGEST not in data:
        lines.append(f"{manifest}: published labels without the manifest's own checksum (imported by an older "
                     "version): its rule and accuracy model cannot be checked; import them again")
    return lines
