"""Reuse: the chosen models predict a task's images; per class only that class's models vote.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "ensemble": ["reuse_models", "write_predictions"],
})
