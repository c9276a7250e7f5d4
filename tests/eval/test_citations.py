"""Sentence-level citation precision: each cited passage is judged against the sentence that cites it."""

from __future__ import annotations

from medrag.eval.citations import SUPPORT_THRESHOLD, sentence_citation_scores
from medrag.types import Answer, AnswerSentence, Citation

PASSAGES = {
    "c1": "The sinoatrial node in the wall of the right atrium is the pacemaker of the heart.",
    "c2": "Osteoclasts break down old bone in a process called resorption.",
}


def passage(citation: Citation) -> str | None:
    return PASSAGES.get(citation.chunk_id)


def answer(*sentences: AnswerSentence, abstained: bool = False) -> Answer:
    citations = [Citation("anatomy.pdf", "c1", page=2), Citation("anatomy.pdf", "c2", page=1), Citation("kg", "HP:1")]
    return Answer("q", " ".join(s.text for s in sentences), abstained, 0.5, citations, list(sentences))


def test_a_citation_counts_only_when_its_passage_supports_the_sentence() -> None:
    quoted = AnswerSentence("The sinoatrial node is the pacemaker of the heart.", [1, 2])  # c1 supports, c2 does not
    unsupported = AnswerSentence("Osteoblasts secrete collagen matrix.", [2])
    scores = sentence_citation_scores(answer(quoted, unsupported), passage)
    assert scores["citation_precision"] == 1 / 3  # 1 of 3 (sentence, passage) pairs
    assert scores["sentence_support"] == 0.5  # the first sentence is supported by its passages together


def test_nothing_to_judge_is_none_not_zero() -> None:
    assert sentence_citation_scores(answer(abstained=True), passage) == {"citation_precision": None, "sentence_support": None}
    graph_only = AnswerSentence("A phenotype term.", [3, 9])  # no passage text, and a number out of range
    assert sentence_citation_scores(answer(graph_only), passage)["citation_precision"] is None


def test_threshold_is_documented_and_adjustable() -> None:
    half = AnswerSentence("Osteoclasts break down cartilage slowly.", [2])  # most of its content words are in the passage
    assert SUPPORT_THRESHOLD == 0.5
    assert sentence_citation_scores(answer(half), passage)["citation_precision"] == 1.0
    assert sentence_citation_scores(answer(half), passage, threshold=0.9)["citation_precision"] == 0.0
