"""Labeling on a Ray cluster: the cluster layer on top of the single-machine labeler.

    connect.py   the address rules (`auto`, `local`, `host:port`, `ray://host:port`, RAY_ADDRESS) and
                 a connection that fails within seconds, naming the address
    tasks.py     what runs on the cluster's workers: one model on one shard of the sample images,
                 one model's node prompts, and the check that a node sees the sample folder
    labeling.py  the driver: plans the work (models x shards), submits it, gathers the shards and
                 writes each model's label through `mll_index.labeling.run.finish_label`, the one writer

Ray is an optional dependency (`pip install 'mll-index[cluster]'`); nothing outside this package
imports it, so the single-machine path never needs it.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "connect": ["connect"],
    "labeling": ["RayLabelReport", "label_on_ray"],
})
