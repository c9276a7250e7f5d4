"""Rethink: is the evidence enough for every sub-question, and if not, what next?

Each sub-question is judged on the best piece of evidence for it, with the same
two signals the answer's confidence uses (question-passage cosine rescaled, and
IDF-weighted share of its words the passage contains). A sub-question about an
image also needs one successful image tool. Evidence that contradicts itself
(two passages saying the same thing, one negated) is flagged.

When something is missing the next actions are, in order, each at most once:
1. a knowledge-graph definition of the sub-question's concepts (synonyms help search);
2. a reformulated search: the sub-question's content words plus the graph's
   name and synonyms for it (or a model's rewrite when one is configured), with a larger k;
3. for an image, a zoom on the region an image tool pointed at (ViTAR "think
   twice"), and the image tools that accept crops run again on the crop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medrag.agent.compose import idf_weights, question_terms, weighted_coverage
from medrag.agent.planner import topic_words
from medrag.agent.state import ImageInput, SubQuestion, ToolCall
from medrag.agent.toolbox import ZOOM_TOOL, Toolbox
from medrag.index.bm25 import tokenize
from medrag.types import Evidence, ToolResult

LOOK_AGAIN = "look again"  # reasons of the think-twice calls start with this
_NEGATION = re.compile(r"\b(no|not|never|without|absent|absence|negative|denies|ruled out|unlikely)\b", re.IGNORECASE)


@dataclass
class Judgement:
    scores: list[float]  # per sub-question: relevance of its best evidence, 0..1
    sufficient: list[bool]
    best_evidence: list[str | None]
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # evidence id pairs that disagree

    @property
    def all_sufficient(self) -> bool:
        return all(self.sufficient)

    def missing(self, sub_questions: Sequence[SubQuestion]) -> list[str]:
        return [s.text for s, ok in zip(sub_questions, self.sufficient) if not ok]


def relevance(cosine: float) -> float:
    """MiniLM cosines: ~0.25 unrelated, ~0.6 on topic; the same rescaling as the answer's confidence."""
    return float(np.clip((cosine - 0.25) / 0.35, 0.0, 1.0))


