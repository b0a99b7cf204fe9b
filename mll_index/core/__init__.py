"""The foundation: on-disk artifacts, the index folder's layout, users' files, the OpenAI-compatible client, paths.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "artifacts": ["atomic_dir", "atomic_file", "read_json", "write_json"],
    "layout": ["model_folder_name"],
    "openai_client": ["OpenAIClient"],
    "paths": ["cache_dir", "default_index_path"],
    "userfiles": ["normalize_class_name", "read_names_file", "read_user_csv", "read_user_json", "read_user_text"],
})
