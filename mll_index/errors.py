"""The error family of mll-index: every user-facing failure is an MLLIndexError."""

from __future__ import annotations


class MLLIndexError(Exception):
    """Base of every error mll-index raises on purpose; the CLI prints it as one line."""


class InputError(MLLIndexError):
    """A user-supplied value (class name, wnid, option, file) is invalid."""


class IndexFormatError(MLLIndexError):
    """An on-disk index or artifact is missing, corrupt, or of another version."""


class EmbedderMismatchError(MLLIndexError):
    """A query was embedded with another embedder than the index was built with."""


class EndpointError(MLLIndexError):
    """A remote endpoint (LLM or embedding service) cannot be reached or answered badly."""


class ModelLoadError(MLLIndexError):
    """A text model or vision-language model cannot be loaded."""


class IndexWriteError(MLLIndexError):
    """An index file could not be written (a full disk, a file-size limit); the previous version is kept."""