class RuleRethinker:
    def __init__(
        self,
        embedder=None,
        *,
        term_idf: Callable[[Iterable[str]], dict[str, float]] | None = None,
        sufficient_above: float = 0.5,
        rewriter=None,
    ) -> None:
        self.embedder = embedder
        self.term_idf = term_idf
        self.sufficient_above = sufficient_above
        self.rewriter = rewriter  # optional model that rewrites a sub-question as a search query
        self._vectors: dict[str, np.ndarray] = {}

    # -- judging -----------------------------------------------------------
    def _embed(self, texts: Sequence[str], *, queries: bool = False) -> np.ndarray:
        if queries:
            return self.embedder.embed_queries(list(texts))
        todo = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if todo:
            for text, vector in zip(todo, self.embedder.embed_texts(todo)):
                self._vectors[text] = vector
        if len(self._vectors) > 20_000:  # a long-lived agent must not grow without bound
            self._vectors.clear()
            return self._embed(texts)
        return np.stack([self._vectors[t] for t in texts])

    def judge(
        self,
        sub_questions: Sequence[SubQuestion],
        evidence: Sequence[Evidence],
        results: Sequence[ToolResult],
        *,
        image_tools: frozenset[str] | set[str] = frozenset(),
    ) -> Judgement:
        """Score each sub-question on its best text evidence; image sub-questions also pass on a working image tool."""
        image_ids = {e.evidence_id for r in results if r.tool in image_tools for e in r.evidence}
        image_ok = any(r.ok and r.evidence for r in results if r.tool in image_tools and r.tool != ZOOM_TOOL)
        text_evidence = [ev for ev in evidence if ev.evidence_id not in image_ids]
        scores, sufficient, best = [], [], []
        if text_evidence:
            terms = [set(tokenize(ev.text)) for ev in text_evidence]
            cos = self._cosines(sub_questions, text_evidence, results)
        for i, sub in enumerate(sub_questions):
            score, top = 0.0, None
            if text_evidence:
                q_terms = question_terms(sub.query)
                idf = self.term_idf(q_terms) if self.term_idf is not None else idf_weights(q_terms, terms)
                coverage = np.array([weighted_coverage(q_terms, t, idf) for t in terms])
                dense = np.array([relevance(c) for c in cos[i]]) if cos is not None else coverage
                combined = 0.5 * dense + 0.5 * coverage
                j = int(np.argmax(combined))
                score, top = float(combined[j]), text_evidence[j].evidence_id
            ok = score >= self.sufficient_above or (sub.needs_image and image_ok)
            scores.append(round(score, 4))
            sufficient.append(bool(ok))
            best.append(top)
        return Judgement(scores, sufficient, best, find_conflicts(text_evidence))

    def _cosines(self, subs: Sequence[SubQuestion], evidence: Sequence[Evidence], results: Sequence[ToolResult]) -> np.ndarray | None:
        """Sub-question x evidence cosines. A search already scored its passages against its own
        query; those scores are reused and only the missing pairs are embedded."""
        if self.embedder is None:
            return None
        asked: dict[str, set[str]] = {}
        for r in results:
            query = r.output.get("query") if r.ok else None
            for ev in r.evidence if query else ():
                asked.setdefault(ev.evidence_id, set()).add(query)
        cos = np.full((len(subs), len(evidence)), np.nan)
        for i, sub in enumerate(subs):
            for j, ev in enumerate(evidence):
                if "dense" in ev.scores and sub.query in asked.get(ev.evidence_id, ()):
                    cos[i, j] = ev.scores["dense"]
        rows = [i for i in range(len(subs)) if np.isnan(cos[i]).any()]
        if rows:
            cols = [j for j in range(len(evidence)) if np.isnan(cos[rows, j]).any()]
            fresh = self._embed([subs[i].query for i in rows], queries=True) @ self._embed([evidence[j].text for j in cols]).T
            for a, i in enumerate(rows):
                for b, j in enumerate(cols):
                    if np.isnan(cos[i, j]):
                        cos[i, j] = fresh[a, b]
        return cos

    # -- next actions --------------------------------------------------------
    def next_calls(
        self,
        judgement: Judgement,
        sub_questions: Sequence[SubQuestion],
        images: Sequence[ImageInput],
        evidence: Sequence[Evidence],
        results: Sequence[ToolResult],
        toolbox: Toolbox,
        done: set[str],
        *,
        where: dict[str, Any] | None = None,
        top_k: int = 5,
    ) -> list[ToolCall]:
        calls: list[ToolCall] = []
        needs_more = [i for i, ok in enumerate(judgement.sufficient) if not ok]
        if judgement.conflicts and not needs_more:
            needs_more = list(range(len(sub_questions)))  # sources disagree: look further once
        for i in needs_more:
            sub = sub_questions[i]
            for tool in toolbox.graph_tools()[:1]:
                calls.append(ToolCall(tool.name, {"operation": "define", "text": sub.query, "k": 3}, i, "evidence thin: look the concepts up"))
            query = self.reformulate(sub, evidence)
            for tool in toolbox.search_tools():
                inputs: dict[str, Any] = {"query": query}
                if "k" in tool.inputs:
                    inputs["k"] = 2 * top_k
                if where and "where" in tool.inputs:
                    inputs["where"] = where
                calls.append(ToolCall(tool.name, inputs, i, "evidence thin: search again with other words"))
        # Think twice: a region an image tool pointed at is looked at again, even when the
        # first reading seemed enough (ViTAR); once per image.
        image_sub = next((i for i, s in enumerate(sub_questions) if s.needs_image), None)
        if image_sub is not None:
            calls.extend(self._zoom_calls(image_sub, images, results, toolbox))
        fresh, seen = [], set(done)
        for call in calls:
            if call.key not in seen:
                seen.add(call.key)
                fresh.append(call)
        return fresh

    def reformulate(self, sub: SubQuestion, evidence: Sequence[Evidence]) -> str:
        """Content words plus what the knowledge graph calls the concepts (names and synonyms)."""
        if self.rewriter is not None:
            try:
                return self.rewriter(sub.query)
            except Exception:  # noqa: BLE001 - a model failing to rewrite means: rewrite by rules
                pass
        words = topic_words(sub.query)
        extra: list[str] = []
        for ev in evidence:
            # Only knowledge-graph facts about the question's concepts; ontology terms that a
            # search merely returned may be about anything (and would pull the next search off topic).
            if ev.kind != "graph":
                continue
            name, _, rest = ev.text.partition(":")
            synonyms = re.search(r"Also called:\s*(.+?)(?:\.|$)", rest)
            extra.append(name.strip())
            if synonyms:
                extra.extend(s.strip() for s in synonyms.group(1).split(",")[:3])
        seen = set(words.lower().split())
        additions = [e for e in dict.fromkeys(extra) if e and e.lower() not in seen][:4]
        return " ".join([words, *additions]).strip() or sub.query

    @staticmethod
    def _zoom_calls(i: int, images: Sequence[ImageInput], results: Sequence[ToolResult], toolbox: Toolbox) -> list[ToolCall]:
        calls: list[ToolCall] = []
        zoomed = [r for r in results if r.tool == ZOOM_TOOL and r.ok]
        if ZOOM_TOOL in toolbox and not zoomed:
            for image in images:
                box = _region_of_interest(image, results)
                if box is not None:
                    calls.append(ToolCall(ZOOM_TOOL, {"image": image.path, "box": list(box)}, i, f"{LOOK_AGAIN} at the region an image tool pointed at"))
                    break
        for result in zoomed:  # think twice: tools that accept crops look at the zoomed region
            crop = result.output.get("crop")
            modality = result.output.get("modality", "unknown")
            for tool in toolbox.image_tools(modality):
                if crop and getattr(tool, "accepts_crops", False):
                    calls.append(ToolCall(tool.name, {"image": crop, "modality": modality}, i, f"{LOOK_AGAIN}: re-read the zoomed region"))
        return calls


