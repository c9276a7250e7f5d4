"""Build a knowledge graph (networkx MultiDiGraph) from ontologies, annotations and triples.

Sources:

- OBO ontologies (HPO, Disease Ontology ...): one node per live term with name,
  synonyms, abbreviations, definition, xrefs, alt ids; ``is_a`` edges child -> parent.
- HPO annotation files (``phenotype.hpoa``, gzipped or not): one node per
  disease (its ``database_id``/``disease_name``) and disease -> phenotype edges
  carrying frequency, evidence, onset and references.
- User triples (CSV or JSONL with ``head, relation, tail[, source]``).

Cross-ontology merging is done by *linking*, not merging: nodes of different
sources that share a normalised xref (OMIM, ORPHA, UMLS, MESH), or whose id is
another node's xref, get ``same_as`` edges both ways. Keeping both nodes keeps
each fact citable to the file that states it.

A recipe is a YAML file naming the sources (see ``load_recipe``). A built
graph is saved as a folder ``$MEDRAG_HOME/graphs/NAME`` with ``manifest.json``
and ``graph.pickle`` (see ``medrag.kg.graph.KnowledgeGraph.save``).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from medrag.errors import ConfigError, SourceFileError
from medrag.kg.graph import KnowledgeGraph, graphs_dir, parse_frequency, paused_gc, validate_graph_name
from medrag.kg.obo import read_obo

log = logging.getLogger(__name__)

SOURCE_FORMATS = ("obo", "hpoa", "triples")

# Node kind by id prefix; anything else is a plain "term".
KIND_BY_PREFIX = {"HP": "phenotype", "DOID": "disease", "MONDO": "disease", "OMIM": "disease", "ORPHA": "disease", "DECIPHER": "disease"}
KNOWN_TITLES = {"hp": "Human Phenotype Ontology", "hp.obo": "Human Phenotype Ontology", "doid": "Human Disease Ontology"}

# Xref prefixes spelled differently across ontologies, mapped to one spelling.
XREF_PREFIXES = {
    "UMLS": "UMLS", "UMLS_CUI": "UMLS",
    "MSH": "MESH", "MESH": "MESH",
    "OMIM": "OMIM", "MIM": "OMIM",
    "ORPHA": "ORPHA", "ORDO": "ORPHA", "ORPHANET": "ORPHA",
    "SNOMEDCT": "SNOMEDCT", "SNOMEDCT_US": "SNOMEDCT", "SCTID": "SNOMEDCT",
}
LINKING_PREFIXES = frozenset({"OMIM", "ORPHA", "UMLS", "MESH"})  # SNOMED codes are too coarse in DO 2016
MAX_SAME_AS_GROUP = 6  # an xref shared by more nodes than this is too generic to mean "same concept"

# hpoa aspect -> relation; P (phenotypic abnormality) is what disease ranking uses.
ASPECT_RELATIONS = {"P": "has_phenotype", "I": "has_inheritance", "C": "has_clinical_course", "M": "has_modifier", "H": "has_past_medical_history"}
HPOA_COLUMNS = ("database_id", "disease_name", "qualifier", "hpo_id", "reference", "evidence", "onset", "frequency", "aspect")
TRIPLE_FIELDS = ("head", "relation", "tail")


def normalise_xref(xref: str) -> str:
    prefix, sep, local = xref.partition(":")
    if not sep:
        return xref
    key = prefix.upper()
    if key.startswith("SNOMEDCT"):
        key = "SNOMEDCT"
    return f"{XREF_PREFIXES.get(key, prefix)}:{local}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_text(path: Path):
    """Open a text file that may be gzip-compressed (detected by its magic bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except FileNotFoundError as exc:
        raise SourceFileError(path, "file not found") from exc
    except OSError as exc:
        raise SourceFileError(path, f"cannot read: {exc}") from exc
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


@dataclass
class SourceSpec:
    """One input of a build: its format, resolved path and an optional display title."""

    format: str
    path: Path
    title: str = ""
    spec: str = ""  # the path as written in the recipe


@dataclass
class GraphBuilder:
    """Accumulates sources into one MultiDiGraph; ``finish()`` links xrefs and checks cycles."""

    graph: nx.MultiDiGraph = field(default_factory=nx.MultiDiGraph)
    sources: list[dict[str, Any]] = field(default_factory=list)
    problems: dict[str, Any] = field(default_factory=lambda: defaultdict(list))
    alt_ids: dict[str, str] = field(default_factory=dict)

    def _register_source(self, spec: SourceSpec, version: str, title: str) -> dict[str, Any]:
        entry = {
            "format": spec.format, "file": spec.path.name, "path": str(spec.path), "spec": spec.spec or str(spec.path),
            "version": version, "title": title, "sha256": sha256_file(spec.path),
        }
        self.sources.append(entry)
        return entry

    def _add_edge(self, head: str, tail: str, relation: str, **attrs: Any) -> None:
        # One edge per (head, relation, tail): repeated statements add references, not edges.
        if self.graph.has_edge(head, tail, key=relation):
            data = self.graph.edges[head, tail, relation]
            refs = [r for r in attrs.get("references", []) if r not in data.get("references", [])]
            if refs:
                data["references"] = [*data.get("references", []), *refs]
            return
        self.graph.add_edge(head, tail, key=relation, relation=relation, **attrs)

    def add_obo(self, spec: SourceSpec) -> None:
        onto = read_obo(spec.path)
        title = spec.title or onto.header.get("title") or KNOWN_TITLES.get(onto.header.get("ontology", ""), "") or spec.path.name
        entry = self._register_source(spec, onto.version, title)
        for problem in onto.problems:
            self.problems["malformed_stanzas"].append(f"{spec.path.name}: {problem}")
        entry["terms"] = 0
        for term in onto.live_terms():
            prefix = term.id.split(":", 1)[0]
            self.graph.add_node(
                term.id,
                kind=KIND_BY_PREFIX.get(prefix, "term"),
                name=term.name or term.id,
                synonyms=[list(s) for s in term.synonyms],
                abbreviations=list(term.abbreviations),
                definition=term.definition,
                xrefs=sorted({normalise_xref(x) for x in term.xrefs}),
                alt_ids=list(term.alt_ids),
                source=spec.path.name,
                version=onto.version,
            )
            entry["terms"] += 1
            for alt in term.alt_ids:
                self.alt_ids[alt] = term.id
        for term in onto.live_terms():
            for parent in term.is_a:
                parent = self.alt_ids.get(parent, parent)
                if parent not in self.graph:  # parent obsolete or in another file: keep the graph closed
                    self.problems["dangling_is_a"].append(f"{term.id} is_a {parent}")
                    continue
                self._add_edge(term.id, parent, "is_a", source=spec.path.name, version=onto.version)

    def add_hpoa(self, spec: SourceSpec) -> None:
        version, header, rows = "", None, []
        with _open_text(spec.path) as f:
            try:
                for line in f:
                    line = line.rstrip("\r\n")
                    if line.startswith("#"):
                        key, _, value = line[1:].partition(":")
                        if key.strip() == "version":
                            version = value.strip()
                        continue
                    if header is None:
                        header = line.split("\t")
                        missing = [c for c in HPOA_COLUMNS if c not in header]
                        if missing:
                            raise SourceFileError(spec.path, f"not an HPO annotation file: header lacks columns {missing}")
                        continue
                    if line.strip():
                        rows.append(line.split("\t"))
            except (OSError, UnicodeDecodeError, EOFError) as exc:
                raise SourceFileError(spec.path, f"cannot read annotation file: {exc}") from exc
        if header is None:
            raise SourceFileError(spec.path, "empty annotation file: no header line")
        entry = self._register_source(spec, version, spec.title or "HPO annotations (phenotype.hpoa)")
        col = {name: i for i, name in enumerate(header)}
        added = skipped = 0
        for n, row in enumerate(rows, start=1):
            if len(row) < len(header):
                self.problems["malformed_annotations"].append(f"{spec.path.name}: row {n}: {len(row)} columns, expected {len(header)}")
                skipped += 1
                continue
            disease, phenotype = row[col["database_id"]].strip(), row[col["hpo_id"]].strip()
            phenotype = self.alt_ids.get(phenotype, phenotype)
            if ":" not in disease or phenotype not in self.graph:
                self.problems["unknown_annotation_ids"].append(f"{spec.path.name}: row {n}: {disease} -> {phenotype}")
                skipped += 1
                continue
            if disease not in self.graph:
                self.graph.add_node(
                    disease, kind="disease", name=row[col["disease_name"]].strip() or disease, synonyms=[], abbreviations=[],
                    definition="", xrefs=[], alt_ids=[], source=spec.path.name, version=version,
                )
            aspect = row[col["aspect"]].strip()
            relation = ASPECT_RELATIONS.get(aspect, "has_annotation")
            if row[col["qualifier"]].strip().upper() == "NOT":
                relation = "lacks_phenotype" if aspect == "P" else f"not_{relation}"
            frequency = row[col["frequency"]].strip()
            self._add_edge(
                disease, phenotype, relation, source=spec.path.name, version=version,
                evidence=row[col["evidence"]].strip(), onset=row[col["onset"]].strip(),
                frequency=frequency, frequency_value=parse_frequency(frequency),
                references=[r for r in row[col["reference"]].split(";") if r],
            )
            added += 1
        entry["annotations"], entry["skipped"] = added, skipped
        if skipped:
            log.warning("%s: skipped %d annotation rows (malformed or unknown ids)", spec.path.name, skipped)

    def add_triples(self, spec: SourceSpec) -> None:
        rows = _read_triples(spec.path)
        entry = self._register_source(spec, "", spec.title or spec.path.name)
        added = 0
        for n, row in enumerate(rows, start=1):
            head, relation, tail = (str(row.get(k) or "").strip() for k in TRIPLE_FIELDS)
            if not (head and relation and tail):
                self.problems["malformed_triples"].append(f"{spec.path.name}: row {n}: needs head, relation and tail")
                continue
            head, tail = self.alt_ids.get(head, head), self.alt_ids.get(tail, tail)
            for node_id, name_key in ((head, "head_name"), (tail, "tail_name")):
                if node_id not in self.graph:  # a triple may introduce entities the ontologies lack
                    self.graph.add_node(
                        node_id, kind="entity", name=str(row.get(name_key) or node_id), synonyms=[], abbreviations=[],
                        definition="", xrefs=[], alt_ids=[], source=spec.path.name, version="",
                    )
            reference = str(row.get("source") or "").strip()
            self._add_edge(head, tail, relation, source=spec.path.name, version="", references=[reference] if reference else [])
            added += 1
        entry["triples"] = added

    def link_xrefs(self) -> int:
        """Add same_as edges between nodes of different sources that share a linking xref."""
        holders: dict[str, set[str]] = defaultdict(set)
        for node_id, data in self.graph.nodes(data=True):
            if node_id.split(":", 1)[0] in LINKING_PREFIXES:
                holders[node_id].add(node_id)  # an OMIM/ORPHA disease node is the target of xrefs to it
            for xref in data.get("xrefs", ()):
                if xref.split(":", 1)[0] in LINKING_PREFIXES:
                    holders[xref].add(node_id)
        linked = 0
        for xref, nodes in holders.items():
            if len(nodes) < 2 or len(nodes) > MAX_SAME_AS_GROUP:
                continue
            ordered = sorted(nodes)
            for i, a in enumerate(ordered):
                for b in ordered[i + 1:]:
                    src_a, src_b = self.graph.nodes[a]["source"], self.graph.nodes[b]["source"]
                    if src_a == src_b:
                        continue
                    # Cite the file that states the xref (the node whose xrefs hold it).
                    source = src_a if xref in self.graph.nodes[a]["xrefs"] else src_b
                    for u, v in ((a, b), (b, a)):
                        if not self.graph.has_edge(u, v, key="same_as"):
                            self.graph.add_edge(u, v, key="same_as", relation="same_as", source=source, version="", via=xref)
                            linked += 1
        return linked

    def find_is_a_cycles(self) -> list[list[str]]:
        is_a = nx.DiGraph((u, v) for u, v, k in self.graph.edges(keys=True) if k == "is_a")
        cycles = [sorted(c) for c in nx.strongly_connected_components(is_a) if len(c) > 1]
        cycles += [[u] for u, v in nx.selfloop_edges(is_a)]
        for cycle in cycles:
            log.warning("is_a cycle among %s", ", ".join(cycle[:10]))
        return cycles

    def finish(self) -> KnowledgeGraph:
        same_as = self.link_xrefs()
        cycles = self.find_is_a_cycles()
        problems = {k: list(v) for k, v in self.problems.items()}
        problems["is_a_cycles"] = cycles
        self.graph.graph.update(sources={s["file"]: s for s in self.sources}, alt_ids=dict(self.alt_ids))
        kg = KnowledgeGraph(self.graph)
        counts = kg.counts()
        counts["same_as_edges"] = same_as
        kg.manifest.update(
            sources=self.sources,
            counts=counts,
            problems={k: {"count": len(v), "examples": v[:20]} for k, v in problems.items()},
        )
        return kg


def _read_triples(path: Path) -> list[dict[str, Any]]:
    with _open_text(path) as f:
        try:
            if path.name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
                rows = []
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError as exc:
                        raise SourceFileError(path, f"line {n} is not JSON: {exc}") from exc
                    rows.append(row if isinstance(row, dict) else {})
                return rows
            reader = csv.DictReader(f, dialect=csv.excel_tab if path.name.endswith((".tsv", ".tsv.gz")) else csv.excel)
            if reader.fieldnames is None or not set(TRIPLE_FIELDS) <= {c.strip() for c in reader.fieldnames}:
                raise SourceFileError(path, f"a triples CSV needs a header with columns {', '.join(TRIPLE_FIELDS)} (and optionally source)")
            return [{(k or "").strip(): v for k, v in row.items()} for row in reader]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SourceFileError(path, f"cannot read triples: {exc}") from exc


def build_graph(sources: list[SourceSpec]) -> KnowledgeGraph:
    """Build a graph from sources in order (ontologies before the annotations that use their ids)."""
    if not sources:
        raise ConfigError("a knowledge graph needs at least one source")
    names = [s.path.name for s in sources]
    if len(set(names)) != len(names):  # citations name the file, so two sources must not share a name
        raise ConfigError(f"two sources share a file name ({', '.join(sorted({n for n in names if names.count(n) > 1}))}): rename one")
    builder = GraphBuilder()
    started = time.perf_counter()
    # Ontologies first, so annotations and triples can resolve ids whatever the listed order.
    with paused_gc():
        for spec in sorted(sources, key=lambda s: SOURCE_FORMATS.index(s.format)):
            log.info("adding %s source %s", spec.format, spec.path)
            getattr(builder, f"add_{spec.format}")(spec)
        kg = builder.finish()
    kg.manifest["build_seconds"] = round(time.perf_counter() - started, 3)
    return kg


# --- recipes ---------------------------------------------------------------

def resolve_source_path(spec: str, base: Path) -> Path:
    """A recipe path: ``package:PKG/rel/path`` (a file inside an installed package),
    absolute, or relative to the recipe's folder; ``~`` and ``$VARS`` are expanded."""
    if spec.startswith("package:"):
        package, _, rel = spec[len("package:"):].partition("/")
        found = importlib.util.find_spec(package) if package else None
        if found is None or not found.submodule_search_locations:
            raise ConfigError(f"recipe source {spec!r}: package '{package}' is not installed (pip install {package})")
        path = Path(next(iter(found.submodule_search_locations))) / rel
    else:
        path = Path(os.path.expandvars(spec)).expanduser()
        if not path.is_absolute():
            path = base / path
    if not path.is_file():
        raise SourceFileError(path, f"recipe source {spec!r} not found")
    return path.resolve()


def load_recipe(path: str | Path) -> tuple[str, list[SourceSpec], dict[str, Any]]:
    """Read a recipe YAML: ``name`` (optional) and ``sources``, a list of
    ``{format: obo|hpoa|triples, path: ..., title: ...}``; returns (name, sources, raw)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"recipe not found: {path}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise ConfigError(f"recipe {path} must be a mapping with a non-empty 'sources' list")
    sources = []
    for i, item in enumerate(raw["sources"], start=1):
        if not isinstance(item, dict) or item.get("format") not in SOURCE_FORMATS or not isinstance(item.get("path"), str):
            raise ConfigError(f"recipe {path}: source {i} needs 'format' (one of {', '.join(SOURCE_FORMATS)}) and 'path'")
        sources.append(SourceSpec(item["format"], resolve_source_path(item["path"], path.parent), str(item.get("title") or ""), item["path"]))
    name = str(raw.get("name") or path.stem)
    return name, sources, raw


def build_recipe(recipe: str | Path, *, name: str | None = None, home: str | Path | None = None) -> tuple[KnowledgeGraph, Path]:
    """Build the graph a recipe describes and save it under ``HOME/graphs/NAME``; returns (graph, folder)."""
    recipe_name, sources, raw = load_recipe(recipe)
    name = validate_graph_name(name or recipe_name)
    kg = build_graph(sources)
    kg.manifest.update(name=name, recipe={"path": str(Path(recipe).resolve()), "content": raw})
    folder = graphs_dir(home) / name
    kg.save(folder)
    return kg, folder


__all__ = [
    "GraphBuilder", "SourceSpec", "build_graph", "build_recipe", "load_recipe", "resolve_source_path",
    "normalise_xref", "parse_frequency",
]
