"""`medrag mcp`: an MCP client session talks to the server over stdio (a real subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed: pip install 'medrag[mcp]'")

from conftest import write_medical_pdf  # noqa: E402


@pytest.fixture
def indexed_home(home, tmp_path):
    from medrag.config import load_settings
    from medrag.ingest.pipeline import ingest
    from medrag.testing.fakes import HashingEmbedder

    settings = load_settings(embedder="hashing:256", progress=False)
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf", ("bone", "heart", "marrow"))
    ingest([pdf], index_name="anatomy", embedder=HashingEmbedder(256), settings=settings, progress=False)
    return home


def _payload(result) -> dict:
    """The JSON a tool returned: structured content when the SDK gives it, else the text block."""
    structured = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
    if structured:
        return structured.get("result", structured) if set(structured) == {"result"} else structured
    return json.loads(result.content[0].text)


async def _session_calls(home) -> dict:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    env = {**os.environ, "MEDRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "medrag.cli", "mcp", "--index", "anatomy"], env=env)
    out: dict = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            out["tools"] = {t.name: (getattr(t, "input_schema", None) or getattr(t, "inputSchema", None)) for t in listed.tools}
            out["search"] = _payload(await session.call_tool("search", {"query": "osteoblasts form new bone", "k": 2}))
            out["ask"] = _payload(await session.call_tool("ask", {"question": "What is compact bone?"}))
            out["indexes"] = _payload(await session.call_tool("list_indexes", {}))
            out["bad"] = await session.call_tool("search", {"query": "bone", "index": "nope"})
    return out


@pytest.mark.slow
def test_an_mcp_client_lists_and_calls_medrag_tools(indexed_home):
    out = asyncio.run(asyncio.wait_for(_session_calls(indexed_home), timeout=120))
    tools = out["tools"]
    assert {"search", "ask", "list_indexes"} <= set(tools)
    assert tools["search"]["required"] == ["query"] and tools["search"]["properties"]["k"]["type"] == "integer"
    assert "zoom_region" in tools and "image" in tools["zoom_region"]["required"]  # expert tools with their schema
    hits = out["search"]["hits"]
    assert 1 <= len(hits) <= 2 and hits[0]["citation"]["source"] == "anatomy.pdf"
    assert out["ask"]["citations"] and "compact bone" in out["ask"]["answer"].lower()
    assert [i["name"] for i in out["indexes"]["indexes"]] == ["anatomy"]
    bad = out["bad"]
    assert getattr(bad, "is_error", None) or getattr(bad, "isError", None)
    assert "unknown index" in bad.content[0].text


def test_expert_tool_schemas_follow_declared_inputs(indexed_home):
    from medrag.config import load_settings
    from medrag.integrations.mcp import build_mcp_server
    from medrag.server.service import MedragService, ServerConfig

    server = build_mcp_server(MedragService(ServerConfig(index="anatomy"), load_settings()))
    tools = {t.name: t for t in asyncio.run(server.list_tools())}
    schema = getattr(tools["zoom_region"], "input_schema", None) or tools["zoom_region"].inputSchema
    assert schema["properties"]["box"]["type"] == "array"
    assert "description" in schema["properties"]["box"]
