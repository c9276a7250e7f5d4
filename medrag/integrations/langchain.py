"""medrag as LangChain tools (langchain-core ``BaseTool``): pip install "medrag[langchain]".

>>> from medrag.integrations.langchain import as_tools           # doctest: +SKIP
>>> tools = as_tools(Agent.from_index("textbook"))               # doctest: +SKIP
>>> tools[0].invoke({"question": "What is compact bone?"})        # doctest: +SKIP

``as_tools`` accepts an Agent (its ``ask`` plus the tools it uses), a server
``MedragService`` (ask and search over any index), medrag Tool instances, or
a tool Registry (every tool that can be built without arguments). Tools
return JSON text: the answer of ``medrag ask --json`` or a ToolResult with its
cited evidence; medrag errors come back as ``ToolException`` text the calling
agent can read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Optional

from medrag.errors import InputError, MedragError, require

require("langchain_core", package="langchain-core", extra="langchain", purpose="medrag's LangChain tools")

from langchain_core.tools import BaseTool, ToolException  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, create_model  # noqa: E402

from medrag.server.service import MedragService  # noqa: E402  (no FastAPI needed)

JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class AskInput(BaseModel):
    question: str = Field(..., description="the medical question to answer from the indexed sources")
    thread_id: Optional[str] = Field(None, description="conversation id; follow-up questions in one thread share history")


class SearchInput(BaseModel):
    query: str = Field(..., description="what to look for")
    index: Optional[str] = Field(None, description="index name (default: the server's)")
    k: int = Field(5, ge=1, le=100, description="number of passages")


class MedragAskTool(BaseTool):
    """Ask a medrag Agent (or service): a cited answer as JSON."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str = "medrag_ask"
    description: str = (
        "Answer a medical question from indexed sources (textbooks, ontologies, reports). Returns JSON: the answer "
        "text with [n] citation markers, the numbered citations (source, page, section), confidence, abstained, notes. "
        "It abstains when the evidence is thin; it is not a diagnosis."
    )
    args_schema: type[BaseModel] = AskInput
    handle_tool_error: bool = True
    target: Any = Field(exclude=True)
    index: Optional[str] = None

    def _run(self, question: str, thread_id: Optional[str] = None, **_: Any) -> str:
        try:
            if isinstance(self.target, MedragService):
                data = self.target.ask(question, index=self.index, thread_id=thread_id)
            else:
                options = {"thread_id": thread_id} if thread_id else {}
                data = self.target.ask(question, **options).to_dict()
        except MedragError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
        data.pop("trace", None)
        return _dumps(data)


class MedragSearchTool(BaseTool):
    """Search an index of a MedragService: cited passages as JSON."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    name: str = "medrag_search"
    description: str = "Search medical sources for passages (hybrid meaning + word search). Returns JSON hits with citations and scores."
    args_schema: type[BaseModel] = SearchInput
    handle_tool_error: bool = True
    service: Any = Field(exclude=True)

    def _run(self, query: str, index: Optional[str] = None, k: int = 5, **_: Any) -> str:
        try:
            return _dumps(self.service.search(index, query, k=k))
        except MedragError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc


class MedragToolAdapter(BaseTool):
    """Any medrag Tool (search_text, kg_lookup, image tools ...) as a LangChain tool."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    handle_tool_error: bool = True
    medrag_tool: Any = Field(exclude=True)

    def _run(self, **inputs: Any) -> str:
        inputs = {k: v for k, v in inputs.items() if v is not None}
        result = self.medrag_tool(**inputs)
        if not result.ok:
            raise ToolException(result.error or f"{result.tool} failed")
        return _dumps({
            "tool": result.tool,
            "evidence": [e.to_dict() for e in result.evidence],
            "output": result.output,
        })


def args_model(tool) -> type[BaseModel]:
    """A pydantic model of a medrag tool's declared inputs (its LangChain argument schema)."""
    fields: dict[str, Any] = {}
    for name, spec in tool.inputs.items():
        kind = JSON_TYPES.get(str(spec.get("type", "string")), Any)
        description = spec.get("description", "")
        if spec.get("required"):
            fields[name] = (kind, Field(..., description=description))
        else:
            fields[name] = (Optional[kind], Field(None, description=description))
    safe = "".join(ch if ch.isalnum() else "_" for ch in tool.name)
    return create_model(f"{safe}_inputs", **fields)


def wrap_tool(tool) -> MedragToolAdapter:
    name = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in tool.name)
    return MedragToolAdapter(name=name, description=tool.description, args_schema=args_model(tool), medrag_tool=tool)


def _agent_tools(agent) -> list[Any]:
    """The medrag tools an Agent uses (the layouts of agent versions differ)."""
    toolbox = getattr(agent, "toolbox", None)
    if toolbox is not None and hasattr(toolbox, "tools"):
        return list(toolbox.tools.values())
    found = []
    for attr in ("search_tool", "graph_tool"):
        tool = getattr(agent, attr, None)
        if tool is not None:
            found.append(tool)
    listed = getattr(agent, "tools", None)
    for tool in listed if isinstance(listed, (list, tuple)) else []:
        if tool not in found:
            found.append(tool)
    return found


def as_tools(target: Any, *, index: str | None = None) -> list[BaseTool]:
    """LangChain tools for an Agent, a MedragService, a tool Registry or medrag Tool instances."""
    from medrag.registry import Registry

    if isinstance(target, MedragService):
        return [MedragAskTool(target=target, index=index), MedragSearchTool(service=target)]
    if hasattr(target, "ask") and hasattr(target, "stream"):  # an Agent
        return [MedragAskTool(target=target), *(wrap_tool(t) for t in _agent_tools(target))]
    if isinstance(target, Registry):
        tools = []
        for name in target.names():
            try:
                tools.append(wrap_tool(target.create(name)))
            except Exception:  # noqa: BLE001 - tools that need arguments (an index, a graph) are skipped
                continue
        return tools
    if isinstance(target, Iterable):
        return [wrap_tool(t) for t in target]
    raise InputError(f"as_tools takes an Agent, a MedragService, a Registry or tools, not {type(target).__name__}")
