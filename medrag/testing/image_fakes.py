"""A deterministic ImageTextEmbedder fake: thumbnails for images, hashed words for texts.

Images become their mean-centred grey thumbnail (side x side = dim values), so
identical pictures are identical vectors and similar pictures are close; texts go
through HashingEmbedder. Image and text vectors share a dimension but not a meaning:
use it to test plumbing (indexes, ingestion, tools), not cross-modal ranking.
Registered as ``fake-image-text:DIM`` (DIM a square, default 64) once imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medrag.embed.base import EmbedderInfo, l2_normalise
from medrag.registry import embedders
from medrag.testing.fakes import HashingEmbedder


class FakeImageTextEmbedder:
    def __init__(self, dim: int = 64) -> None:
        side = math.isqrt(dim)
        if side * side != dim or side < 3:
            raise ValueError("dim must be a square of at least 9 (the thumbnail is side x side)")
        self._dim, self._side = dim, side
        self._text = HashingEmbedder(dim)
        self.name = f"fake-image-text:{dim}"
        self.calls = 0  # embed_images calls, for tests of batching and laziness

    @property
    def dim(self) -> int:
        return self._dim

    def setup(self) -> None:
        return None

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._text.embed_texts(list(texts))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._text.embed_queries(list(texts))

    def embed_images(self, images) -> np.ndarray:
        from medrag.embed.image_text import resize_square, to_gray_array

        self.calls += 1
        rows = []
        for image in images:
            thumb = resize_square(to_gray_array(image), self._side).ravel()
            centred = thumb - thumb.mean()
            rows.append(centred if np.any(centred) else np.ones_like(centred))
        return l2_normalise(np.stack(rows)) if rows else np.zeros((0, self._dim), dtype=np.float32)

    def info(self) -> EmbedderInfo:
        return EmbedderInfo(name=self.name, fingerprint=f"fake-image-text-v1-{self._dim}", dim=self._dim)


@embedders.register("fake-image-text")
def _make_fake_image_text(dim: str = "", **_options) -> FakeImageTextEmbedder:
    return FakeImageTextEmbedder(int(dim or 64))
