"""`medrag index build|add|compact`: index recipes and maintenance (registered on the CLI's `index` group)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def _settings(**overrides):
    from medrag.cli import _settings as cli_settings

    return cli_settings(**overrides)


def _quiet() -> None:
    from medrag.cli import _quiet_libraries

    _quiet_libraries()


def index_build(
    recipe: Annotated[str, typer.Argument(help="recipe: a YAML file, a folder with index.yaml, or a name under ./indexes")],
    name: Annotated[Optional[str], typer.Option("--name", help="index name (default: the recipe's name)")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="delete the index first and build it from scratch")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the build report as JSON")] = False,
) -> None:
    """Build an index from a recipe (sources, embedder, kind, chunking); re-running adds only new or changed files."""
    from medrag.index.recipes import build_recipe, load_recipe

    _quiet()
    settings = _settings(progress=progress)
    report = build_recipe(load_recipe(recipe), settings, name=name, rebuild=rebuild, progress=progress)
    failed = [item for r in report.ingested for item in r.failed]
    for path, reason in failed:
        typer.echo(f"skipped {path}: {reason}", err=True)
    if as_json:
        typer.echo(json.dumps({"index": report.index, "compaction": report.compaction, "vectors": report.vectors,
                               "sources": [r.summary() for r in report.ingested], "failed": failed}, indent=2))
    else:
        typer.echo(report.summary())


def index_add(
    name: Annotated[str, typer.Argument(help="an existing index")],
    paths: Annotated[list[Path], typer.Argument(help="files or folders to add")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad/--strict", help="skip unreadable files, list them and exit 3 (default), or stop at the first one, writing nothing (--strict)")] = True,
    id_field: Annotated[Optional[str], typer.Option(help="JSONL/CSV: field holding the record id")] = None,
    text_field: Annotated[Optional[list[str]], typer.Option(help="JSONL/CSV: text field(s)")] = None,
    title_field: Annotated[Optional[str], typer.Option(help="JSONL/CSV: field holding the title")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Add files to an existing index with the embedder, chunking and kind it was built with."""
    from medrag.config import ChunkingSettings
    from medrag.embed.text import make_embedder
    from medrag.index.text_index import IndexStore
    from medrag.ingest.pipeline import ingest
    from medrag.ingest.records import RecordMapping

    _quiet()
    settings = _settings(progress=progress)
    store = IndexStore(settings.indexes_dir)
    manifest = store.info(name)  # IndexNotFound names `medrag index build` / `ingest` when missing
    chunking = (manifest.get("settings") or {}).get("chunking")
    if chunking:  # new files are cut like the ones already in the index
        settings = settings.model_copy(update={"chunking": ChunkingSettings(**chunking)})
    mapping = RecordMapping(id_field, tuple(text_field or ()), title_field) if (id_field or text_field or title_field) else None
    embedder = make_embedder(manifest["embedder"]["name"], device=settings.device)
    report = ingest(paths, index_name=name, embedder=embedder, settings=settings, skip_bad=skip_bad, mapping=mapping)
    for path, reason in report.failed:
        typer.echo(f"skipped {path}: {reason}", err=True)
    typer.echo(report.summary())
    if report.failed:
        raise typer.Exit(code=3)


def index_compact(name: Annotated[str, typer.Argument(help="index name")]) -> None:
    """Drop deleted vectors and rebuild the search structure for the index's size (saved atomically)."""
    from medrag.index.text_index import IndexStore

    report = IndexStore(_settings().indexes_dir).compact(name)
    before, after = report["before"], report["after"]
    typer.echo(
        f"index '{name}': {before.get('stored', before.get('count'))} stored -> {after.get('stored', after.get('count'))} "
        f"({report['dropped']} deleted rows dropped), structure {before.get('structure', '?')} -> {after.get('structure', '?')}"
    )


def add_index_commands(index_app: typer.Typer) -> None:
    """Register build, add and compact on the `medrag index` group."""
    index_app.command("build")(index_build)
    index_app.command("add")(index_add)
    index_app.command("compact")(index_compact)
