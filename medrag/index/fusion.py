"""Reciprocal rank fusion: merge rankings whose scores are not comparable (cosine vs BM25)."""

from __future__ import annotations

from collections.abc import Sequence

from medrag.errors import InputError


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]],
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score(id) = sum over rankings of weight / (k + rank), rank from 1.

    Only ranks matter, so dense and lexical scores need no calibration. An id
    repeated within one ranking counts at its best rank only. Returns
    (id, fused score) by descending score, ties broken by id for determinism.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k < 0:
        raise InputError(f"RRF k must be a non-negative number, got {k!r}")
    if isinstance(rankings, (str, bytes)):
        raise InputError("rankings must be a sequence of id lists")
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise InputError(f"Got {len(rankings)} rankings but {len(weights)} weights")
    fused: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights):
        if isinstance(ranking, str):
            raise InputError("each ranking must be a sequence of ids, not a single string")
        seen: set[str] = set()
        for rank, id_ in enumerate(ranking, start=1):
            if id_ in seen:
                continue
            seen.add(id_)
            fused[id_] = fused.get(id_, 0.0) + float(weight) / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
