"""Selection: tasks, settings, matching to labeled nodes, scoring, budgets, predicted accuracy, the answer.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "answer": ["answer_task", "answer_tasks"],
    "budget": ["Budget"],
    "selector": ["Selection", "Selector", "open_selector", "select_batch", "select_models"],
    "settings": ["SelectionSettings"],
    "task": ["Task", "make_task", "read_task_file"],
})
