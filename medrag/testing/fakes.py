"""Deterministic fakes of medrag's protocols, for fast tests without weights."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from medrag.embed.base import EmbedderInfo, l2_normalise

_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """A TextEmbedder that hashes words (and word bigrams) into a fixed vector.

    Deterministic across processes (sha1, not Python's salted hash), so texts
    sharing words are close and identical texts are identical vectors. A real
    lexical embedder, not a canned answer: useful as a fast stand-in for
    MiniLM in tests.
    """

    def __init__(self, dim: int = 256, name: str | None = None) -> None:
        if dim < 8:
            raise ValueError("dim must be at least 8")
        self._dim = dim
        # The default name is a spec make_embedder() accepts, so an index built with it
        # can be reopened from its manifest (CLI ask/search/re-ingest read the stored name).
        self.name = name or f"hashing:{dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def setup(self) -> None:
        return None

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.sha1(token.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % self._dim
        sign = 1.0 if digest[4] & 1 else -1.0
        return index, sign

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for token in words + [a + "_" + b for a, b in zip(words, words[1:])]:
                index, sign = self._bucket(token)
                out[row, index] += sign
        return l2_normalise(out)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_texts(texts)

    def info(self) -> EmbedderInfo:
        return EmbedderInfo(name=self.name, fingerprint=f"hashing-sha1-v1-{self._dim}", dim=self._dim)
