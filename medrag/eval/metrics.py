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


# -- visual question answering ---------------------------------------------------
_ARTICLES = {"a", "an", "the"}
_NEGATIONS = {"non", "not", "no"}
_LEAD_IN = re.compile(r"^\s*(?:the\s+)?answer\s*(?:is|:)?\s*", re.I)


def answer_tokens(text: str) -> list[str]:
    """Lower-case word tokens without articles (SQuAD-style answer normalisation)."""
    return [t for t in _tokens(text) if t not in _ARTICLES]


def _contains(tokens: list[str], part: list[str]) -> bool:
    n = len(part)
    return bool(n) and any(tokens[i : i + n] == part for i in range(len(tokens) - n + 1))


def closed_options(question: str, answer: str) -> list[str]:
    """The alternatives a closed question offers, gold answer first; [] when they cannot be told.

    Yes/no questions offer yes and no. "Is it X or Y?" questions offer the gold answer
    and the same answer with the other alternative swapped in: "grey or white matter"
    with gold "white matter" gives ["white matter", "grey matter"]; "contrast or
    non-contrast" gives the gold with its negation added or removed.
    """
    gold = answer_tokens(answer)
    if gold in (["yes"], ["no"]):
        return [gold[0], "no" if gold == ["yes"] else "yes"]
    q = _tokens(question)
    if "or" not in q or not gold:
        return []
    at = q.index("or")
    left = q[:at]
    right = [t for t in q[at + 1 :]]
    while right and right[0] in _ARTICLES:
        right = right[1:]
    if not left or not right:
        return []
    a, b = left[-1], right[0]
    if b in _NEGATIONS or a in _NEGATIONS:  # "contrast or non-contrast CT"
        other = [t for t in gold if t not in _NEGATIONS] if set(gold) & _NEGATIONS else ["non", *gold]
    elif a in gold:
        other = [b if t == a else t for t in gold]
    elif b in gold:
        other = [a if t == b else t for t in gold]
    else:
        return []
    return [" ".join(gold), " ".join(other)] if other != gold else []


def parse_closed(text: str, options: Sequence[str]) -> str | None:
    """The option a free-text reply picks, or None (unparseable: counted wrong, never dropped).

    A reply that starts with an option picks it ("No, there is none" -> no); otherwise
    the one option it names, where a named option inside a longer named one does not
    count ("non-contrast CT" names only "non contrast ct", not "contrast ct").
    Naming two different options ("yes or no", "it could be grey matter or white matter") is unparseable.
    """
    tokens = answer_tokens(_LEAD_IN.sub("", text or ""))
    opts = [(o, answer_tokens(o)) for o in options]
    starting = [o for o, t in opts if t and tokens[: len(t)] == t]
    if starting:
        best = max(starting, key=lambda o: len(answer_tokens(o)))
        return None if tokens[len(answer_tokens(best)) : len(answer_tokens(best)) + 1] == ["or"] else best  # "yes or no"
    named = [(o, t) for o, t in opts if _contains(tokens, t)]
    named = [(o, t) for o, t in named if not any(len(u) > len(t) and _contains(u, t) for _, u in named)]
    return named[0][0] if len(named) == 1 else None


def reference_answers(answer: str) -> list[str]:
    """VQA-Med conventions: '#' separates alternative correct answers, '(...)' marks an optional part."""
    refs = []
    for alternative in (answer or "").split("#"):
        refs.append(alternative.replace("(", " ").replace(")", " "))
        refs.append(re.sub(r"\([^)]*\)", " ", alternative))
    return list(dict.fromkeys(r.strip() for r in refs if r.strip()))


def open_scores(prediction: str, answer: str) -> dict[str, float]:
    """Token F1 and exact match (articles and punctuation ignored), best over the reference answers."""
    pred = " ".join(answer_tokens(prediction))
    refs = [" ".join(answer_tokens(r)) for r in reference_answers(answer)] or [""]
    return {"open_f1": max(token_f1(pred, r) for r in refs), "open_em": max(exact_match(pred, r) for r in refs)}
