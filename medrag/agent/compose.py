"""Answer composers. The extractive composer needs no language model: it picks
the evidence sentences that answer the question and cites each one."""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from medrag.agent.safety import CITATION_MARKER, looks_like_instruction
from medrag.embed.base import TextEmbedder
from medrag.index.bm25 import tokenize
from medrag.ingest.chunking import split_sentences
from medrag.types import Evidence

log = logging.getLogger(__name__)


@dataclass
class DraftSentence:
    text: str
    evidence_ids: list[str]
    score: float = 0.0
    signals: dict[str, float] = field(default_factory=dict)
    sub_question: int | None = None  # index into the sub-questions this sentence answers
    # The words quoted from the evidence when ``text`` frames them ("Similar prior case (CXR4): <quote>"):
    # support is judged on the quote, since the framing is medrag's own, not a claim from the evidence.
    quote: str | None = None


class Composer(Protocol):
    def compose(
        self, question: str, evidence: Sequence[Evidence], *, sub_questions: Sequence[str] = ()
    ) -> list[DraftSentence]: ...


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


def clean_sub_questions(sub_questions: Sequence[str]) -> list[str]:
    return [q.strip() for q in sub_questions if q and q.strip()]


def match_sub_question(text: str, sub_questions: Sequence[str]) -> int | None:
    """Index of the sub-question whose content words a sentence covers best (None: it shares none)."""
    terms = set(tokenize(text))
    best, best_value = None, 0.0
    for k, sub in enumerate(sub_questions):
        q = question_terms(sub)
        value = len(q & terms) / len(q) if q else 0.0
        if value > best_value:
            best, best_value = k, value
    return best


def _strip_markers(sentence: str) -> str:
    if "[" not in sentence:
        return sentence
    text = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(CITATION_MARKER.sub("", sentence).split()))
    return re.sub(r"[,;]+(?=[.,;:!?])", "", text)  # "bone [12], [13]." -> "bone."


def _place(ev: Evidence) -> tuple:
    """Where a passage is, as a reader would open it: two chunks of one page are one place."""
    c = ev.citation
    return (c.source, c.page, c.locator.get("record_id"), c.locator.get("record_section"))


