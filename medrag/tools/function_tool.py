"""Turn a plain function into an agent Tool.

>>> from medrag.tools.function_tool import tool
>>> @tool(description="Look a drug up in the local formulary.")
... def formulary(query: str) -> str:
...     return "Amoxicillin: 500 mg every 8 hours."
>>> formulary.name, sorted(formulary.inputs)
('formulary', ['query'])

The function may return a ToolResult, a list of Evidence, or text (cited as the
tool's own output). Its parameters become the tool's inputs: ``query`` makes it
a search tool the planner gives every sub-question, ``image`` an image tool for
the declared modalities. ``register=True`` also adds it to the tool registry
(so ``Agent.from_config(tools=[...])`` and ``medrag tool list`` find it).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from medrag.errors import ConfigError, ToolError
from medrag.registry import tools as tool_registry
from medrag.tools.base import BaseTool
from medrag.types import Citation, Evidence, ToolResult

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _schema(fn: Callable[..., Any]) -> dict[str, dict[str, Any]]:
    inputs: dict[str, dict[str, Any]] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool function {fn.__name__}: *args/**kwargs cannot be described as inputs")
        annotation = param.annotation if param.annotation is not inspect.Parameter.empty else str
        if isinstance(annotation, str):  # postponed annotations: "str", "int | None" ...
            kind = next((v for k, v in _JSON_TYPES.items() if annotation.startswith(k.__name__)), "string")
        else:
            kind = _JSON_TYPES.get(getattr(annotation, "__origin__", annotation), "string")
        inputs[name] = {"type": kind, "required": param.default is inspect.Parameter.empty}
    return inputs


class FunctionTool(BaseTool):
    """A Tool whose work is one Python function."""

    def __init__(self, fn: Callable[..., Any], *, name: str, description: str, modalities: Iterable[str]) -> None:
        super().__init__()
        self.fn = fn
        self.name = name
        self.description = description
        self.modalities = frozenset(modalities)
        self.inputs = _schema(fn)

    def run(self, **inputs: Any) -> ToolResult:
        out = self.fn(**inputs)
        if isinstance(out, ToolResult):
            return out
        if isinstance(out, str):
            out = [self._evidence(out, inputs)]
        if not isinstance(out, list) or not all(isinstance(e, Evidence) for e in out):
            raise ToolError(f"{self.name}: the function must return text, a list of Evidence or a ToolResult, not {type(out).__name__}")
        return ToolResult(tool=self.name, ok=True, evidence=out, output={"items": len(out)})

    def _evidence(self, text: str, inputs: dict[str, Any]) -> Evidence:
        digest = hashlib.sha1(f"{self.name}{sorted(inputs.items())}{text}".encode()).hexdigest()[:10]
        citation = Citation(source=self.name, chunk_id=f"{self.name}:{digest}", title=self.description[:80], score=1.0, locator={"tool": self.name})
        return Evidence(evidence_id=citation.chunk_id, text=text, citation=citation, score=1.0)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    modalities: Iterable[str] = ("text",),
    register: bool = False,
):
    """Decorator: ``@tool`` or ``@tool(name=..., description=..., modalities=..., register=True)``."""

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        doc = description or inspect.getdoc(f) or ""
        if not doc:
            raise ConfigError(f"tool {f.__name__}: give a description (or a docstring); the planner and users read it")
        made = FunctionTool(f, name=name or f.__name__, description=doc, modalities=modalities)
        if register:
            tool_registry.register(made.name, lambda: made, replace=True)
        return made

    return wrap(fn) if fn is not None else wrap
