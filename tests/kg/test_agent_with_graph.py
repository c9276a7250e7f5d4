"""The agent with a knowledge graph beside its text index: graph facts are evidence cited by node."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import build_text_index, write_medical_pdf
from kg_samples import build_tiny
from medrag.agent.compose import ExtractiveComposer
from medrag.agent.graph import Agent
from medrag.agent.verify import SupportVerifier
from medrag.config import Settings
from medrag.index.hybrid import HybridRetriever
from medrag.testing import HashingEmbedder
from medrag.tools.kg_lookup import KgLookupTool
from medrag.tools.retrieval import TextSearchTool


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Agent:
    folder = tmp_path_factory.mktemp("agent")
    embedder = HashingEmbedder(256)
    index = build_text_index("notes", [write_medical_pdf(folder / "anatomy.pdf")], embedder)
    settings = Settings(home=str(folder))
    settings.agent.abstain_below = 0.3
    return Agent(
        TextSearchTool(HybridRetriever(index, embedder)),
        ExtractiveComposer(embedder),
        SupportVerifier(embedder),
        settings,
        graph_tool=KgLookupTool(build_tiny(folder)),
        embedder=embedder,
    )


def round_one(answer):
    return [step for step in answer.trace if step.node == "act" and step.round == 1]


def test_graph_runs_beside_retrieval_and_its_definition_is_cited(agent: Agent) -> None:
    answer = agent.ask("What is arachnodactyly?")
    assert [step.node for step in answer.trace[:2]] == ["intake", "plan"]
    assert sorted(step.tool for step in round_one(answer)) == ["kg_lookup", "search_text"]
    graph_call = next(step for step in round_one(answer) if step.tool == "kg_lookup")
    assert graph_call.inputs["operation"] == "define"
    assert [step.node for step in answer.trace[-2:]] == ["compose", "verify"]
    assert not answer.abstained
    assert "slender fingers" in answer.text.lower()
    node_citations = [c for c in answer.citations if c.locator.get("node_id") == "HP:0001166"]
    assert node_citations and node_citations[0].source.endswith(".obo")


def test_graph_failure_is_a_recorded_step_not_a_crash(agent: Agent) -> None:
    answer = agent.ask("Which cells break down old bone?")  # no graph concept in it
    graph_step = next(step for step in answer.trace if step.tool == "kg_lookup")
    assert graph_step.details["ok"] is False and graph_step.summary.startswith("failed:")
    assert not answer.abstained and all(c.source == "anatomy.pdf" for c in answer.citations)


def test_differential_question_ranks_diseases_from_phenotypes(agent: Agent) -> None:
    answer = agent.ask("What is the differential diagnosis for arachnodactyly and ectopia lentis?")
    call = next(step for step in round_one(answer) if step.tool == "kg_lookup")
    assert call.inputs["operation"] == "diseases"
    assert call.details["ok"] is True
    graph_evidence = call.details["evidence"]
    assert graph_evidence and any("154700" in e for e in graph_evidence)  # Marfan syndrome ranks


def test_relation_question_asks_for_a_path(agent: Agent) -> None:
    answer = agent.ask("What is the relationship between Marfan syndrome and arachnodactyly?")
    call = next(step for step in round_one(answer) if step.tool == "kg_lookup")
    assert call.inputs == {"operation": "path", "text": "Marfan syndrome", "target": "arachnodactyly"}
    assert call.details["ok"] is True and call.details["evidence"]


def test_compiled_graph_is_the_same_with_a_graph_tool(agent: Agent) -> None:
    drawn = agent.graph.get_graph()
    edges = {(e.source, e.target) for e in drawn.edges}
    assert {("intake", "plan"), ("plan", "act"), ("act", "rethink"), ("rethink", "act"), ("rethink", "compose")} <= edges
    assert sorted(agent.tools) == ["kg_lookup", "search_text"]


def test_unknown_graph_name_fails_before_any_question(tmp_path: Path, monkeypatch) -> None:
    from medrag.errors import GraphNotFound

    monkeypatch.setenv("MEDRAG_HOME", str(tmp_path))
    with pytest.raises(GraphNotFound):
        Agent.from_config({"graph": "missing"})
