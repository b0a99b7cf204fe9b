"""Images: decoding, and the one streamed data path from files to embeddings and probabilities.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "decoding": ["UnreadableImageError", "open_image"],
    "encoding": ["encode_image_set", "hub_probabilities", "zero_shot_probabilities"],
    "loader": ["ImageSet", "image_loader"],
})
