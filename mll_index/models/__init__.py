"""The model hub: hub files, models' costs (FLOPs, parameters), and zero-shot heads.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "flops": ["fill_hub_flops", "model_costs"],
    "hub": ["Hub", "HubModel", "LoadedModel", "builtin_hubs", "load_hub", "load_model"],
})
