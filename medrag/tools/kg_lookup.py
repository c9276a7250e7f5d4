"""Knowledge-graph lookups as an agent tool: definitions, neighbours, diseases by phenotypes, paths."""

from __future__ import annotations

from typing import Any

from medrag.errors import ToolError
from medrag.registry import tools
from medrag.tools.base import BaseTool
from medrag.types import ToolResult

OPERATIONS = ("define", "neighbours", "diseases", "path")


@tools.register("kg_lookup")
class KgLookupTool(BaseTool):
    name = "kg_lookup"
    description = (
        "Look facts up in the medical knowledge graph (HPO phenotypes, diseases, their links). "
        "operation=define: what a term is; neighbours: its related nodes (optionally one relation); "
        "diseases: diseases ranked by the phenotypes in text; path: how two concepts are connected. "
        "Every fact is cited to its ontology file and node id."
    )
    modalities = frozenset({"text"})
    inputs = {
        "operation": {"type": "string", "required": True, "enum": list(OPERATIONS), "description": "define | neighbours | diseases | path"},
        "text": {"type": "string", "description": "free text naming the concept(s), e.g. 'tall stature, arachnodactyly'"},
        "node_id": {"type": "string", "description": "a node id instead of text, e.g. HP:0001166"},
        "target": {"type": "string", "description": "path only: the second concept (text or node id)"},
        "relation": {"type": "string", "description": "neighbours only: keep one relation (is_a, has_phenotype, same_as ...)"},
        "direction": {"type": "string", "description": "neighbours only: out (default), in or both"},
        "k": {"type": "integer", "description": "how many results (default 10)"},
    }

    def __init__(self, kg=None, *, graph: str | None = None, linker=None) -> None:
        """Pass a loaded KnowledgeGraph, or the ``graph`` name to open lazily in setup()."""
        super().__init__()
        if kg is None and graph is None:
            raise ToolError("kg_lookup needs a KnowledgeGraph or the name of a built graph")
        self.kg = kg
        self.graph_name = graph
        self.linker = linker

    def setup(self) -> None:
        from medrag.kg.graph import open_graph
        from medrag.kg.linking import EntityLinker

        if self.kg is None:
            self.kg = open_graph(self.graph_name)
        if self.linker is None:
            self.linker = EntityLinker(self.kg)
        super().setup()

    def _node(self, text: str | None, node_id: str | None, *, kinds: set[str] | None = None) -> str:
        if node_id:
            return self.kg.resolve(node_id)
        if not text or not text.strip():
            raise ToolError(f"{self.name}: give 'text' or 'node_id'")
        if text.strip() in self.kg:  # an id passed as text
            return self.kg.resolve(text.strip())
        links = [link for link in self.linker.link(text, per_span=5) if not kinds or self.kg.graph.nodes[link.node_id].get("kind") in kinds]
        if not links:
            raise ToolError(f"{self.name}: no knowledge-graph concept found in {text!r}")
        return links[0].node_id

    def run(
        self,
        operation: str,
        text: str | None = None,
        node_id: str | None = None,
        target: str | None = None,
        relation: str | None = None,
        direction: str = "out",
        k: int = 10,
    ) -> ToolResult:
        if operation not in OPERATIONS:
            raise ToolError(f"{self.name}: operation must be one of {', '.join(OPERATIONS)}, not {operation!r}")
        output: dict[str, Any] = {"operation": operation}
        if operation == "define":
            node = self._node(text, node_id)
            evidence = [self.kg.define(node)]
            output["node_id"] = node
        elif operation == "neighbours":
            node = self._node(text, node_id)
            evidence = self.kg.neighbours(node, relation, direction=direction, limit=k)
            output["node_id"] = node
        elif operation == "diseases":
            if node_id:
                phenotypes = [self.kg.resolve(n.strip()) for n in node_id.split(",") if n.strip()]
            else:
                phenotypes = self._phenotypes(text)
            if not phenotypes:
                raise ToolError(f"{self.name}: no phenotype found in {text!r}")
            matches = self.kg.rank_diseases(phenotypes, k=k)
            evidence = [ev for m in matches for ev in m.evidence[:1]]
            output.update(phenotypes=phenotypes, diseases=[{"id": m.disease_id, "name": m.name, "score": m.score} for m in matches])
        else:
            if not target:
                raise ToolError(f"{self.name}: path needs 'target' (text or node id)")
            start = self._node(text, node_id)
            end = self._node(target, None)
            found = self.kg.path(start, end)
            evidence = found.evidence
            output.update(path=found.text, nodes=found.nodes)
        return ToolResult(tool=self.name, ok=True, evidence=evidence, output=output)

    def _phenotypes(self, text: str | None) -> list[str]:
        if not text or not text.strip():
            raise ToolError(f"{self.name}: diseases needs 'text' listing phenotypes or 'node_id' (comma-separated ids)")
        return self.linker.best_nodes(text, kinds={"phenotype"})
