"""End to end on a real OpenStax chapter with the real default embedder (all-MiniLM-L6-v2).

The bone chapter is ingested once per module (~20 s on a CPU); every dev question whose
gold PDF is that chapter is then asked. Measured when these bounds were set (CPU, MiniLM):
9 questions, 9/9 answered (none abstained), 7/9 with the first citation on a gold or
also-supported page (misses: tbq_dev_001 diploë -> p. 34 chapter summary, tbq_dev_007
femoral shaft -> p. 29 hip fracture); the off-topic question abstains with confidence 0.0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrag.agent.graph import ABSTAIN_TEXT, Agent
from medrag.config import load_settings
from medrag.ingest.pipeline import ingest

pytestmark = [pytest.mark.slow, pytest.mark.data]

CHAPTER = "openstax_ap2e_ch06_bone_tissue_and_the_skeletal_system.pdf"
MIN_ANSWERED = 0.85  # measured 9/9 = 1.00
MIN_FIRST_CITATION_ON_GOLD = 0.75  # measured 7/9 = 0.78


@pytest.fixture(scope="module")
def textbook(shared_data: Path) -> Path:
    folder = shared_data / "textbook"
    if not (folder / CHAPTER).is_file():
        pytest.skip(f"{CHAPTER} not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def questions(textbook: Path) -> list[dict]:
    rows = [json.loads(line) for line in (textbook / "questions_dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    chosen = [q for q in rows if q["gold_pdf"] == CHAPTER]
    assert len(chosen) >= 5, "too few dev questions for the bone chapter"
    return chosen


@pytest.fixture(scope="module")
def agent(textbook: Path, tmp_path_factory) -> Agent:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        for var in ("MEDRAG_HOME", "MEDRAG_CONFIG", "MEDRAG_EMBEDDER", "MEDRAG_TOP_K", "MEDRAG_ABSTAIN_BELOW"):
            mp.delenv(var, raising=False)
        from medrag.embed.text import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
        settings = load_settings(home=str(tmp_path_factory.mktemp("medrag-home")), progress=False)
        report = ingest([textbook / CHAPTER], index_name="bone", embedder=embedder, settings=settings)
        assert report.added == [CHAPTER] and report.total_chunks > 100
        yield Agent.from_index("bone", settings=settings, embedder=embedder)


@pytest.fixture(scope="module")
def answers(agent: Agent, questions: list[dict]) -> dict[str, object]:
    return {q["qid"]: agent.ask(q["question"]) for q in questions}


def _first_page(answer) -> int | None:
    return answer.citations[0].page if answer.citations else None


def test_most_questions_are_answered(questions, answers) -> None:
    answered = [q["qid"] for q in questions if not answers[q["qid"]].abstained]
    rate = len(answered) / len(questions)
    abstained = [q["qid"] for q in questions if answers[q["qid"]].abstained]
    assert rate >= MIN_ANSWERED, f"answered {len(answered)}/{len(questions)}; abstained on {abstained}"
    for qid in answered:
        answer = answers[qid]
        assert answer.citations and "[1]" in answer.text
        assert all(c.source == CHAPTER and c.page is not None for c in answer.citations)


def test_first_citation_is_on_a_gold_page(questions, answers) -> None:
    hits, misses = 0, []
    for q in questions:
        page = _first_page(answers[q["qid"]])
        if page in set(q["gold_pages"]) | set(q.get("also_supported_pages") or []):
            hits += 1
        else:
            misses.append((q["qid"], page, q["gold_pages"]))
    rate = hits / len(questions)
    assert rate >= MIN_FIRST_CITATION_ON_GOLD, f"first citation on a gold page for {hits}/{len(questions)}; misses {misses}"


def test_answers_follow_the_contract(questions, answers) -> None:
    for q in questions:
        data = json.loads(answers[q["qid"]].to_json())
        assert {"answer", "abstained", "confidence", "citations", "trace"} <= set(data)
        assert 0.0 <= data["confidence"] <= 1.0
        steps = [t["step"] for t in data["trace"]]
        assert steps[:3] == ["intake", "plan", "act"] and steps[-2:] == ["compose", "verify"]
        assert 1 <= data["rounds"] <= 3 and data["sub_questions"]
        assert all({"n", "source", "page", "chunk_id", "score"} <= set(c) for c in data["citations"])


def test_off_topic_question_abstains(agent: Agent) -> None:
    answer = agent.ask("What is the capital of France?")
    assert answer.abstained
    assert answer.text == ABSTAIN_TEXT and answer.citations == []


def test_figure_question_cites_the_caption(agent: Agent, questions) -> None:
    figure_qs = [q for q in questions if q.get("gold_figure")]
    assert figure_qs
    for q in figure_qs:
        answer = agent.ask(q["question"])
        assert not answer.abstained
        assert answer.citations[0].page in q["gold_pages"]
        assert answer.citations[0].locator.get("figure") == q["gold_figure"], (q["qid"], answer.citations[0])


def test_diploe_answer_names_it_and_cites_page_9_or_32(agent: Agent, questions) -> None:
    (q,) = [q for q in questions if q["answer"].lower().startswith("diplo")]
    answer = agent.ask(q["question"])
    assert not answer.abstained
    assert {c.page for c in answer.citations} & {9, 32}, [c.page for c in answer.citations]
    assert "diplo" in answer.text.lower(), answer.text
