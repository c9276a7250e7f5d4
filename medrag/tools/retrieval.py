"""Text retrieval over a named hybrid index, as an agent tool."""

from __future__ import annotations

from typing import Any

from medrag.index.hybrid import HybridRetriever
from medrag.registry import tools
from medrag.tools.base import BaseTool
from medrag.types import ToolResult


@tools.register("search_text")
class TextSearchTool(BaseTool):
    name = "search_text"
    description = (
        "Search the text index (textbook pages, captions, ontology terms) by meaning and by words. "
        "Returns cited passages: source, page, section, figure."
    )
    modalities = frozenset({"text"})
    inputs = {
        "query": {"type": "string", "required": True, "description": "what to look for"},
        "k": {"type": "integer", "description": "how many passages (default from settings)"},
        "where": {"type": "object", "description": "metadata filter, e.g. {\"source\": \"book.pdf\", \"page\": {\"gte\": 3}}"},
    }

    def __init__(self, retriever: HybridRetriever) -> None:
        super().__init__()
        self.retriever = retriever

    def run(self, query: str, k: int | None = None, where: dict[str, Any] | None = None) -> ToolResult:
        evidence = self.retriever.search(query, k=k, where=where)
        return ToolResult(
            tool=self.name,
            ok=True,
            evidence=evidence,
            output={"query": query, "hits": len(evidence), "index": self.retriever.index.name},
        )
