"""medrag: a multimodal retrieval-augmented agent for medical images and text.

The main entry points are importable from the top level (loaded lazily, so
``import medrag`` stays fast)::

    from medrag import Agent, load_settings
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "medrag.agent.graph",
    "load_settings": "medrag.config",
    "Settings": "medrag.config",
    "SentenceTransformerEmbedder": "medrag.embed.text",
    "make_embedder": "medrag.embed.text",
    "HybridRetriever": "medrag.index.hybrid",
    "IndexStore": "medrag.index.text_index",
    "Answer": "medrag.types",
    "Evidence": "medrag.types",
    "Citation": "medrag.types",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medrag' has no attribute {name!r}")
