"""mll-index: choose pre-trained vision-language models per class from an index built once."""

from __future__ import annotations

__version__ = "0.1.0"
