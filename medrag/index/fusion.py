"""Fusion of dense and lexical results: reciprocal rank fusion (ranks only) and score fusion (normalised scores)."""

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


def max_scaled(scores: Sequence[float]) -> list[float]:
    """Scores divided by the best of their list, so the top hit is 1.0 (min-max when the best is not positive)."""
    if not len(scores):
        return []
    high = max(scores)
    if high > 0:
        return [s / high for s in scores]
    low = min(scores)
    return [1.0] * len(scores) if high <= low else [(s - low) / (high - low) for s in scores]


def score_fusion(
    scored: Sequence[Sequence[tuple[str, float]]],
    weights: Sequence[float] | None = None,
) -> list[tuple[str, float]]:
    """Convex combination of scores scaled by their list's best: sum of weight * score / best score.

    Unlike RRF it keeps *how much* better the first hit is than the second, which is what
    lifts hybrid above dense on MIRAGE (tools/eval_retrieval.py; min-max and z-score scaling
    did as well on the dev half, dividing by the best is the simplest and keeps scores > 0).
    An id a list did not return gets 0 from it. Returns (id, fused score) by descending
    score, ties by id; with weights summing to 1 the top score is at most 1.
    """
    if isinstance(scored, (str, bytes)):
        raise InputError("scored must be a sequence of (id, score) lists")
    if weights is None:
        weights = [1.0 / max(len(scored), 1)] * len(scored)
    if len(weights) != len(scored):
        raise InputError(f"Got {len(scored)} result lists but {len(weights)} weights")
    fused: dict[str, float] = {}
    for items, weight in zip(scored, weights):
        best: dict[str, float] = {}
        for id_, score in items:  # an id repeated within one list counts at its best score
            if id_ not in best or score > best[id_]:
                best[id_] = float(score)
        for id_, scaled in zip(best, max_scaled(list(best.values()))):
            fused[id_] = fused.get(id_, 0.0) + float(weight) * scaled
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
