"""Metrics: ranking (recall@k, MRR, nDCG), answers (choice letters, token F1), and bootstrap intervals."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np


def first_hit(ranked: Sequence[str], relevant: set[str]) -> int | None:
    """0-based rank of the first relevant item, or None."""
    return next((i for i, item in enumerate(ranked) if item in relevant), None)


def ranking_metrics(ranked: Sequence[str], relevant: set[str], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Per-question recall@k (a relevant item in the top k), reciprocal rank@10 and nDCG@10 (binary gains)."""
    first = first_hit(ranked, relevant)
    out = {f"recall@{k}": float(first is not None and first < k) for k in ks}
    out["mrr@10"] = 1.0 / (first + 1) if first is not None and first < 10 else 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:10]) if item in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    out["ndcg@10"] = dcg / ideal if ideal else 0.0
    return out


_LETTER_PATTERNS = [
    re.compile(r"\banswer\s*(?:is|:)?\s*\(?([A-J])\)?(?![a-z])", re.I),
    re.compile(r"^\s*\(?([A-J])(?:[\).:]|\s*$)", re.M),  # "B) ...", "(C).", a bare "D" — not the word "I"
    re.compile(r"\boption\s*\(?([A-J])\)?\b", re.I),
]


def parse_choice(text: str, options: dict[str, str]) -> str | None:
    """The option letter a free-text answer picks, or None (counted wrong, never dropped).

    Tries "answer is B" / "B)" / "option B" forms, then a unique option text quoted in the answer.
    """
    letters = {k.upper() for k in options}
    for pattern in _LETTER_PATTERNS:
        for match in pattern.finditer(text or ""):
            if match.group(1).upper() in letters:
                return match.group(1).upper()
    lowered = (text or "").lower()
    quoted = [k.upper() for k, v in options.items() if v and re.search(rf"\b{re.escape(v.lower())}\b", lowered)]
    return quoted[0] if len(quoted) == 1 else None


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", (text or "").lower())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = _tokens(prediction), _tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(_tokens(prediction) == _tokens(reference))


def bootstrap_ci(values: Sequence[float], *, samples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_bootstrap_delta(a: Sequence[float], b: Sequence[float], *, samples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a over paired questions, with a 95% bootstrap interval."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    low, high = bootstrap_ci(diff, samples=samples, seed=seed)
    return float(diff.mean()) if diff.size else float("nan"), low, high


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")
