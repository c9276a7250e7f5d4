"""medrag as an MCP server (`medrag mcp`, stdio), so other agents and desktop assistants can call it.

MCP tools, each with a JSON schema built from its typed signature:

- ``search``         cited passages of an index for a query
- ``ask``            a cited answer (the JSON of ``medrag ask --json``)
- ``list_indexes``   the indexes available
- ``kg_lookup``      knowledge-graph operations (when the server has a graph)
- every registered expert image tool (``segment_lungs_xray``, ``zoom_region`` ...)
  with its declared inputs; ``image`` is a path on this machine.

Needs the official SDK: pip install "medrag[mcp]" (works with mcp 1.x FastMCP and 2.x MCPServer).
"""

from __future__ import annotations

import inspect
import logging
from typing import Annotated, Any

from pydantic import Field

from medrag.errors import MedragError, require
from medrag.server.service import MedragService, jsonable

log = logging.getLogger(__name__)
JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}
INSTRUCTIONS = (
    "medrag answers medical questions from indexed sources (textbooks, ontologies, reports) and cites every "
    "sentence. Use `search` for passages, `ask` for a verified cited answer, image tools for measurements on a "
    "local image file. Not a medical device: findings need clinical confirmation."
)


def _server_class():
    require("mcp", extra="mcp", purpose="medrag mcp")
    try:
        from mcp.server.mcpserver import MCPServer  # mcp >= 2

        return MCPServer
    except ImportError:  # mcp 1.x
        from mcp.server.fastmcp import FastMCP

        return FastMCP


def _sdk_tool_error() -> type[Exception]:
    """The SDK's ToolError: raised for anticipated failures, its text reaches the client."""
    try:
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:  # mcp 1.x
        from mcp.server.fastmcp.exceptions import ToolError
    return ToolError


def _reported(fn):
    """Run ``fn``; a medrag error becomes a tool error whose message the calling model can read."""
    import functools

    error = _sdk_tool_error()

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MedragError as exc:
            from medrag.server.service import error_status

            raise error(f"{error_status(exc)[1]}: {exc}") from exc

    return call


def tool_result_dict(result) -> dict[str, Any]:
    """A medrag ToolResult as plain JSON (evidence with citations, outputs, error)."""
    return jsonable({
        "tool": result.tool,
        "ok": result.ok,
        "error": result.error,
        "evidence": [e.to_dict() for e in result.evidence],
        "output": result.output,
    })


def _function_for(tool) -> Any:
    """A Python function whose signature mirrors the tool's declared inputs (the SDK derives the JSON schema from it)."""
    params = []
    for name, spec in tool.inputs.items():
        kind = JSON_TYPES.get(str(spec.get("type", "string")), Any)
        default = inspect.Parameter.empty if spec.get("required") else None
        annotation = kind if default is inspect.Parameter.empty else (kind | None if kind is not Any else Any)
        if spec.get("description"):
            annotation = Annotated[annotation, Field(description=str(spec["description"]))]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)  # required first

    def call(**inputs: Any) -> dict[str, Any]:
        inputs = {k: v for k, v in inputs.items() if v is not None}
        return tool_result_dict(tool(**inputs))

    call.__signature__ = inspect.Signature(params, return_annotation=dict)  # type: ignore[attr-defined]
    call.__name__ = tool.name
    call.__doc__ = tool.description
    return call


def expert_tools(service: MedragService) -> list[Any]:
    """Instances of the registered tools that need no constructor arguments (image tools), plus kg_lookup."""
    from medrag.server.service import load_tools

    registry = load_tools()
    found = []
    for name in registry.names():
        factory = registry.get(name)
        if "image" not in getattr(factory, "inputs", {}):
            continue
        try:
            found.append(factory())
        except Exception as exc:  # noqa: BLE001 - needs arguments, or an optional extra is missing
            log.info("MCP: tool %s not exposed (%s: %s)", name, type(exc).__name__, exc)
    if service.config.graph:
        from medrag.kg.graph import open_graph
        from medrag.tools.kg_lookup import KgLookupTool

        tool = KgLookupTool(open_graph(service.config.graph))
        tool.name = "kg_lookup"
        found.append(tool)
    return found


def build_mcp_server(service: MedragService):
    """An MCP server (not started) exposing medrag's search, ask, graph and expert tools."""
    cls = _server_class()
    try:
        server = cls("medrag", instructions=INSTRUCTIONS, log_level="WARNING")
    except TypeError:  # pragma: no cover - an SDK without log_level
        server = cls("medrag", instructions=INSTRUCTIONS)

    def search(query: str, index: str | None = None, k: int = 5, mode: str = "hybrid") -> dict[str, Any]:
        """Search an index for passages (hybrid dense + BM25 by default; mode dense or bm25). Returns cited passages."""
        return service.search(index, query, k=k, mode=mode)

    def ask(question: str, index: str | None = None, thread_id: str | None = None) -> dict[str, Any]:
        """Answer a medical question from an index: each sentence cites numbered sources; abstains when evidence is thin."""
        answer = service.ask(question, index=index, thread_id=thread_id)
        answer.pop("trace", None)  # long; the answer, citations, confidence and notes are what a caller reads
        return answer

    def list_indexes() -> dict[str, Any]:
        """The indexes this server can search, with their size and embedder."""
        return {"indexes": service.indexes(), "default": service.config.index}

    for fn in (search, ask, list_indexes):
        server.add_tool(_reported(fn), name=fn.__name__, description=fn.__doc__)
    for tool in expert_tools(service):
        try:
            server.add_tool(_function_for(tool), name=tool.name, description=tool.description)
        except Exception as exc:  # noqa: BLE001 - one odd tool must not stop the server
            log.warning("MCP: could not expose tool %s: %s", tool.name, exc)
    return server
