"""The agent graph retrieve -> compose -> verify: cited answers, abstention, failures, the JSON contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import build_text_index, write_medical_pdf
from medrag.agent.compose import ExtractiveComposer
from medrag.agent.graph import ABSTAIN_TEXT, Agent
from medrag.agent.verify import SupportVerifier
from medrag.config import AgentSettings, Settings
from medrag.errors import EmptyQueryError, IndexNotFound, IndexStoreError, ToolError
from medrag.index.hybrid import HybridRetriever
from medrag.index.text_index import IndexStore
from medrag.tools.base import BaseTool, Tool
from medrag.tools.retrieval import TextSearchTool
from medrag.types import Answer, ToolResult

CITE = re.compile(r"\[(\d+)\]")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # These tests are about the graph, not calibration: with the hashing embedder an on-topic
    # answer scores about 0.5 or more and an off-topic one about 0.2 or less, so the threshold
    # is pinned between them. The real embedder's calibration is checked in tests/integration.
    return Settings(home=tmp_path / "home", progress=False, agent=AgentSettings(abstain_below=0.3))


def make_agent(tool: Tool, embedder, settings: Settings) -> Agent:
    return Agent(
        tool,
        ExtractiveComposer(embedder, max_sentences=settings.agent.max_sentences),
        SupportVerifier(embedder, min_support=settings.agent.min_support),
        settings,
    )


@pytest.fixture
def agent(anatomy_index, hashing_embedder, settings) -> Agent:
    return make_agent(TextSearchTool(HybridRetriever(anatomy_index, hashing_embedder, settings.retrieval)), hashing_embedder, settings)


def assert_citations_consistent(answer: Answer) -> None:
    numbers = [int(n) for n in CITE.findall(answer.text)]
    assert numbers, answer.text
    assert set(numbers) == set(range(1, len(answer.citations) + 1))
    assert sorted({n for s in answer.sentences for n in s.citations}) == list(range(1, len(answer.citations) + 1))
    for sentence in answer.sentences:
        assert sentence.text in answer.text
        marks = "".join(f"[{n}]" for n in sentence.citations)
        assert f"{sentence.text} {marks}" in answer.text
    assert len({c.chunk_id for c in answer.citations}) == len(answer.citations)


def test_on_topic_question_is_answered_with_numbered_citations(agent: Agent, anatomy_index) -> None:
    answer = agent.ask("Which cells break down old bone?")
    assert not answer.abstained
    assert answer.question == "Which cells break down old bone?"
    assert "Osteoclasts break down old bone in a process called resorption." in answer.text
    assert_citations_consistent(answer)
    first = answer.citations[0]
    assert first.source == "anatomy.pdf" and first.page == 1
    assert "Osteoclasts" in anatomy_index.chunks[first.chunk_id].text
    assert first.bbox == anatomy_index.chunks[first.chunk_id].bbox
    assert agent.settings.agent.abstain_below <= answer.confidence <= 1.0
    assert all(s.support >= agent.settings.agent.min_support for s in answer.sentences)
    assert 1 <= len(answer.sentences) <= agent.settings.agent.max_sentences


def test_another_on_topic_question(agent: Agent) -> None:
    answer = agent.ask("What is the pacemaker of the heart?")
    assert not answer.abstained
    assert answer.text.startswith("The sinoatrial node")
    assert answer.citations[0].page == 2
    assert_citations_consistent(answer)


def nodes(answer: Answer) -> list[str]:
    return [t.node for t in answer.trace]


def test_trace_has_the_steps_in_order_with_durations(agent: Agent) -> None:
    answer = agent.ask("Which cells break down old bone?")
    assert nodes(answer) == ["intake", "plan", "act", "rethink", "compose", "verify"]
    assert all(isinstance(t.duration_s, float) and t.duration_s >= 0 for t in answer.trace)
    assert sum(t.duration_s for t in answer.trace) > 0
    intake, plan, retrieve, rethink, compose, verify = answer.trace
    assert plan.details["sub_questions"] == ["Which cells break down old bone?"]
    assert retrieve.details["ok"] is True and retrieve.tool == "search_text"
    assert retrieve.inputs == {"query": "Which cells break down old bone?"}
    assert retrieve.summary.startswith(f"{len(retrieve.details['evidence'])} evidence (")
    assert {c.chunk_id for c in answer.citations} <= set(retrieve.details["evidence"])
    assert rethink.details["decision"] == "enough evidence for every sub-question"
    assert answer.rounds == 1 and answer.sub_questions == ["Which cells break down old bone?"]
    assert [s.text for s in answer.sentences] == [s for s in compose.details["sentences"] if s not in verify.details["dropped"]]
    assert verify.summary.startswith("answered")
    assert verify.details["threshold"] == agent.settings.agent.abstain_below
    assert all(0.0 <= v <= 1.0 for v in verify.details["signals"].values()), verify.details["signals"]


@pytest.mark.parametrize("question", ["What is the capital of France?", "Who won the football world cup in 1998?"])
def test_off_topic_question_abstains(agent: Agent, question: str) -> None:
    answer = agent.ask(question)
    assert answer.abstained
    assert answer.text == ABSTAIN_TEXT
    assert answer.citations == [] and answer.sentences == []
    assert answer.confidence < agent.settings.agent.abstain_below
    assert nodes(answer)[:3] == ["intake", "plan", "act"] and nodes(answer)[-2:] == ["compose", "verify"]
    # Thin evidence: it searched again with other words, then stopped with nothing new to try.
    assert answer.rounds >= 2
    rethinks = [t for t in answer.trace if t.node == "rethink"]
    assert rethinks[0].details["next"][0]["why"] == "evidence thin: search again with other words"
    assert rethinks[-1].details["decision"].startswith("stop")
    assert answer.trace[-1].summary.startswith("abstained")
    assert "Sources:" not in answer.format() and "(abstained)" in answer.format()


class OfflineSearch:
    """A Tool (protocol, not BaseTool) that reports a failure instead of raising."""

    name = "search_text"
    description = "always fails"
    modalities = frozenset({"text"})
    inputs: dict[str, dict[str, Any]] = {"query": {"type": "string", "required": True}}

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def setup(self) -> None:
        pass

    def __call__(self, **inputs: Any) -> ToolResult:
        self.calls.append(inputs)
        return ToolResult(tool=self.name, ok=False, error="IndexCorrupt: index 'anatomy' is unreadable")


class RaisingSearch(BaseTool):
    """A BaseTool whose run raises ToolError: BaseTool turns it into a failed result."""

    name = "broken_search"
    description = "raises"
    inputs = {"query": {"type": "string", "required": True}, "where": {"type": "object"}}

    def run(self, query: str, where=None) -> ToolResult:
        raise ToolError("the search backend timed out")


@pytest.mark.parametrize(
    ("tool", "name", "message"),
    [
        (OfflineSearch(), "search_text", "IndexCorrupt: index 'anatomy' is unreadable"),
        (RaisingSearch(), "broken_search", "ToolError: the search backend timed out"),
    ],
    ids=["ok-false", "run-raises"],
)
def test_failing_search_tool_abstains_and_records_the_failure(tool, name, message, hashing_embedder, settings) -> None:
    assert isinstance(tool, Tool)
    agent = make_agent(tool, hashing_embedder, settings)
    answer = agent.ask("Which cells break down old bone?")
    assert answer.abstained
    assert answer.text == ABSTAIN_TEXT and answer.citations == []
    assert answer.confidence == 0.0
    retrieve = answer.trace[2]
    assert retrieve.node == "act" and retrieve.details["ok"] is False and retrieve.tool == name
    assert retrieve.details["evidence"] == []
    assert retrieve.summary == f"failed: {message}"
    assert answer.trace[-2].summary == "0 sentences drafted (extractive)"
    assert json.loads(answer.to_json())["trace"][2]["details"]["ok"] is False


def test_base_tool_rejects_unknown_inputs_as_a_failed_result() -> None:
    result = RaisingSearch()(query="bone", colour="red")
    assert not result.ok and "unknown inputs ['colour']" in result.error
    result = RaisingSearch()()
    assert not result.ok and "missing ['query']" in result.error
    assert result.duration_s >= 0


@pytest.mark.parametrize("question", ["", "   ", "\n"])
def test_empty_question_is_an_error(agent: Agent, question: str) -> None:
    with pytest.raises(EmptyQueryError):
        agent.ask(question)


def test_answer_json_matches_the_contract(agent: Agent) -> None:
    answer = agent.ask("  Which cells break down old bone?  ")
    data = json.loads(answer.to_json())
    assert data["question"] == "Which cells break down old bone?"  # stripped
    assert isinstance(data["answer"], str) and data["answer"] == answer.text
    assert data["abstained"] is False
    assert isinstance(data["confidence"], float) and 0.0 <= data["confidence"] <= 1.0
    assert data["confidence"] == round(answer.confidence, 4)
    assert [c["n"] for c in data["citations"]] == list(range(1, len(answer.citations) + 1))
    for c in data["citations"]:
        assert {"n", "source", "page", "chunk_id", "score", "bbox", "title", "locator"} <= set(c)
        assert isinstance(c["source"], str) and isinstance(c["chunk_id"], str)
        assert isinstance(c["page"], int) and isinstance(c["score"], float)
        assert isinstance(c["bbox"], list) and len(c["bbox"]) == 4
    assert all(set(s) == {"text", "citations", "support"} for s in data["sentences"])
    assert [t["step"] for t in data["trace"]] == ["intake", "plan", "act", "rethink", "compose", "verify"]
    assert data["rounds"] == 1 and data["sub_questions"] == ["Which cells break down old bone?"]
    for step in data["trace"]:
        assert {"step", "tool", "inputs", "outputs_summary", "ms"} <= set(step)
        assert isinstance(step["ms"], float) and step["ms"] >= 0
    act = data["trace"][2]
    assert act["tool"] == "search_text" and act["inputs"] == {"query": "Which cells break down old bone?"}
    for n in (int(x) for x in CITE.findall(data["answer"])):
        assert data["citations"][n - 1]["n"] == n

    abstained = json.loads(agent.ask("What is the capital of France?").to_json())
    assert abstained["abstained"] is True and abstained["citations"] == [] and abstained["answer"] == ABSTAIN_TEXT


def test_format_lists_numbered_sources(agent: Agent) -> None:
    text = agent.ask("Which cells break down old bone?").format()
    assert "\nSources:\n  [1] Notes on Anatomy, p. 1" in text
    assert "(anatomy.pdf; score " in text
    assert re.search(r"\nConfidence: \d\.\d\d\n", text)
    assert "\nNote: " in text and "confirm" in text  # the safety note is printed, not only in JSON


def test_where_filter_reaches_the_search_tool(tmp_path: Path, hashing_embedder, settings) -> None:
    pdfs = [
        write_medical_pdf(tmp_path / "anatomy.pdf", ("bone", "heart")),
        write_medical_pdf(tmp_path / "marrow.pdf", ("marrow",), title="Marrow"),
    ]
    index = build_text_index("two", pdfs, hashing_embedder)
    agent = make_agent(TextSearchTool(HybridRetriever(index, hashing_embedder)), hashing_embedder, settings)
    question = "Which bones hold red marrow?"
    unfiltered = agent.ask(question)
    assert "marrow.pdf" in {c.source for c in unfiltered.citations}
    assert "flat bones" in unfiltered.text
    filtered = agent.ask(question, where={"source": "anatomy.pdf"})
    assert all(step.inputs["where"] == {"source": "anatomy.pdf"} for step in filtered.trace if step.node == "act")
    assert not filtered.abstained and filtered.citations
    assert {c.source for c in filtered.citations} == {"anatomy.pdf"}
    assert "trabeculae hold red marrow" in filtered.text


def test_each_question_starts_from_fresh_state(agent: Agent) -> None:
    first = agent.ask("Which cells break down old bone?")
    second = agent.ask("What is the pacemaker of the heart?")
    assert len(second.trace) == 6 and second.trace[0].details["turn"] == 1
    assert {c.chunk_id for c in first.citations}.isdisjoint({c.chunk_id for c in second.citations})
    many = agent.ask_many(["Which cells break down old bone?", "What is the capital of France?"])
    assert [a.abstained for a in many] == [False, True]
    assert many[0].text == first.text


def test_from_index(anatomy_index, hashing_embedder, settings) -> None:
    IndexStore(settings.indexes_dir).save(anatomy_index)
    agent = Agent.from_index("anatomy", settings=settings, embedder=hashing_embedder)
    answer = agent.ask("Which cells break down old bone?")
    assert not answer.abstained and answer.citations[0].page == 1
    # Without an embedder the one named in the manifest is rebuilt (hashing:256 here).
    rebuilt = Agent.from_index("anatomy", settings=settings)
    assert rebuilt.ask("Which cells break down old bone?").text == answer.text
    with pytest.raises(IndexNotFound):
        Agent.from_index("missing", settings=settings)
    with pytest.raises(IndexStoreError):
        from medrag.testing.fakes import HashingEmbedder

        Agent.from_index("anatomy", settings=settings, embedder=HashingEmbedder(dim=64))


EXPECTED_NODES = ["__end__", "__start__", "act", "compose", "intake", "plan", "rethink", "verify"]
EXPECTED_EDGES = [
    ("__start__", "intake", False),
    ("act", "rethink", False),
    ("compose", "verify", False),
    ("intake", "plan", False),
    ("plan", "act", True),
    ("plan", "compose", True),
    ("rethink", "act", True),
    ("rethink", "compose", True),
    ("verify", "__end__", False),
]


def test_graph_structure_snapshot(agent: Agent) -> None:
    graph = agent.graph.get_graph()
    assert sorted(graph.nodes) == EXPECTED_NODES
    assert sorted((e.source, e.target, e.conditional) for e in graph.edges) == EXPECTED_EDGES
