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


# -- sub-questions and merging ------------------------------------------------------------------
def test_every_sub_question_gets_a_sentence_when_the_evidence_allows(composer: ExtractiveComposer) -> None:
    evidence = [ev("bone", BONE, 1), ev("heart", HEART, 2), ev("marrow", MARROW, 3)]
    question = "Which cells break down old bone, and what is the pacemaker of the heart?"
    subs = ["Which cells break down old bone?", "What is the pacemaker of the heart?"]
    one = ExtractiveComposer(composer.embedder, max_sentences=1)
    assert len(one.compose(question, evidence)) == 1
    draft = one.compose(question, evidence, sub_questions=subs)
    # One place per sub-question at least, each answered by its best sentence, in the sub-questions' order.
    assert [(d.text, d.evidence_ids, d.sub_question) for d in draft] == [
        ("Osteoclasts break down old bone in a process called resorption.", ["bone"], 0),
        ("The sinoatrial node in the wall of the right atrium is the pacemaker of the heart.", ["heart"], 1),
    ]


def test_a_sub_question_the_evidence_cannot_answer_is_left_uncovered() -> None:
    evidence = [ev("bone", BONE, 1), ev("heart", HEART, 2)]
    subs = ["What is the pacemaker of the heart?", "Which enzyme digests lactose?"]
    draft = ExtractiveComposer(max_sentences=2).compose("pacemaker and lactose", evidence, sub_questions=subs)
    assert draft[0].sub_question == 0 and draft[0].evidence_ids == ["heart"]
    assert all(d.sub_question != 1 for d in draft)


def test_fill_sentences_are_grouped_under_their_sub_question() -> None:
    evidence = [ev("bone", BONE, 1), ev("heart", HEART, 2), ev("marrow", MARROW, 3)]
    subs = ["What do osteoclasts and osteoblasts do to bone?", "What is the pacemaker of the heart?"]
    draft = ExtractiveComposer(max_sentences=4, min_relative_score=0.0).compose(" ".join(subs), evidence, sub_questions=subs)
    assert len(draft) == 4
    groups = [d.sub_question for d in draft]
    assert groups == sorted(groups, key=lambda k: (k is None, k or 0))
    assert draft[0].sub_question == 0 and "Osteo" in draft[0].text
    assert any(d.sub_question == 1 and "sinoatrial" in d.text for d in draft)


def test_one_sub_question_is_the_single_question_case() -> None:
    evidence = [ev("bone", BONE, 1), ev("heart", HEART, 2), ev("marrow", MARROW, 3)]
    question = "Which cells break down old bone?"
    plain = ExtractiveComposer().compose(question, evidence)
    single = ExtractiveComposer().compose(question, evidence, sub_questions=[question])
    assert [(d.text, d.evidence_ids) for d in single] == [(d.text, d.evidence_ids) for d in plain]
    assert {d.sub_question for d in single} == {0} and {d.sub_question for d in plain} == {None}


def test_passages_that_say_the_same_are_merged_into_one_cited_sentence() -> None:
    a = Evidence("a", "Osteoclasts break down old bone in a process called resorption.", Citation("book.pdf", "a", page=7), 0.03)
    b = Evidence("b", "Osteoclasts break down the old bone by a process called resorption.", Citation("other.pdf", "b", page=2), 0.02)
    c = Evidence("c", "Resorption releases calcium from old bone into the blood.", Citation("book.pdf", "c", page=8), 0.02)
    # The next chunk of the same page repeats the sentence (chunk overlap): the same place, cited once.
    d = Evidence("d", "Osteoclasts break down old bone in a process called resorption. They are large cells.", Citation("book.pdf", "d", page=7), 0.01)
    draft = ExtractiveComposer(max_sentences=3, min_relative_score=0.0).compose("What breaks down old bone in resorption?", [a, b, c, d])
    osteo = [s for s in draft if "Osteoclasts" in s.text]
    assert len(osteo) == 1
    assert osteo[0].evidence_ids == ["a", "b"] and osteo[0].signals["merged"] == 1.0
    assert any(s.evidence_ids == ["c"] for s in draft)


def test_sub_questions_read_more_passages() -> None:
    evidence = [ev(f"filler{i}", f"Filler passage number {i} mentions nothing relevant here.") for i in range(3)]
    evidence.append(ev("late", "Osteoclasts break down old bone in a process called resorption.", 4))
    subs = ["What is filler?", "Which cells break down old bone?"]
    draft = ExtractiveComposer(evidence_limit=2).compose("filler and bone", evidence, sub_questions=subs)
    assert any(d.evidence_ids == ["late"] and d.sub_question == 1 for d in draft)


def test_questions_in_the_evidence_are_not_quoted_as_answers() -> None:
    quiz = ev("quiz", "Which hormone is released when blood calcium is low? a. calcitonin b. parathyroid hormone.", 9)
    fact = ev("fact", "Parathyroid hormone is released when blood calcium is low.", 3)
    draft = ExtractiveComposer(min_relative_score=0.0).compose("Which hormone is released when blood calcium is low?", [quiz, fact])
    assert [d.evidence_ids for d in draft] == [["fact"]]


def test_reference_numbers_in_quotes_do_not_look_like_citations() -> None:
    draft = ExtractiveComposer().compose("What breaks down old bone?", [ev("ref", "Osteoclasts break down old bone [12], [13-14].")])
    assert draft[0].text == "Osteoclasts break down old bone."
