"""`medrag kg ...`: build, inspect and query knowledge graphs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from medrag.errors import InputError
from medrag.storage import read_queries

kg_app = typer.Typer(help="Build and query knowledge graphs (HPO, Disease Ontology, annotations, triples).", no_args_is_help=True)


def _home() -> Path:
    # The main app's settings honour --config; imported here because medrag.cli imports this module.
    from medrag import cli as main_cli

    return main_cli._settings().home


def _open(name: str):
    from medrag.kg.graph import open_graph

    return open_graph(name, _home())


@kg_app.command("build")
def build(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML (see knowledge/hpo_do.yaml)")],
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="graph name (default: the recipe's name)")] = None,
) -> None:
    """Build a graph from a recipe and save it under $MEDRAG_HOME/graphs/NAME."""
    from medrag.kg.build import build_recipe

    started = time.perf_counter()
    kg, folder = build_recipe(recipe, name=name, home=_home())
    counts = kg.manifest["counts"]
    typer.echo(f"built graph '{kg.name}' in {time.perf_counter() - started:.1f} s: {counts['nodes']} nodes, {counts['edges']} edges -> {folder}")
    for kind, problem in kg.manifest.get("problems", {}).items():
        if problem["count"]:
            typer.echo(f"  {kind}: {problem['count']} (e.g. {problem['examples'][0]})", err=True)


@kg_app.command("link")
def link(
    text: Annotated[Optional[str], typer.Argument(help="text to link, e.g. 'tall, long fingers, lens dislocation'")] = None,
    graph: Annotated[str, typer.Option("--graph", "-g", help="graph name")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    queries: Annotated[Optional[Path], typer.Option("--queries", help='JSONL file of {"qid", "text"}: one JSON line out per query')] = None,
    per_span: Annotated[int, typer.Option("--per-span", help="nodes per span (ambiguous names)")] = 1,
) -> None:
    """Link text to graph nodes: spans, ids, names and scores."""
    from medrag.kg.linking import EntityLinker

    if not graph:
        raise InputError("name the graph with --graph NAME (see: medrag kg list)")
    if queries is None and not text:
        raise InputError("give TEXT or --queries FILE.jsonl")
    rows = read_queries(queries) if queries is not None else [{"qid": None, "text": text}]
    linker = EntityLinker(_open(graph))
    for row in rows:
        links = [link.to_dict() for link in linker.link(row["text"], per_span=per_span)]
        if queries is not None:
            out = [{"span": x["span"], "node_id": x["node_id"], "name": x["name"], "score": x["score"]} for x in links]
            typer.echo(json.dumps({"qid": row.get("qid"), "links": out}, ensure_ascii=False))
        elif as_json:
            typer.echo(json.dumps({"text": row["text"], "links": links}, ensure_ascii=False, indent=2))
        else:
            if not links:
                typer.echo("no concepts found")
            for x in links:
                typer.echo(f"{x['span']['start']}-{x['span']['end']}\t{x['span']['text']!r}\t{x['node_id']}\t{x['name']}\t{x['score']:.3f}\t{x['method']}")


@kg_app.command("diseases")
def diseases(
    text: Annotated[str, typer.Argument(help="phenotypes, e.g. 'tall stature, arachnodactyly, ectopia lentis'")],
    graph: Annotated[str, typer.Option("--graph", "-g", help="graph name")] = "",
    k: Annotated[int, typer.Option("-k", help="number of diseases")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Rank diseases by the phenotypes found in TEXT, citing the annotations that match."""
    from medrag.kg.graph import describe_match
    from medrag.kg.linking import EntityLinker

    if not graph:
        raise InputError("name the graph with --graph NAME (see: medrag kg list)")
    kg = _open(graph)
    phenotypes = EntityLinker(kg, kinds={"phenotype"}).best_nodes(text)
    if not phenotypes:
        raise InputError(f"no phenotype found in {text!r}; try HPO terms such as 'tall stature' (medrag kg link TEXT --graph {graph})")
    matches = kg.rank_diseases(phenotypes, k=k)
    if as_json:
        typer.echo(json.dumps({
            "phenotypes": [{"node_id": p, "name": kg.graph.nodes[p]["name"]} for p in phenotypes],
            "diseases": [
                {"rank": n, "id": m.disease_id, "name": m.name, "score": m.score, "matched": m.matched,
                 "evidence": [e.to_dict() for e in m.evidence]}
                for n, m in enumerate(matches, start=1)
            ],
        }, ensure_ascii=False, indent=2))
        return
    typer.echo("phenotypes: " + ", ".join(kg.label(p) for p in phenotypes))
    for n, m in enumerate(matches, start=1):
        typer.echo(f"{n:>2}. {m.name} ({m.disease_id})  score {m.score:.3f}")
        for x in m.matched:
            typer.echo("      " + (describe_match(x) if x["annotated"] else f"{x['query_name']} ({x['query']}): no match"))


@kg_app.command("info")
def info(name: Annotated[str, typer.Argument(help="graph name")]) -> None:
    """Print a graph's manifest as JSON."""
    from medrag.kg.graph import MANIFEST, graph_folder
    from medrag.storage import read_json

    typer.echo(json.dumps(read_json(graph_folder(name, _home()) / MANIFEST), indent=2, ensure_ascii=False))


@kg_app.command("list")
def list_() -> None:
    """List built graphs."""
    from medrag.kg.graph import graphs_dir, list_graphs

    manifests = list_graphs(_home())
    if not manifests:
        typer.echo(f"no knowledge graphs in {graphs_dir(_home())}")
    for m in manifests:
        counts = m.get("counts", {})
        sources = ", ".join(s["file"] for s in m.get("sources", []))
        typer.echo(f"{m.get('name')}\t{counts.get('nodes', '?')} nodes\t{counts.get('edges', '?')} edges\t{sources}\t{m.get('saved', '')}")