def _region_of_interest(image: ImageInput, results: Sequence[ToolResult]) -> tuple[float, ...] | None:
    """The box an image tool reported for this image: a saliency peak first, else a finding's box."""
    boxes = []
    for result in results:
        if not result.ok or result.tool == ZOOM_TOOL:
            continue
        for ev in result.evidence:
            if ev.citation.source == image.name and ev.citation.bbox is not None:
                boxes.append((0 if ev.citation.locator.get("saliency") else 1, tuple(ev.citation.bbox)))
    return sorted(boxes)[0][1] if boxes else None


def find_conflicts(evidence: Sequence[Evidence], *, overlap: float = 0.6) -> list[tuple[str, str]]:
    """Pairs of passages that say nearly the same words, exactly one of them negated."""
    sentences = []
    for ev in evidence[:20]:
        for sentence in re.split(r"(?<=[.!?])\s+", ev.text):
            terms = set(tokenize(_NEGATION.sub(" ", sentence)))
            if len(terms) >= 3:
                sentences.append((ev.evidence_id, terms, bool(_NEGATION.search(sentence))))
    found: list[tuple[str, str]] = []
    for a in range(len(sentences)):
        for b in range(a + 1, len(sentences)):
            (ida, ta, na), (idb, tb, nb) = sentences[a], sentences[b]
            if ida == idb or na == nb:
                continue
            if len(ta & tb) / len(ta | tb) >= overlap and (ida, idb) not in found:
                found.append((ida, idb))
    return found
