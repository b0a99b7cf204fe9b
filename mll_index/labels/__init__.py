"""Model labels as stored: label folders (format, read, write), the label matrix, top nodes, the label store.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "folders": ["ModelLabel", "SampleTable", "check_labels", "labeled_models", "load_label", "scan_labels"],
    "matrix": ["append_labels", "compact_matrix", "open_matrix"],
    "store": ["LabelStore", "open_labels"],
    "sync": ["sync_matrix"],
    "topk_table": ["write_topk_tables"],
})
