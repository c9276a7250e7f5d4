"""Deterministic fakes for every medrag protocol, and conformance test mixins.

Fakes are honest implementations of an interface (no hard-coded answers):
``HashingEmbedder`` embeds by hashing words, so similar texts get similar
vectors and tests run in milliseconds without model weights.
"""

from medrag.testing.fakes import HashingEmbedder, InMemoryVectorIndex, KeywordSearchTool

__all__ = ["HashingEmbedder", "InMemoryVectorIndex", "KeywordSearchTool"]
