"""The emoji world: a small real world in which model selection can be run and measured offline.

Emoji art from three vendors (and styles derived from it) gives images of several hundred
WordNet concepts in eight visual domains; a hub of small open_clip models is trained on it
with different strengths; target tasks with ground truth test selection. See `build_world`; `run_demo` is
the main job (`mll-index demo`). The names below load their module on first use (PEP 562).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "build": ["SIZES", "World", "build_world", "default_world_dir", "fetch_world_art", "load_world", "npm_dir", "ship_world_weights"],
    "concepts": ["EmojiConcept", "load_concepts"],
    "demo": ["run_demo"],
    "domains": ["DOMAINS"],
    "tasks": ["TaskSpec", "load_task_specs"],
})
