"""Answer composers. The extractive composer needs no language model: it picks
the evidence sentences that answer the question and cites each one."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from medrag.embed.base import TextEmbedder
from medrag.index.bm25 import tokenize
from medrag.ingest.chunking import split_sentences
from medrag.types import Evidence


@dataclass
class DraftSentence:
    text: str
    evidence_ids: list[str]
    score: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)


class Composer(Protocol):
    def compose(self, question: str, evidence: Sequence[Evidence]) -> list[DraftSentence]: ...


# Words that frame a question rather than say what it is about ("what does X mean",
# "what is the term for X"); they are stemmed like every token.
_FRAMING = "mean meaning means term terms called call name named describe describes described define defined definition refer refers referred known"
FRAMING_TERMS = frozenset(t for word in _FRAMING.split() for t in tokenize(word))


def question_terms(question: str) -> set[str]:
    """The content words of a question, as BM25 tokens, without framing words."""
    terms = set(tokenize(question))
    return (terms - FRAMING_TERMS) or terms


def idf_weights(question_terms: set[str], documents: Sequence[set[str]]) -> dict[str, float]:
    """IDF of the question's terms over the candidate sentences: rare terms weigh more."""
    n = len(documents)
    df = Counter(t for doc in documents for t in doc & question_terms)
    return {t: math.log(1.0 + (n + 1) / (df.get(t, 0) + 0.5)) for t in question_terms}


def weighted_coverage(question_terms: set[str], text_terms: set[str], idf: dict[str, float]) -> float:
    total = sum(idf.get(t, 1.0) for t in question_terms)
    if total == 0:
        return 0.0
    return sum(idf.get(t, 1.0) for t in question_terms & text_terms) / total


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


class ExtractiveComposer:
    """Selects up to ``max_sentences`` evidence sentences by relevance to the question.

    Relevance mixes meaning (embedding cosine, when an embedder is given),
    IDF-weighted overlap with the question's words, and the retrieval score of
    the passage the sentence came from (relative to the best passage). Near-duplicate sentences are skipped.
    """

    def __init__(
        self,
        embedder: TextEmbedder | None = None,
        *,
        max_sentences: int = 3,
        evidence_limit: int = 6,
        min_relative_score: float = 0.8,
        min_words: int = 4,
        max_words: int = 80,
    ) -> None:
        self.embedder = embedder
        self.max_sentences = max_sentences
        self.evidence_limit = evidence_limit
        self.min_relative_score = min_relative_score
        self.min_words = min_words
        self.max_words = max_words

    def candidates(self, evidence: Sequence[Evidence]) -> list[tuple[str, Evidence, int]]:
        out = []
        seen: set[str] = set()
        for rank, ev in enumerate(evidence[: self.evidence_limit]):
            heading = ev.citation.locator.get("section") or ""
            # An ontology term ("Name: definition. Also called: ...") is quoted whole:
            # its synonym list means nothing without the name.
            sentences = [ev.text] if ev.kind == "term" else split_sentences(ev.text)
            for sentence in sentences:
                # Chunking puts the section heading in front of the page's first sentence;
                # an answer should quote the sentence, not "Bone Repair When a bone breaks ...".
                if heading and sentence.startswith(heading + " ") and ev.kind != "figure":
                    sentence = sentence[len(heading) + 1 :].lstrip()
                key = " ".join(sentence.lower().split())
                n_words = len(sentence.split())
                # Very long "sentences" are glossaries or tables run together, not answers.
                too_long = n_words > self.max_words and ev.kind != "term"
                if n_words < self.min_words or too_long or key in seen:
                    continue
                seen.add(key)
                out.append((sentence, ev, rank))
        return out

    def compose(self, question: str, evidence: Sequence[Evidence]) -> list[DraftSentence]:
        candidates = self.candidates(evidence)
        if not candidates:
            return []
        q_terms = question_terms(question)
        sent_terms = [set(tokenize(s)) for s, _, _ in candidates]
        idf = idf_weights(q_terms, sent_terms)
        lexical = np.array([weighted_coverage(q_terms, terms, idf) for terms in sent_terms])
        if self.embedder is not None:
            q = self.embedder.embed_queries([question])[0]
            dense = self.embedder.embed_texts([s for s, _, _ in candidates]) @ q
            dense = np.clip(dense, 0.0, 1.0)
        else:
            dense = lexical
        # Retrieval's own score, relative to the best passage: near-ties in retrieval stay near-ties here.
        # Scores of different tools are on different scales (fused ranks vs graph facts), so
        # each passage is compared with the best one of its own tool.
        top: dict[str, float] = {}
        for _, ev, _ in candidates:
            top[ev.tool] = max(top.get(ev.tool, 0.0), ev.score)
        rank_prior = np.array(
            [ev.score / top[ev.tool] if top[ev.tool] > 0 else 1.0 / (1.0 + rank) for _, ev, rank in candidates]
        )
        scores = 0.45 * dense + 0.35 * lexical + 0.20 * rank_prior

        chosen: list[int] = []
        for i in np.argsort(-scores, kind="stable"):
            if len(chosen) == self.max_sentences:
                break
            if chosen and scores[i] < self.min_relative_score * scores[chosen[0]]:
                break
            if any(_jaccard(sent_terms[i], sent_terms[j]) > 0.6 for j in chosen):
                continue
            chosen.append(int(i))
        # The best sentence leads; the rest follow in source order (passage rank, then place in it).
        chosen = chosen[:1] + sorted(chosen[1:], key=lambda i: (candidates[i][2], i))
        return [
            DraftSentence(
                text=candidates[i][0],
                evidence_ids=[candidates[i][1].evidence_id],
                score=float(scores[i]),
                signals={"dense": float(dense[i]), "lexical": float(lexical[i]), "retrieval": float(rank_prior[i])},
            )
            for i in chosen
        ]
