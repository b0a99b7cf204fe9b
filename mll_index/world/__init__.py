"""The emoji world: a small real world in which model selection can be run and measured offline.

Emoji art from three vendors (and styles derived from it) gives images of several hundred
WordNet concepts in eight visual domains; a hub of small open_clip models is trained on it
with different strengths; target tasks with ground truth test selection. See `build_world`.
"""

from mll_index.world.build import SIZES, World, build_world, default_world_dir, fetch_world_art, load_world, npm_dir
from mll_index.world.concepts import EmojiConcept, load_concepts
from mll_index.world.domains import DOMAINS
from mll_index.world.tasks import TaskSpec, load_task_specs

__all__ = ["DOMAINS", "SIZES", "EmojiConcept", "TaskSpec", "World", "build_world", "default_world_dir", "fetch_world_art", "npm_dir",
           "load_concepts", "load_task_specs", "load_world"]
