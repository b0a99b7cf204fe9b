"""Where mll-index keeps things on a user's machine: the cache of data prepared once, and the default index.

Every command reads these two; they depend on the environment (`$MLL_INDEX_CACHE`, `$XDG_CACHE_HOME`,
`$MLL_INDEX_HOME`) and the working folder, never on a hard-coded absolute path.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where mll-index keeps data it prepares once (WordNet for nltk, caches): $MLL_INDEX_CACHE or ~/.cache/mll-index."""
    root = os.environ.get("MLL_INDEX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mll-index"
    )
    return Path(root)


def default_index_path() -> Path:
    """$MLL_INDEX_HOME/default; else ./indexes/default if it exists; else indexes/default of the source checkout."""
    home = os.environ.get("MLL_INDEX_HOME")
    if home:
        return Path(home) / "default"
    local = Path("indexes") / "default"
    checkout = Path(__file__).resolve().parents[2] / "indexes" / "default"
    return local if local.exists() or not checkout.parent.is_dir() else checkout
