"""SupportVerifier and the confidence signals: an answer says only what its sources say."""

from __future__ import annotations

import pytest

from medrag.agent.compose import DraftSentence
from medrag.agent.verify import SupportVerifier, Verdict, confidence
from medrag.testing.fakes import HashingEmbedder
from medrag.types import Citation, Evidence

BONE = (
    "Compact bone is the denser, stronger of the two types of bone tissue. "
    "Osteoclasts break down old bone in a process called resorption."
)
HEART = "The sinoatrial node in the wall of the right atrium is the pacemaker of the heart."


def ev(eid: str, text: str, dense: float) -> Evidence:
    return Evidence(eid, text, Citation(source="book.pdf", chunk_id=eid, page=1), score=0.03, scores={"dense": dense})


@pytest.fixture(params=[None, HashingEmbedder(dim=256)], ids=["lexical-only", "with-embedder"])
def verifier(request) -> SupportVerifier:
    return SupportVerifier(request.param, min_support=0.5)


def test_quoted_sentence_has_full_support(verifier: SupportVerifier) -> None:
    assert verifier.support("Osteoclasts break down old bone in a process called resorption.", [BONE]) == 1.0
    # Case and spacing do not matter for a quote.
    assert verifier.support("osteoclasts  break down OLD bone\nin a process called resorption.", [BONE]) == 1.0
    # A quote from any of the cited passages counts.
    assert verifier.support(HEART, [BONE, HEART]) == 1.0


def test_unrelated_sentence_is_unsupported_and_dropped(verifier: SupportVerifier) -> None:
    unrelated = "Paris is the capital and largest city of France."
    score = verifier.support(unrelated, [BONE])
    assert 0.0 <= score < verifier.min_support

    evidence = {"bone": ev("bone", BONE, 0.6)}
    draft = [
        DraftSentence("Osteoclasts break down old bone in a process called resorption.", ["bone"]),
        DraftSentence(unrelated, ["bone"]),
    ]
    verdicts = verifier.check(draft, evidence)
    assert [v.supported for v in verdicts] == [True, False]
    assert verdicts[0].support == 1.0 and verdicts[1].support == score
    assert verdicts[1].sentence is draft[1]


def test_paraphrase_support_is_the_share_of_its_words_in_the_evidence() -> None:
    verifier = SupportVerifier(None)
    # Content words: osteoclasts, remove, old, bone, release, calcium; the passage has 3 of the 6.
    partly = "Osteoclasts remove old bone and release calcium."
    assert verifier.support(partly, [BONE]) == pytest.approx(0.5)
    assert verifier.support("Osteoclasts break down old bone.", [BONE]) == 1.0  # a verbatim substring
    assert verifier.support("old bone osteoclasts", [BONE]) == 1.0  # all words present, not a quote


def test_support_uses_only_the_cited_evidence(verifier: SupportVerifier) -> None:
    evidence = {"bone": ev("bone", BONE, 0.6), "heart": ev("heart", HEART, 0.6)}
    quoted_from_heart = DraftSentence(HEART, ["bone"])  # cites the wrong passage
    (verdict,) = verifier.check([quoted_from_heart], evidence)
    assert verdict.support < 1.0 and not verdict.supported
    (verdict,) = verifier.check([DraftSentence(HEART, ["heart"])], evidence)
    assert verdict.support == 1.0 and verdict.supported
    # Citing evidence that is not in the pool supports nothing.
    (verdict,) = verifier.check([DraftSentence(HEART, ["gone"])], evidence)
    assert verdict.support == 0.0 and not verdict.supported


def test_edge_cases(verifier: SupportVerifier) -> None:
    assert verifier.support("Compact bone is dense.", []) == 0.0
    assert verifier.support("the of and", [BONE]) == 0.0  # no content words, not a quote
    assert verifier.check([], {}) == []


def test_min_support_threshold_is_configurable() -> None:
    sentence = "Osteoclasts remove old bone and release calcium."
    score = SupportVerifier().support(sentence, [BONE])
    evidence = {"bone": ev("bone", BONE, 0.6)}
    draft = [DraftSentence(sentence, ["bone"])]
    assert SupportVerifier(min_support=score).check(draft, evidence)[0].supported
    assert not SupportVerifier(min_support=min(1.0, score + 0.01)).check(draft, evidence)[0].supported


def _verdict(text: str, eid: str, support: float = 1.0) -> Verdict:
    return Verdict(DraftSentence(text, [eid]), support, True)


def test_confidence_signals_are_in_unit_range() -> None:
    evidence = {"bone": ev("bone", BONE, 0.55), "heart": ev("heart", HEART, 0.30)}
    value, signals = confidence("Which cells break down old bone?", [_verdict(BONE.split(". ")[1], "bone")], evidence)
    assert set(signals) >= {"relevance", "coverage", "support"}
    assert 0.0 <= value <= 1.0
    assert all(0.0 <= s <= 1.0 for s in signals.values())
    assert signals["support"] == 1.0
    assert 0.0 < signals["coverage"] < 1.0  # "cells" is not in the passage


@pytest.mark.parametrize("dense", [-0.5, 0.0, 0.25, 0.4, 0.6, 0.95, 1.5])
def test_relevance_is_clipped_to_unit_range(dense: float) -> None:
    evidence = {"bone": ev("bone", BONE, dense)}
    value, signals = confidence("compact bone", [_verdict("Compact bone is dense.", "bone")], evidence)
    assert 0.0 <= signals["relevance"] <= 1.0
    assert 0.0 <= value <= 1.0
    if dense <= 0.25:
        assert signals["relevance"] == 0.0
    if dense >= 0.6:
        assert signals["relevance"] == 1.0


def test_confidence_is_zero_without_kept_sentences() -> None:
    value, signals = confidence("What is compact bone?", [], {"bone": ev("bone", BONE, 0.9)})
    assert value == 0.0
    assert signals == {"relevance": 0.0, "coverage": 0.0, "support": 0.0}


def test_confidence_rises_with_relevance_coverage_and_support() -> None:
    question = "Which cells break down old bone?"
    kept = [_verdict("Osteoclasts break down old bone in a process called resorption.", "bone")]
    low_dense, _ = confidence(question, kept, {"bone": ev("bone", BONE, 0.3)})
    high_dense, _ = confidence(question, kept, {"bone": ev("bone", BONE, 0.6)})
    assert high_dense > low_dense

    on_topic, s_on = confidence(question, kept, {"bone": ev("bone", BONE, 0.4)})
    off_topic, s_off = confidence("What is the capital of France?", kept, {"bone": ev("bone", BONE, 0.4)})
    assert s_off["coverage"] == 0.0 < s_on["coverage"]
    assert on_topic > off_topic

    weak = [_verdict(kept[0].sentence.text, "bone", support=0.5)]
    weakly_supported, s_weak = confidence(question, weak, {"bone": ev("bone", BONE, 0.4)})
    assert s_weak["support"] == 0.5
    assert weakly_supported < on_topic
