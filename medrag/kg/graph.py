"""Queries over a built knowledge graph; every fact comes back as cited Evidence.

``KnowledgeGraph`` wraps a networkx MultiDiGraph whose edges are keyed by
relation (``is_a`` child -> parent, ``has_phenotype`` disease -> phenotype,
``same_as`` both ways, user relations ...). Nodes carry ``kind``, ``name``,
``synonyms``, ``definition``, ``xrefs`` and their provenance (``source`` file,
``version``).

A saved graph is a folder::

    manifest.json   format, format_version, name, sources (file, version, sha256), counts, problems
    graph.pickle    the MultiDiGraph (pickle protocol 5: the fastest way back into networkx)

Only load graph folders you built yourself: pickle runs code when loaded.
The manifest's sha256 of graph.pickle is checked before unpickling.
"""

from __future__ import annotations

import gc
import hashlib
import math
import pickle
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from medrag.errors import GraphCorrupt, GraphNotFound, InputError, UnknownNode
from medrag.storage import atomic_folder, fsync_file, read_json, utc_now, write_json
from medrag.types import Citation, Evidence

FORMAT = "medrag.kg"
FORMAT_VERSION = 1
MANIFEST, GRAPH_FILE = "manifest.json", "graph.pickle"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building or unpickling a large graph.

    Creating ~300k edge dicts triggers many full collections that find nothing:
    pausing cuts the load time of the HPO+DO graph about four-fold.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def validate_graph_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise InputError(f"invalid graph name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def graphs_dir(home: str | Path | None = None) -> Path:
    """``HOME/graphs``; HOME defaults to the settings' home ($MEDRAG_HOME or ~/.medrag)."""
    if home is None:
        from medrag.config import load_settings

        home = load_settings().home
    return Path(home).expanduser() / "graphs"


def list_graphs(home: str | Path | None = None) -> list[dict[str, Any]]:
    root = graphs_dir(home)
    if not root.is_dir():
        return []
    manifests = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and (folder / MANIFEST).is_file():
            try:
                manifests.append(read_json(folder / MANIFEST))
            except (OSError, ValueError):
                continue
    return manifests


def graph_folder(name: str, home: str | Path | None = None) -> Path:
    folder = graphs_dir(home) / validate_graph_name(name)
    if not (folder / MANIFEST).is_file():
        known = ", ".join(m.get("name", "?") for m in list_graphs(home)) or "none"
        raise GraphNotFound(f"no knowledge graph '{name}' in {folder.parent} (known: {known}); build one with: medrag kg build RECIPE --name {name}")
    return folder


def open_graph(name: str, home: str | Path | None = None) -> "KnowledgeGraph":
    return KnowledgeGraph.load(graph_folder(name, home))


@dataclass
class GraphPath:
    """A shortest path between two concepts, rendered as text and cited edge by edge."""

    nodes: list[str]
    relations: list[tuple[str, str]]  # (relation, "->" or "<-") per step
    text: str
    evidence: list[Evidence] = field(default_factory=list)


@dataclass
class DiseaseMatch:
    disease_id: str
    name: str
    score: float
    matched: list[dict[str, Any]]  # per query phenotype: query, annotated, common, ic
    evidence: list[Evidence] = field(default_factory=list)  # the disease summary first, then one per annotation used


class KnowledgeGraph:
    def __init__(self, graph: nx.MultiDiGraph, manifest: dict[str, Any] | None = None) -> None:
        self.graph = graph
        self.manifest: dict[str, Any] = dict(manifest or {})
        self._parents: dict[str, list[str]] | None = None
        self._children: dict[str, list[str]] | None = None
        self._ancestor_cache: dict[str, frozenset[str]] = {}
        self._annotations: tuple[dict[str, set[str]], dict[str, list[str]], dict[str, float], float] | None = None

    # --- storage -----------------------------------------------------------

    @property
    def name(self) -> str:
        return self.manifest.get("name", "")

    def counts(self) -> dict[str, Any]:
        kinds = Counter(kind for _, kind in self.graph.nodes(data="kind"))
        relations = Counter(k for _, _, k in self.graph.edges(keys=True))
        return {"nodes": self.graph.number_of_nodes(), "edges": self.graph.number_of_edges(), "node_kinds": dict(kinds), "relations": dict(relations)}

    def save(self, folder: str | Path) -> Path:
        """Write the graph folder atomically (a crash leaves any previous version intact)."""
        folder = Path(folder)
        with atomic_folder(folder) as tmp:
            data = pickle.dumps(self.graph, protocol=5)
            with open(tmp / GRAPH_FILE, "wb") as f:
                f.write(data)
            fsync_file(tmp / GRAPH_FILE)
            self.manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "name": self.manifest.get("name") or folder.name,
                "saved": utc_now(), **{k: v for k, v in self.manifest.items() if k not in {"format", "format_version", "name", "saved"}},
                "files": {GRAPH_FILE: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
            }
            self.manifest.setdefault("counts", self.counts())
            write_json(tmp / MANIFEST, self.manifest)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "KnowledgeGraph":
        folder = Path(folder)
        try:
            manifest = read_json(folder / MANIFEST)
        except FileNotFoundError as exc:
            raise GraphNotFound(f"{folder} is not a knowledge graph folder (no {MANIFEST})") from exc
        except (OSError, ValueError) as exc:
            raise GraphCorrupt(f"cannot read {folder / MANIFEST}: {exc}") from exc
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise GraphCorrupt(
                f"{folder} holds format {manifest.get('format')} v{manifest.get('format_version')}, "
                f"this medrag reads {FORMAT} v{FORMAT_VERSION}: rebuild it with medrag kg build"
            )
        try:
            data = (folder / GRAPH_FILE).read_bytes()
        except OSError as exc:
            raise GraphCorrupt(f"cannot read {folder / GRAPH_FILE}: {exc}; rebuild the graph") from exc
        if hashlib.sha256(data).hexdigest() != manifest.get("files", {}).get(GRAPH_FILE, {}).get("sha256"):
            raise GraphCorrupt(f"{folder / GRAPH_FILE} does not match its manifest (corrupt or replaced); rebuild the graph")
        with paused_gc():
            graph = pickle.loads(data)
        return cls(graph, manifest)

    # --- nodes -------------------------------------------------------------

    def resolve(self, node_id: str) -> str:
        """The graph's id for ``node_id``: itself, the term an alt_id was merged into, or a case variant."""
        node_id = (node_id or "").strip()
        if node_id in self.graph:
            return node_id
        alt = self.graph.graph.get("alt_ids", {}).get(node_id)
        if alt:
            return alt
        prefix, sep, local = node_id.partition(":")
        if sep and f"{prefix.upper()}:{local}" in self.graph:
            return f"{prefix.upper()}:{local}"
        raise UnknownNode(
            f"unknown node id {node_id!r} in knowledge graph '{self.name or '?'}'; "
            "ids look like HP:0001166 or OMIM:154700 (find them with: medrag kg link TEXT --graph NAME)"
        )

    def __contains__(self, node_id: str) -> bool:
        try:
            self.resolve(node_id)
        except UnknownNode:
            return False
        return True

    def node(self, node_id: str) -> dict[str, Any]:
        node_id = self.resolve(node_id)
        return {"id": node_id, **self.graph.nodes[node_id]}

    def label(self, node_id: str) -> str:
        return f"{self.graph.nodes[node_id].get('name', node_id)} ({node_id})"

    def source_info(self, file: str) -> dict[str, Any]:
        return self.graph.graph.get("sources", {}).get(file, {})

    def citation(self, chunk_id: str, source: str, *, node_id: str, relation: str | None = None, score: float = 0.0, **extra: Any) -> Citation:
        info = self.source_info(source)
        return Citation(
            source=source, chunk_id=chunk_id, title=info.get("title", source), score=score,
            locator={"node_id": node_id, "version": info.get("version", ""), "relation": relation, **extra},
        )

    def define(self, node_id: str) -> Evidence:
        """The node's name, definition, synonyms and xrefs as one cited fact."""
        node = self.node(node_id)
        parts = [f"{node['name']} ({node['id']})"]
        if node.get("definition"):
            parts.append(f": {node['definition']}")
        synonyms = [s[0] for s in node.get("synonyms", [])]
        if synonyms:
            parts.append(f" Synonyms: {', '.join(synonyms[:10])}.")
        if node.get("xrefs"):
            parts.append(f" Xrefs: {', '.join(node['xrefs'][:10])}.")
        parents = self.parents(node["id"])
        if parents:
            parts.append(" Is a: " + ", ".join(self.label(p) for p in parents) + ".")
        citation = self.citation(node["id"], node["source"], node_id=node["id"], score=1.0)
        return Evidence(evidence_id=f"kg:{node['id']}", text="".join(parts), citation=citation, score=1.0, kind="graph")

    # --- edges -------------------------------------------------------------

    def edge_text(self, head: str, tail: str, relation: str) -> str:
        data = self.graph.edges[head, tail, relation]
        details = [f"{k} {data[k]}" for k in ("frequency", "onset", "evidence") if data.get(k)]
        if data.get("via"):
            details.append(f"shared xref {data['via']}")
        suffix = f" [{'; '.join(details)}]" if details else ""
        return f"{self.label(head)} —{relation}→ {self.label(tail)}{suffix}"

    def edge_evidence(self, head: str, tail: str, relation: str, *, score: float = 1.0) -> Evidence:
        data = self.graph.edges[head, tail, relation]
        chunk_id = f"{head}|{relation}|{tail}"
        extra = {"target": tail}
        if data.get("references"):
            extra["references"] = list(data["references"][:5])
        citation = self.citation(chunk_id, data.get("source", ""), node_id=head, relation=relation, score=score, **extra)
        return Evidence(evidence_id=f"kg:{chunk_id}", text=self.edge_text(head, tail, relation), citation=citation, score=score, kind="graph")

    def neighbours(self, node_id: str, relation: str | None = None, *, direction: str = "out", limit: int = 50) -> list[Evidence]:
        """Edges leaving (``out``), entering (``in``) or touching (``both``) a node, optionally of one relation."""
        if direction not in {"out", "in", "both"}:
            raise InputError(f"direction must be out, in or both, not {direction!r}")
        node_id = self.resolve(node_id)
        edges = []
        if direction in {"out", "both"}:
            edges += [(node_id, v, k) for _, v, k in self.graph.out_edges(node_id, keys=True)]
        if direction in {"in", "both"}:
            edges += [(u, node_id, k) for u, _, k in self.graph.in_edges(node_id, keys=True)]
        if relation:
            edges = [e for e in edges if e[2] == relation]
        return [self.edge_evidence(u, v, k) for u, v, k in edges[:limit]]

    # --- is_a hierarchy ----------------------------------------------------

    def _hierarchy(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        if self._parents is None:
            parents, children = defaultdict(list), defaultdict(list)
            for u, v, k in self.graph.edges(keys=True):
                if k == "is_a":
                    parents[u].append(v)
                    children[v].append(u)
            self._parents, self._children = dict(parents), dict(children)
        return self._parents, self._children

    def parents(self, node_id: str) -> list[str]:
        return list(self._hierarchy()[0].get(self.resolve(node_id), []))

    def _closure(self, node_id: str, links: dict[str, list[str]]) -> set[str]:
        seen, queue = {node_id}, deque([node_id])  # the seen set makes cycles harmless
        while queue:
            for nxt in links.get(queue.popleft(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen

    def _ancestors_with_self(self, node_id: str) -> frozenset[str]:
        cached = self._ancestor_cache.get(node_id)
        if cached is None:
            cached = frozenset(self._closure(node_id, self._hierarchy()[0]))
            self._ancestor_cache[node_id] = cached
        return cached

    def ancestors(self, node_id: str, *, include_self: bool = False) -> set[str]:
        node_id = self.resolve(node_id)
        found = set(self._ancestors_with_self(node_id))
        return found if include_self else found - {node_id}

    def descendants(self, node_id: str, *, include_self: bool = False) -> set[str]:
        node_id = self.resolve(node_id)
        found = self._closure(node_id, self._hierarchy()[1])
        return found if include_self else found - {node_id}

    # --- paths -------------------------------------------------------------

    def path(self, source: str, target: str, *, max_hops: int = 6) -> GraphPath:
        """The shortest path between two nodes, edges followed either way, rendered
        ``A —is_a→ B ←has_phenotype— C``; InputError when none exists within ``max_hops``."""
        source, target = self.resolve(source), self.resolve(target)
        undirected = self.graph.to_undirected(as_view=True)
        try:
            nodes = nx.shortest_path(undirected, source, target)
        except nx.NetworkXNoPath:
            nodes = None
        if nodes is None or len(nodes) - 1 > max_hops:
            raise InputError(f"no path of at most {max_hops} steps between {self.label(source)} and {self.label(target)}")
        text, relations, evidence = self.label(nodes[0]), [], []
        for a, b in zip(nodes, nodes[1:]):
            forward = self.graph.get_edge_data(a, b) or {}
            if forward:
                relation = _preferred_relation(forward)
                text += f" —{relation}→ {self.label(b)}"
                relations.append((relation, "->"))
                evidence.append(self.edge_evidence(a, b, relation))
            else:
                relation = _preferred_relation(self.graph.get_edge_data(b, a))
                text += f" ←{relation}— {self.label(b)}"
                relations.append((relation, "<-"))
                evidence.append(self.edge_evidence(b, a, relation))
        return GraphPath(nodes=nodes, relations=relations, text=text, evidence=evidence)

    # --- disease ranking ---------------------------------------------------

    def _annotation_index(self):
        """disease -> direct phenotypes; term -> diseases annotated with it or a descendant; IC per term."""
        if self._annotations is None:
            direct: dict[str, set[str]] = defaultdict(set)
            for u, v, k in self.graph.edges(keys=True):
                if k == "has_phenotype":
                    direct[u].add(v)
            term_diseases: dict[str, list[str]] = defaultdict(list)
            with paused_gc():
                for disease, phenotypes in direct.items():
                    closure = frozenset().union(*(self._ancestors_with_self(p) for p in phenotypes))
                    for term in closure:
                        term_diseases[term].append(disease)
            total = max(len(direct), 1)
            ic = {term: math.log(total / len(ds)) for term, ds in term_diseases.items()}
            self._annotations = (dict(direct), dict(term_diseases), ic, math.log(total))
        return self._annotations

    def information_content(self, node_id: str) -> float:
        """-log(share of annotated diseases having this phenotype or a descendant); unannotated terms get the maximum."""
        _, _, ic, max_ic = self._annotation_index()
        return ic.get(self.resolve(node_id), max_ic)

    def rank_diseases(self, phenotype_ids: list[str], *, k: int = 10) -> list[DiseaseMatch]:
        """Diseases ranked by how well their annotations explain the query phenotypes.

        Per query phenotype q and disease d the match is Resnik's: the information
        content of the most informative common ancestor of q and any phenotype
        annotated to d, so a disease annotated with q or a descendant of q gets the
        full IC(q). Each match is weighted by how often the disease shows that
        annotation (see ``frequency_weight``): HPO records "0/27 patients" as an
        annotation too. The score is the weighted
        sum over q divided by the sum of IC(q), so 1.0 means every query phenotype
        is annotated (exactly or more specifically) and always present.
        """
        query = list(dict.fromkeys(self.resolve(p) for p in phenotype_ids))
        if not query:
            raise InputError("rank_diseases needs at least one phenotype id")
        direct, term_diseases, ic, max_ic = self._annotation_index()
        totals: dict[str, float] = defaultdict(float)
        best: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
        for q in query:
            # Most informative first; on equal IC the query itself, then the more specific ancestor.
            ranked_ancestors = sorted(
                self._ancestors_with_self(q), key=lambda a: (ic.get(a, 0.0), a == q, len(self._ancestors_with_self(a))), reverse=True
            )
            for a in ranked_ancestors:
                score = ic.get(a, 0.0)
                if score <= 0.0:
                    break  # the root: every disease has it, it says nothing
                for d in term_diseases.get(a, ()):
                    if q not in best[d]:
                        best[d][q] = (score, a)
                        totals[d] += score
        norm = sum(ic.get(q, max_ic) for q in query)
        # Frequencies only lower scores, so re-scoring a generous shortlist is exact enough.
        shortlist = sorted(totals, key=lambda d: (-totals[d], d))[: max(k * 20, 200)]
        scored = []
        for d in shortlist:
            matches = {q: self._annotation_for(d, q, common) for q, (_, common) in best[d].items()}
            weighted = sum(best[d][q][0] * weight for q, (_, weight) in matches.items())
            scored.append((round(weighted / norm, 6), d, matches))
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [self._disease_match(d, score, best[d], matches, query) for score, d, matches in scored[:k]]

    def _annotation_for(self, disease: str, query: str, common: str) -> tuple[str, float]:
        """The phenotype annotated to ``disease`` that brings in ``common``, and its frequency weight."""
        candidates = [t for t in self._annotation_index()[0].get(disease, ()) if common in self._ancestors_with_self(t)]
        weighted = [
            (frequency_weight(self.graph.edges[disease, t, "has_phenotype"].get("frequency", "")), t == query, t)
            for t in candidates
        ]
        weight, _, annotated = max(weighted)
        return annotated, weight

    def _disease_match(self, disease, score, best, matches, query) -> DiseaseMatch:
        matched, edges = [], []
        for q in query:
            if q not in best:
                matched.append({"query": q, "query_name": self.graph.nodes[q]["name"], "annotated": None, "common": None, "ic": 0.0})
                continue
            ic, common = best[q]
            annotated, weight = matches[q]
            matched.append({
                "query": q, "query_name": self.graph.nodes[q]["name"], "annotated": annotated,
                "annotated_name": self.graph.nodes[annotated]["name"], "common": common, "ic": round(ic, 4),
                "weight": round(weight, 4), "exact": common == q,
            })
            edges.append((disease, annotated))
        name = self.graph.nodes[disease]["name"]
        found = [m for m in matched if m["annotated"]]
        text = f"{name} ({disease}) is annotated with {sum(m.get('exact', False) for m in found)} of {len(query)} query phenotypes (or more specific ones)"
        if found:
            text += ": " + "; ".join(describe_match(m) for m in found)
        source = self.graph.nodes[disease]["source"]
        summary = Evidence(
            evidence_id=f"kg:{disease}|diseases", text=text + ".", kind="graph", score=score,
            citation=self.citation(disease, source, node_id=disease, relation="has_phenotype", score=score,
                                   phenotypes=[m["annotated"] for m in found]),
        )
        evidence = [summary] + [self.edge_evidence(u, v, "has_phenotype", score=score) for u, v in dict.fromkeys(edges)]
        return DiseaseMatch(disease_id=disease, name=name, score=score, matched=matched, evidence=evidence)

    # --- text for the composer ---------------------------------------------

    def subgraph(self, node_ids: list[str], *, depth: int = 1, max_edges: int = 40, relations: set[str] | None = None) -> list[tuple[str, str, str]]:
        """Edges around ``node_ids`` (breadth-first, both directions), at most ``max_edges``."""
        start = [self.resolve(n) for n in node_ids]
        seen_nodes, frontier, edges = set(start), list(start), []
        seen_edges: set[tuple[str, str, str]] = set()
        for _ in range(depth):
            nxt = []
            for n in frontier:
                around = list(self.graph.out_edges(n, keys=True)) + list(self.graph.in_edges(n, keys=True))
                for u, v, k in around:
                    if (relations and k not in relations) or (u, v, k) in seen_edges:
                        continue
                    seen_edges.add((u, v, k))
                    edges.append((u, v, k))
                    if len(edges) >= max_edges:
                        return edges
                    other = v if u == n else u
                    if other not in seen_nodes:
                        seen_nodes.add(other)
                        nxt.append(other)
            frontier = nxt
        return edges

    def subgraph_text(self, node_ids: list[str], *, depth: int = 1, max_edges: int = 40, relations: set[str] | None = None) -> str:
        """A compact text rendering, one edge per line, for a prompt or the extractive composer."""
        lines = [self.edge_text(u, v, k) for u, v, k in self.subgraph(node_ids, depth=depth, max_edges=max_edges, relations=relations)]
        return "\n".join(lines)

    def subgraph_evidence(self, node_ids: list[str], **options: Any) -> list[Evidence]:
        return [self.edge_evidence(u, v, k) for u, v, k in self.subgraph(node_ids, **options)]


# HPO frequency terms -> a representative fraction (the middle of the range HPO gives).
FREQUENCY_TERMS = {"HP:0040280": 1.0, "HP:0040281": 0.895, "HP:0040282": 0.545, "HP:0040283": 0.17, "HP:0040284": 0.025, "HP:0040285": 0.0}
FREQUENCY_PRIOR = 5.0  # pseudo-patients at 50%: "1/1" is weak evidence, "119/251" strong
NOMINAL_PATIENTS = 4.0  # what an HPO frequency term or a percentage counts as


def parse_frequency(value: str) -> float | None:
    """'16/21', '45%' or an HPO frequency term -> a fraction; None when absent or unreadable."""
    value = value.strip()
    if not value:
        return None
    if value in FREQUENCY_TERMS:
        return FREQUENCY_TERMS[value]
    try:
        if "/" in value:
            num, den = value.split("/", 1)
            return min(1.0, int(num) / int(den)) if int(den) else None
        if value.endswith("%"):
            return min(1.0, float(value[:-1]) / 100)
    except ValueError:
        return None
    return None


def frequency_weight(frequency: str) -> float:
    """0.5 + 0.5 * smoothed frequency: an annotation never seen in patients keeps half weight
    (it is still a curated association); n/m counts are shrunk towards 0.5 by FREQUENCY_PRIOR."""
    fraction = parse_frequency(frequency or "")
    if fraction is None:
        smoothed = 0.5
    else:
        n, m = (fraction * NOMINAL_PATIENTS, NOMINAL_PATIENTS)
        if "/" in frequency:
            try:
                n, m = (float(x) for x in frequency.split("/", 1))
            except ValueError:
                pass
        smoothed = (n + 0.5 * FREQUENCY_PRIOR) / (m + FREQUENCY_PRIOR)
    return 0.5 + 0.5 * min(1.0, smoothed)


def describe_match(m: dict[str, Any]) -> str:
    """'Tall stature (HP:0000098)', '... as Disproportionate tall stature (HP:0001519)' (a descendant),
    or '... nearest: Slender build (HP:0001533), shared ancestor X' (partial credit)."""
    text = f"{m['query_name']} ({m['query']})"
    if m["annotated"] == m["query"]:
        return text
    if m["exact"]:
        return f"{text} as {m['annotated_name']} ({m['annotated']})"
    return f"{text} nearest: {m['annotated_name']} ({m['annotated']}), shared ancestor {m['common']}"


def _preferred_relation(edges: dict[str, Any]) -> str:
    # Several relations may join two nodes; the hierarchy reads best in an explanation.
    for relation in ("is_a", "has_phenotype", "same_as"):
        if relation in edges:
            return relation
    return sorted(edges)[0]


__all__ = [
    "describe_match", "frequency_weight", "parse_frequency",
    "KnowledgeGraph", "GraphPath", "DiseaseMatch", "GraphNotFound", "GraphCorrupt", "UnknownNode",
    "graphs_dir", "graph_folder", "list_graphs", "open_graph", "validate_graph_name",
]
