"""Labeling: sample sets, and the run that evaluates every hub model once on them.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "run": ["LabelReport", "finish_label", "label_models", "plan_labels"],
    "samples": ["SampleSet", "scan_samples"],
})