class ExtractiveComposer:
    """Selects up to ``max_sentences`` evidence sentences by relevance to the question.

    Relevance mixes meaning (embedding cosine, when an embedder is given),
    IDF-weighted overlap with the question's words, and the retrieval score of
    the passage the sentence came from (relative to the best passage).

    With sub-questions, each sub-question first gets its best sentence (when
    some sentence shares its content words), then the remaining places go to
    the sentences most relevant to the whole question; at least one place per
    sub-question is allowed. A sentence that another passage says again (a
    near-duplicate) is written once and cites both passages.
    """

    duplicate_jaccard = 0.6  # word-set overlap above which two sentences say the same thing
    max_citations = 3  # per sentence, after merging passages that say the same

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

    def sentences(self, evidence: Sequence[Evidence], limit: int | None = None) -> list[tuple[str, Evidence, int]]:
        """Every quotable sentence of the first ``limit`` passages, with its passage and that passage's rank."""
        out = []
        for rank, ev in enumerate(evidence[: self.evidence_limit if limit is None else limit]):
            heading = ev.citation.locator.get("section") or ""
            # An ontology term ("Name: definition. Also called: ...") is quoted whole:
            # its synonym list means nothing without the name.
            sentences = [ev.text] if ev.kind == "term" else split_sentences(ev.text)
            for sentence in sentences:
                # Chunking puts the section heading in front of the page's first sentence;
                # an answer should quote the sentence, not "Bone Repair When a bone breaks ...".
                if heading and sentence.startswith(heading + " ") and ev.kind != "figure":
                    sentence = sentence[len(heading) + 1 :].lstrip()
                # A passage's own reference numbers ("[12]") would read as our citations in the answer.
                sentence = _strip_markers(sentence)
                n_words = len(sentence.split())
                # Very long "sentences" are glossaries or tables run together, not answers.
                too_long = n_words > self.max_words and ev.kind != "term"
                # A question (a review quiz, a rhetorical heading) states nothing.
                if n_words < self.min_words or too_long or ("?" in sentence and ev.kind != "term"):
                    continue
                # Text that tries to instruct a model ("ignore previous instructions ...") is no medical fact.
                if looks_like_instruction(sentence):
                    log.warning("not quoting instruction-like text from %s: %r", ev.evidence_id, sentence[:80])
                    continue
                out.append((sentence, ev, rank))
        return out

    def candidates(self, evidence: Sequence[Evidence], limit: int | None = None) -> list[tuple[str, Evidence, int]]:
        """The quotable sentences, each text once (the first passage that says it)."""
        return self._unique(self.sentences(evidence, limit))

    @staticmethod
    def _unique(sentences: list[tuple[str, Evidence, int]]) -> list[tuple[str, Evidence, int]]:
        out = []
        seen: set[str] = set()
        for sentence, ev, rank in sentences:
            key = " ".join(sentence.lower().split())
            if key not in seen:
                seen.add(key)
                out.append((sentence, ev, rank))
        return out

    def _relevance(self, query: str, candidates, sent_terms, vectors, rank_prior):
        q_terms = question_terms(query)
        idf = idf_weights(q_terms, sent_terms)
        lexical = np.array([weighted_coverage(q_terms, terms, idf) for terms in sent_terms])
        if vectors is not None:
            q = self.embedder.embed_queries([query])[0]
            dense = np.clip(vectors @ q, 0.0, 1.0)
        else:
            dense = lexical
        return 0.45 * dense + 0.35 * lexical + 0.20 * rank_prior, dense, lexical

    def compose(
        self, question: str, evidence: Sequence[Evidence], *, sub_questions: Sequence[str] = ()
    ) -> list[DraftSentence]:
        subs = clean_sub_questions(sub_questions)
        # Each sub-question brought its own passages: read as many per sub-question as for one question.
        limit = self.evidence_limit * max(1, len(subs))
        quotable = self.sentences(evidence, limit)
        candidates = self._unique(quotable)
        if not candidates:
            return []
        sent_terms = [set(tokenize(s)) for s, _, _ in candidates]
        vectors = self.embedder.embed_texts([s for s, _, _ in candidates]) if self.embedder is not None else None
        # Retrieval's own score, relative to the best passage: near-ties in retrieval stay near-ties here.
        # Scores of different tools are on different scales (fused ranks vs graph facts), so
        # each passage is compared with the best one of its own tool.
        top: dict[str, float] = {}
        for _, ev, _ in candidates:
            top[ev.tool] = max(top.get(ev.tool, 0.0), ev.score)
        rank_prior = np.array(
            [ev.score / top[ev.tool] if top[ev.tool] > 0 else 1.0 / (1.0 + rank) for _, ev, rank in candidates]
        )
        scores, dense, lexical = self._relevance(question, candidates, sent_terms, vectors, rank_prior)

        if len(subs) <= 1:
            chosen = self._select(scores, sent_terms, self.max_sentences, [])
            # The best sentence leads; the rest follow in source order (passage rank, then place in it).
            chosen = chosen[:1] + sorted(chosen[1:], key=lambda i: (candidates[i][2], i))
            assigned = {i: (0 if subs else None) for i in chosen}
        else:
            chosen, assigned = self._select_per_sub_question(subs, candidates, sent_terms, vectors, rank_prior, scores)

        said = [(set(tokenize(sentence)), ev) for sentence, ev, _ in quotable]
        draft = []
        for i in chosen:
            sentence, ev, _ = candidates[i]
            signals = {"dense": float(dense[i]), "lexical": float(lexical[i]), "retrieval": float(rank_prior[i])}
            ids = self._merge(sent_terms[i], ev, said)
            if len(ids) > 1:
                signals["merged"] = float(len(ids) - 1)
            draft.append(DraftSentence(sentence, ids, float(scores[i]), signals, assigned.get(i)))
        return draft

    def _select(self, scores: np.ndarray, sent_terms, n: int, chosen: list[int]) -> list[int]:
        """Add the best-scoring sentences to ``chosen`` until ``n``, skipping near-duplicates and weak ones."""
        chosen = list(chosen)
        best = float(scores.max())
        for i in np.argsort(-scores, kind="stable"):
            if len(chosen) >= n:
                break
            if scores[i] < self.min_relative_score * best:
                break
            if i in chosen or any(_jaccard(sent_terms[i], sent_terms[j]) > self.duplicate_jaccard for j in chosen):
                continue
            chosen.append(int(i))
        return chosen

    def _select_per_sub_question(self, subs, candidates, sent_terms, vectors, rank_prior, scores):
        per_sub = [self._relevance(sub, candidates, sent_terms, vectors, rank_prior) for sub in subs]
        chosen: list[int] = []
        assigned: dict[int, int | None] = {}
        for k, (s_k, _, lex_k) in enumerate(per_sub):
            # Only sentences that share content words with the sub-question can answer it.
            eligible = [i for i in np.argsort(-s_k, kind="stable") if lex_k[i] > 0]
            if not eligible:
                continue  # the evidence does not allow it
            floor = self.min_relative_score * s_k[eligible[0]]
            for i in eligible:
                if s_k[i] < floor:
                    break
                if i in chosen or any(_jaccard(sent_terms[i], sent_terms[j]) > self.duplicate_jaccard for j in chosen):
                    break  # a sentence chosen already answers this sub-question as well as any
                chosen.append(int(i))
                assigned[int(i)] = k
                break
        picked_for_subs = list(chosen)
        chosen = self._select(scores, sent_terms, max(self.max_sentences, len(subs)), chosen)
        for i in chosen[len(picked_for_subs) :]:
            fits = [(s_k[i], k) for k, (s_k, _, lex_k) in enumerate(per_sub) if lex_k[i] > 0]
            assigned[i] = max(fits)[1] if fits else None
        # Sentences grouped by the sub-question they answer, in the sub-questions' order;
        # within a group the sentence picked for it leads, the others follow in source order.
        order = {i: n for n, i in enumerate(picked_for_subs)}
        chosen.sort(key=lambda i: (assigned[i] is None, assigned[i] or 0, i not in order, order.get(i, 0), candidates[i][2], i))
        return chosen, assigned

    def _merge(self, terms: set[str], own: Evidence, said: list[tuple[set[str], Evidence]]) -> list[str]:
        """The sentence's passage, then passages elsewhere that say the same thing (near-duplicate sentences)."""
        ids = [own.evidence_id]
        places = {_place(own)}
        for other_terms, ev in said:
            if len(ids) >= self.max_citations:
                break
            if ev.evidence_id in ids or _place(ev) in places:
                continue
            if _jaccard(terms, other_terms) > self.duplicate_jaccard:
                ids.append(ev.evidence_id)
                places.add(_place(ev))
        return ids
