"""Evaluation: selection and reuse run on tasks with ground truth, their cost, and the baselines.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "cost": ["plot_accuracy_gflops"],
    "run": ["evaluate_tasks", "world_eval_tasks", "write_evaluation"],
})
