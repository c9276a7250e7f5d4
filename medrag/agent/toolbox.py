"""The agent's tools: who they are, which images they may see, and how calls run.

Roles come from what a tool declares, not from its name, so a user's own tool
joins the plan without changes here:
- a tool with an ``image`` input is an image tool, eligible only for images of
  its declared modalities (MedRAX's failure was sending CT slices to X-ray models);
- a tool with an ``operation`` input and ``text`` is a knowledge-graph tool;
- any other tool with a ``query`` input is a search tool and gets each sub-question.

Calls run on a thread pool with a timeout: a call that errors or runs too long
becomes a failed ToolResult the agent reasons about, never a crash. (A timed-out
call's thread cannot be killed in Python; its result is discarded.)
"""

from __future__ import annotations

import concurrent.futures as futures
import time
from collections.abc import Iterable, Sequence
from typing import Any

from medrag.errors import ConfigError, MedragError
from medrag.tools.base import Tool
from medrag.types import ToolResult

ZOOM_TOOL = "zoom_region"


def is_image_tool(tool: Tool) -> bool:
    return "image" in tool.inputs


def is_graph_tool(tool: Tool) -> bool:
    return "operation" in tool.inputs and "text" in tool.inputs


def is_search_tool(tool: Tool) -> bool:
    return "query" in tool.inputs and not is_image_tool(tool) and not is_graph_tool(tool)


def accepts_modality(tool: Tool, modality: str) -> bool:
    return modality in tool.modalities


class Toolbox:
    """Named tools plus the executor that runs their calls in parallel with a timeout."""

    def __init__(self, tools: Iterable[Tool], *, timeout_s: float = 60.0, max_workers: int = 4) -> None:
        self.tools: dict[str, Tool] = {}
        for tool in tools:
            if not isinstance(tool, Tool):
                raise ConfigError(f"{tool!r} is not a medrag Tool (needs name, description, modalities, inputs, setup, __call__)")
            if tool.name in self.tools:
                raise ConfigError(f"two tools are named {tool.name!r}; tool names must be unique")
            self.tools[tool.name] = tool
        self.timeout_s = timeout_s
        self._executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="medrag-tool")

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def __getitem__(self, name: str) -> Tool:
        return self.tools[name]

    def names(self) -> list[str]:
        return list(self.tools)

    def search_tools(self) -> list[Tool]:
        return [t for t in self.tools.values() if is_search_tool(t)]

    def graph_tools(self) -> list[Tool]:
        return [t for t in self.tools.values() if is_graph_tool(t)]

    def image_tools(self, modality: str, *, include_zoom: bool = False) -> list[Tool]:
        return [
            t
            for t in self.tools.values()
            if is_image_tool(t) and accepts_modality(t, modality) and (include_zoom or t.name != ZOOM_TOOL)
        ]

    def image_tool_names(self) -> frozenset[str]:
        return frozenset(name for name, t in self.tools.items() if is_image_tool(t))

    def describe(self) -> list[dict[str, Any]]:
        """What an LLM planner (or a user) is told about each tool."""
        return [
            {"name": t.name, "description": t.description, "modalities": sorted(t.modalities), "inputs": t.inputs}
            for t in self.tools.values()
        ]

    def call(self, name: str, inputs: dict[str, Any], *, timeout_s: float | None = None) -> ToolResult:
        """Run one call; errors and timeouts come back as a failed ToolResult."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(tool=name, ok=False, error=f"ToolError: no tool named {name!r} (have: {', '.join(self.tools)})")
        started = time.perf_counter()
        future = self._executor.submit(_run, tool, inputs)
        try:
            result = future.result(timeout=timeout)
        except futures.TimeoutError:
            future.cancel()
            result = ToolResult(tool=name, ok=False, error=f"ToolTimeout: {name} did not finish within {timeout:g} s")
        result.duration_s = time.perf_counter() - started
        return result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _run(tool: Tool, inputs: dict[str, Any]) -> ToolResult:
    try:
        return tool(**inputs)
    except MedragError as exc:  # tools built on BaseTool already do this; user tools may not
        return ToolResult(tool=tool.name, ok=False, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a user's tool raising anything must not crash the question
        return ToolResult(tool=tool.name, ok=False, error=f"{type(exc).__name__}: {exc}")
