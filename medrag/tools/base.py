"""The Tool protocol: declared inputs/outputs and modalities, lazy setup, cited results."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Protocol, runtime_checkable

from medrag.errors import MedragError, ToolError
from medrag.types import ToolResult


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    modalities: frozenset[str]  # "text" for text-only tools; image modalities such as "xray", "ct"
    inputs: dict[str, dict[str, Any]]  # JSON-schema-like: {"query": {"type": "string", "description": ...}}

    def setup(self) -> None:
        """Load weights or open indexes, once, on first use."""
        ...

    def __call__(self, **inputs: Any) -> ToolResult: ...


class BaseTool:
    """Shared plumbing: input checking, lazy setup, timing, errors become failed results."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    modalities: ClassVar[frozenset[str]] = frozenset({"text"})
    inputs: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self) -> None:
        self._ready = False

    def setup(self) -> None:
        self._ready = True

    def run(self, **inputs: Any) -> ToolResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, **inputs: Any) -> ToolResult:
        unknown = set(inputs) - set(self.inputs)
        missing = {k for k, spec in self.inputs.items() if spec.get("required") and k not in inputs}
        started = time.perf_counter()
        try:
            if unknown or missing:
                raise ToolError(f"{self.name}: unknown inputs {sorted(unknown)}, missing {sorted(missing)}")
            if not self._ready:
                self.setup()
            result = self.run(**inputs)
        except MedragError as exc:
            # At the tool boundary an error becomes a failed step the agent can reason about.
            result = ToolResult(tool=self.name, ok=False, error=f"{type(exc).__name__}: {exc}")
        result.duration_s = time.perf_counter() - started
        return result
