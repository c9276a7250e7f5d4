"""The kg_lookup agent tool: declared inputs, cited results, errors as failed results."""

from __future__ import annotations

import pytest

from kg_samples import build_tiny, write_recipe
from medrag.kg.build import build_recipe
from medrag.registry import tools
from medrag.tools.base import Tool
from medrag.tools.kg_lookup import KgLookupTool


@pytest.fixture(scope="module")
def tool(tmp_path_factory):
    return KgLookupTool(build_tiny(tmp_path_factory.mktemp("src")))


def test_registered_and_declared(tool):
    assert tools.get("kg_lookup") is KgLookupTool
    assert isinstance(tool, Tool)
    assert tool.inputs["operation"]["required"] is True
    assert set(tool.inputs) == {"operation", "text", "node_id", "target", "relation", "direction", "k"}
    assert tool.modalities == frozenset({"text"})


def test_define_by_text_and_by_id(tool):
    by_text = tool(operation="define", text="spider fingers")
    by_id = tool(operation="define", node_id="HP:0001166")
    assert by_text.ok and by_id.ok
    assert by_text.evidence[0].text == by_id.evidence[0].text
    assert by_text.evidence[0].kind == "graph" and by_text.evidence[0].citation.chunk_id == "HP:0001166"
    assert by_text.output == {"operation": "define", "node_id": "HP:0001166"}


def test_neighbours(tool):
    result = tool(operation="neighbours", node_id="OMIM:154700", relation="has_phenotype", k=2)
    assert result.ok and len(result.evidence) == 2
    assert all(e.citation.locator["relation"] == "has_phenotype" for e in result.evidence)


def test_diseases_from_text(tool):
    result = tool(operation="diseases", text="tall stature, arachnodactyly, ectopia lentis", k=2)
    assert result.ok
    assert result.output["phenotypes"] == ["HP:0000098", "HP:0001166", "HP:0001083"]
    assert result.output["diseases"][0]["id"] == "OMIM:154700"
    assert result.evidence[0].citation.chunk_id == "OMIM:154700"


def test_diseases_from_ids(tool):
    result = tool(operation="diseases", node_id="HP:0001662, HP:0001166")
    assert result.ok and result.output["diseases"][0]["id"] == "OMIM:236200"


def test_path(tool):
    result = tool(operation="path", node_id="DOID:14323", target="lens dislocation")
    assert result.ok
    assert result.output["path"].endswith("—has_phenotype→ Ectopia lentis (HP:0001083)")
    assert len(result.evidence) == 2


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"operation": "explode", "text": "x"}, "operation must be one of"),
        ({"operation": "define", "node_id": "HP:404"}, "UnknownNode"),
        ({"operation": "define", "text": "qqq zzz"}, "no knowledge-graph concept"),
        ({"operation": "define"}, "give 'text' or 'node_id'"),
        ({"operation": "path", "text": "ASD"}, "needs 'target'"),
        ({"operation": "diseases", "text": "Marfan syndrome"}, "no phenotype"),
        ({"text": "ASD"}, "missing ['operation']"),
        ({"operation": "define", "query": "ASD"}, "unknown inputs ['query']"),
    ],
)
def test_errors_become_failed_results(tool, inputs, message):
    result = tool(**inputs)
    assert not result.ok and message in result.error
    assert result.evidence == []


def test_opens_a_named_graph_lazily(tmp_path, monkeypatch):
    home = tmp_path / "home"
    build_recipe(write_recipe(tmp_path / "r"), home=home)
    monkeypatch.setenv("MEDRAG_HOME", str(home))
    monkeypatch.delenv("MEDRAG_CONFIG", raising=False)
    tool = KgLookupTool(graph="tiny")
    assert tool.kg is None  # nothing loaded before the first call
    assert tool(operation="define", node_id="HP:0001631").ok
    missing = KgLookupTool(graph="nope")(operation="define", node_id="HP:0001631")
    assert not missing.ok and "GraphNotFound" in missing.error
