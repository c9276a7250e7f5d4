"""The TextEmbedder protocol: texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class EmbedderInfo:
    """What an index records about the embedder that built it, and checks on load."""

    name: str
    fingerprint: str
    dim: int

    def to_dict(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "dim": self.dim}

    @classmethod
    def from_dict(cls, data: dict) -> "EmbedderInfo":
        return cls(name=str(data["name"]), fingerprint=str(data["fingerprint"]), dim=int(data["dim"]))


@runtime_checkable
class TextEmbedder(Protocol):
    name: str

    @property
    def dim(self) -> int: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed passages: (n, dim) float32, rows L2-normalised."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries (models with query prefixes differ from passages)."""
        ...

    def info(self) -> EmbedderInfo: ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)
