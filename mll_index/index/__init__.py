"""The node index: the WordNet graph, captions, text embedders, the FAISS index of nodes, and name matching.

The names below load their module on first use (PEP 562, through lazy_loader), so importing
the package imports none of its modules.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "captions": ["Concept", "FileExpander", "LLMExpander", "WordNetExpander", "make_expander"],
    "embed": ["EmbeddingCache", "LazyEmbedder", "TextEmbedder", "embed_classes", "embed_texts", "load_embedder"],
    "graph": ["Graph", "build_graph", "folder_node_set", "load_graph", "recipe_node_set", "save_graph", "wnid_node_set"],
    "match": ["Match", "Matcher", "match_names"],
    "node_index": ["NodeIndex", "add_nodes", "build_index", "load_index"],
})
