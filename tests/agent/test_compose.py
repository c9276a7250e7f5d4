"""ExtractiveComposer: picks the evidence sentences that answer the question and cites them."""

from __future__ import annotations

import pytest

from medrag.agent.compose import ExtractiveComposer, idf_weights, weighted_coverage
from medrag.testing.fakes import HashingEmbedder
from medrag.types import Citation, Evidence

BONE = (
    "Bone tissue is a hard connective tissue that forms most of the adult skeleton. "
    "Osteoclasts break down old bone in a process called resorption. "
    "Osteoblasts synthesize and secrete the collagen matrix of new bone."
)
HEART = (
    "The human heart has four chambers. "
    "The sinoatrial node in the wall of the right atrium is the pacemaker of the heart. "
    "The mitral valve prevents backflow of blood into the left atrium."
)
MARROW = "Yellow marrow stores triglycerides in adipocytes as an energy reserve. Red marrow produces blood cells."


def ev(eid: str, text: str, page: int = 1) -> Evidence:
    return Evidence(eid, text, Citation(source="book.pdf", chunk_id=eid, page=page), score=0.03, scores={"dense": 0.5})


@pytest.fixture(params=[None, HashingEmbedder(dim=256)], ids=["lexical-only", "with-embedder"])
def composer(request) -> ExtractiveComposer:
    return ExtractiveComposer(request.param)


def test_picks_the_relevant_sentence_and_cites_its_passage(composer: ExtractiveComposer) -> None:
    evidence = [ev("heart", HEART, 2), ev("bone", BONE, 1), ev("marrow", MARROW, 3)]
    draft = composer.compose("Which cells break down old bone?", evidence)
    assert draft
    best = max(draft, key=lambda d: d.score)
    assert best.text == "Osteoclasts break down old bone in a process called resorption."
    assert best.evidence_ids == ["bone"]
    assert set(best.signals) == {"dense", "lexical", "retrieval"}
    # All question words but "cells" are in it: the highest word coverage of any candidate.
    assert best.signals["lexical"] > 0.5
    assert best.signals["lexical"] == max(d.signals["lexical"] for d in draft)
    # Nothing about the heart answers this question.
    assert all(d.evidence_ids != ["heart"] for d in draft)


def test_pacemaker_question(composer: ExtractiveComposer) -> None:
    draft = composer.compose("What is the pacemaker of the heart?", [ev("bone", BONE), ev("heart", HEART)])
    assert draft[0].text.startswith("The sinoatrial node")
    assert draft[0].evidence_ids == ["heart"]


def test_every_sentence_is_quoted_from_the_passage_it_cites(composer: ExtractiveComposer) -> None:
    evidence = [ev("bone", BONE), ev("heart", HEART), ev("marrow", MARROW)]
    by_id = {e.evidence_id: e for e in evidence}
    loose = ExtractiveComposer(composer.embedder, max_sentences=5, min_relative_score=0.0)
    draft = loose.compose("bone heart marrow blood", evidence)
    assert len(draft) == 5
    for sentence in draft:
        (eid,) = sentence.evidence_ids
        assert sentence.text in by_id[eid].text


def test_respects_max_sentences() -> None:
    evidence = [ev("bone", BONE), ev("heart", HEART), ev("marrow", MARROW)]
    question = "bone heart marrow blood cells"
    for n in (1, 2, 4):
        draft = ExtractiveComposer(max_sentences=n, min_relative_score=0.0).compose(question, evidence)
        assert len(draft) == n
    # The relative-score cut keeps weak sentences out even when more are allowed.
    focused = ExtractiveComposer(max_sentences=5).compose("Which cells break down old bone?", evidence)
    assert 1 <= len(focused) < 5


def test_best_sentence_leads_then_source_order() -> None:
    evidence = [ev("bone", BONE), ev("heart", HEART), ev("marrow", MARROW)]
    draft = ExtractiveComposer(max_sentences=6, min_relative_score=0.0).compose("bone heart marrow blood", evidence)
    assert draft[0].score == max(d.score for d in draft)
    order = {"bone": 0, "heart": 1, "marrow": 2}
    rest = draft[1:]
    ranks = [order[d.evidence_ids[0]] for d in rest]
    assert ranks == sorted(ranks)
    bone_sentences = [d.text for d in rest if d.evidence_ids == ["bone"]]
    assert bone_sentences == sorted(bone_sentences, key=BONE.index)


def test_skips_near_duplicates() -> None:
    near_copy = "Osteoclasts break down the old bone by a process called resorption."
    evidence = [
        ev("a", "Osteoclasts break down old bone in a process called resorption."),
        ev("b", near_copy),
        ev("c", "Osteoclasts break down old bone in a process called resorption."),  # exact copy
        ev("d", "Resorption releases calcium from old bone into the blood."),
    ]
    composer = ExtractiveComposer(max_sentences=3, min_relative_score=0.0)
    assert len(composer.candidates(evidence)) == 3  # the exact copy is not even a candidate
    draft = composer.compose("What breaks down old bone in resorption?", evidence)
    texts = [d.text for d in draft]
    assert len(draft) == 2
    assert sum("Osteoclasts" in t for t in texts) == 1
    assert "Resorption releases calcium from old bone into the blood." in texts


def test_no_evidence_gives_no_sentences(composer: ExtractiveComposer) -> None:
    assert composer.compose("What is compact bone?", []) == []
    # Fragments shorter than min_words are not sentences worth citing.
    assert composer.compose("What is compact bone?", [ev("h", "Compact bone."), ev("f", "Figure 6.3")]) == []


def test_only_the_first_passages_are_read() -> None:
    evidence = [ev(f"filler{i}", f"Filler passage number {i} mentions nothing relevant here.") for i in range(3)]
    evidence.append(ev("late", "Osteoclasts break down old bone in a process called resorption."))
    question = "Which cells break down old bone?"
    assert all(d.evidence_ids != ["late"] for d in ExtractiveComposer(evidence_limit=3).compose(question, evidence))
    assert ExtractiveComposer(evidence_limit=4).compose(question, evidence)[0].evidence_ids == ["late"]


def test_idf_weighting_favours_rare_terms() -> None:
    question = {"bone", "osteoclast"}
    docs = [{"bone", "matrix"}, {"bone", "marrow"}, {"bone", "osteoclast"}]
    idf = idf_weights(question, docs)
    assert idf["osteoclast"] > idf["bone"] > 0
    assert weighted_coverage(question, {"osteoclast"}, idf) > weighted_coverage(question, {"bone"}, idf)
    assert weighted_coverage(question, question, idf) == pytest.approx(1.0)
    assert weighted_coverage(set(), {"bone"}, idf) == 0.0
