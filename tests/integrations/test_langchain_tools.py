"""medrag tools called through langchain-core's tool interface."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("langchain_core", reason="the langchain extra is not installed: pip install 'medrag[langchain]'")

from conftest import write_medical_pdf  # noqa: E402
from langchain_core.tools import BaseTool  # noqa: E402


@pytest.fixture
def settings(home, tmp_path):
    from medrag.config import load_settings
    from medrag.ingest.pipeline import ingest
    from medrag.testing.fakes import HashingEmbedder

    settings = load_settings(embedder="hashing:256", progress=False)
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf", ("bone", "heart", "marrow"))
    ingest([pdf], index_name="anatomy", embedder=HashingEmbedder(256), settings=settings, progress=False)
    return settings


@pytest.fixture
def agent(settings):
    from medrag.agent.graph import Agent
    from medrag.server.service import load_tools

    load_tools()
    return Agent.from_index("anatomy", settings=settings)


def test_an_agent_becomes_langchain_tools_that_answer_with_citations(agent):
    from medrag.integrations.langchain import as_tools

    tools = {t.name: t for t in as_tools(agent)}
    assert all(isinstance(t, BaseTool) for t in tools.values())
    assert "medrag_ask" in tools and "search_text" in tools
    answer = json.loads(tools["medrag_ask"].invoke({"question": "What is compact bone?"}))
    assert answer["citations"] and "compact bone" in answer["answer"].lower() and "trace" not in answer
    # A tool call as a chat model emits it: the ToolMessage carries the result.
    message = tools["search_text"].invoke({"type": "tool_call", "id": "call-1", "name": "search_text", "args": {"query": "osteoblasts", "k": 2}})
    assert message.tool_call_id == "call-1"
    found = json.loads(message.content)
    assert found["tool"] == "search_text" and 1 <= len(found["evidence"]) <= 2
    schema = tools["search_text"].tool_call_schema.model_json_schema()
    assert schema["required"] == ["query"] and "where" in schema["properties"]


def test_errors_come_back_as_text_the_calling_model_reads(agent):
    from medrag.integrations.langchain import as_tools

    ask = as_tools(agent)[0]
    assert "EmptyQueryError" in ask.invoke({"question": "   "})


def test_a_service_gives_ask_and_search_over_any_index(settings):
    from medrag.integrations.langchain import as_tools
    from medrag.server.service import MedragService, ServerConfig

    ask, search = as_tools(MedragService(ServerConfig(index="anatomy"), settings))
    assert (ask.name, search.name) == ("medrag_ask", "medrag_search")
    hits = json.loads(search.invoke({"query": "sinoatrial node", "k": 1}))["hits"]
    assert len(hits) == 1 and "sinoatrial" in hits[0]["text"].lower()
    assert "IndexNotFound" in search.invoke({"query": "bone", "index": "nope"})


def test_a_registry_gives_the_tools_that_need_no_arguments():
    from medrag.integrations.langchain import as_tools
    from medrag.server.service import load_tools

    names = {t.name for t in as_tools(load_tools())}
    assert "zoom_region" in names and "search_text" not in names  # search needs an index
