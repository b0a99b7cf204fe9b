"""Published labels: results tables, the ranking rule, and the published store of an index.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "rule": ["calibrate_rule"],
    "store": ["import_published", "open_published", "published_scores", "rank_published"],
    "table": ["read_dataset_texts", "read_results"],
})
