"""mll-index: choose pre-trained vision-language models per class from an index built once.

    import mll_index as mll

    index = mll.build_index("indexes/tiny", mll.build_graph(mll.wnid_node_set([...])), mll.load_embedder("minilm"))
    selector = mll.open_selector("indexes/default")
    answer = mll.answer_task(selector, mll.make_task(["tiger", "lion"]), k=3)

The verbs below are the README's Python API, one per stage of the pipeline (index → models →
labeling → selection → reuse → evaluation). Each loads its module on first use (PEP 562, through
lazy_loader), so `import mll_index` imports no torch, open_clip, sentence-transformers, ray or
ONNX Runtime. The subpackages, in the order of the data flow, are core, index, models, images,
labels, labeling, published, selection, reuse, evaluation, and on top world, cli, service, cluster.
"""

from __future__ import annotations

import lazy_loader

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "errors": ["MLLIndexError"],
    "index.graph": ["build_graph", "wnid_node_set"],
    "index.embed": ["load_embedder"],
    "index.node_index": ["add_nodes", "build_index", "load_index"],
    "index.match": ["match_names"],
    "models.hub": ["load_hub"],
    "labeling.run": ["label_models"],
    "published.store": ["import_published"],
    "selection.selector": ["open_selector", "select_batch", "select_models"],
    "selection.settings": ["SelectionSettings"],
    "selection.task": ["make_task"],
    "selection.budget": ["Budget"],
    "selection.answer": ["answer_task", "answer_tasks"],
    "reuse.ensemble": ["reuse_models"],
    "evaluation.run": ["evaluate_tasks"],
    "world.build": ["build_world"],
    "verify": ["check_index"],
})
__all__ = [*__all__, "__version__"]
