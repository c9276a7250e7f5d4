"""The Ray Data engine for ``medrag ingest --engine ray``: the same pipeline, spread over a Ray cluster.

    files --(tasks: read_source, chunk_for)--> chunk rows --(actor pool: one embedder per actor,
    batched)--> chunk rows + vectors --(driver: TextIndex.add_document_chunks, save)--> the chosen store

Parsing and chunking reuse medrag.ingest.pipeline (read_source, chunk_for, attach_thumbnails,
source_record), so the ids, chunks and vectors are those of the local engine. The driver is
the only writer: it gathers each file's chunks as they stream in and adds the file once all of
them are embedded, so an embedded store (FAISS file, milvus-lite) never sees two writers.

Failures: a file that cannot be read or chunked becomes one error row; it is counted in
``IngestReport.failed`` and the run goes on. Ray retries tasks and restarts actors whose
worker died. Resuming works as for the local engine (files already in the index with the same
content hash are skipped); ``checkpoint_every=N`` also saves the index every N files, so a
killed job loses at most N files' work, and external stores roll back rows no save committed.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from medrag.config import Settings
from medrag.embed.base import TextEmbedder
from medrag.errors import ConfigError, InputError, MedragError, failure_reason, require
from medrag.index.text_index import IndexStore, SourceRecord, embedding_text
from medrag.ingest.pipeline import (
    IngestReport,
    attach_thumbnails,
    chunk_for,
    collect_files,
    file_sha256,
    open_or_create,
    read_source,
    source_record,
)
from medrag.types import Chunk

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (auto, ray://HOST:PORT) or start a local Ray; a no-op when already connected."""
    ray = require("ray", package="ray[data]", extra="ray", purpose="The Ray ingestion engine")
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        options["address"] = address
    elif num_cpus:
        options["num_cpus"] = num_cpus
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot start or reach Ray at {address or 'a new local instance'}: {exc}") from exc


def parse_file(row: dict[str, Any], settings: Settings, mapping: Any = None) -> list[dict[str, Any]]:
    """One file -> one row per chunk (text to embed, chunk record, its source record), or one error row."""
    path = Path(row["path"])
    base = {"path": str(path), "error": "", "doc": "", "n": 0, "i": 0, "chunk": "", "text": ""}
    try:
        doc = read_source(path, settings, **({"mapping": mapping} if mapping is not None else {}))
        chunks = chunk_for(doc, settings)
        attach_thumbnails(doc, chunks)
    except MedragError as exc:
        return [{**base, "error": failure_reason(exc)}]
    except Exception as exc:  # a reader bug on one odd file must not stop a library-sized run
        return [{**base, "error": f"{type(exc).__name__}: {exc}"}]
    doc_json = json.dumps(source_record(doc).to_dict(), ensure_ascii=False)
    if not chunks:
        return [{**base, "doc": doc_json}]
    return [
        {**base, "doc": doc_json, "n": len(chunks), "i": i, "chunk": json.dumps(c.to_record(), ensure_ascii=False), "text": embedding_text(c)}
        for i, c in enumerate(chunks)
    ]


class EmbedActor:
    """Loads the embedder once per actor and embeds batches of chunk rows (error rows get zeros)."""

    def __init__(self, factory: Callable[[], TextEmbedder]) -> None:
        self.embedder = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        has_text = np.array([bool(c) for c in batch["chunk"]], dtype=bool)
        vectors = np.zeros((len(has_text), self.embedder.dim), dtype=np.float32)
        if has_text.any():
            vectors[has_text] = self.embedder.embed_texts([str(t) for t in batch["text"][has_text]])
        return {**batch, "vector": vectors}


def ingest_ray(
    paths: Iterable[str | Path],
    *,
    index_name: str,
    embedder_factory: Callable[[], TextEmbedder],
    settings: Settings,
    address: str | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    batch_size: int = 64,
    checkpoint_every: int = 0,
    progress: bool | None = None,
    mapping: Any = None,
    vector_store: str = "faiss",
    store_uri: str | None = None,
) -> IngestReport:
    """Ingest files into the named index on Ray Data; same results as ``medrag.ingest.pipeline.ingest``.

    ``embedder_factory`` builds the embedder (it is pickled to each actor, which calls it once);
    the driver calls it too, to name the embedder in the index manifest.
    """
    if workers < 1 or batch_size < 1 or checkpoint_every < 0:
        raise InputError("workers and batch_size must be at least 1, checkpoint_every at least 0")
    started = time.perf_counter()
    show = settings.progress if progress is None else progress
    init_ray(address)
    import ray

    embedder = embedder_factory()
    store = IndexStore(settings.indexes_dir)
    index = open_or_create(store, index_name, embedder, settings, vector_store=vector_store, store_uri=store_uri)
    report = IngestReport(index=index.name)

    todo = []
    for path in collect_files(paths):
        try:
            unchanged = index.has_content(file_sha256(path))
        except OSError as exc:
            report.failed.append((str(path), f"cannot read: {exc}"))
            continue
        (report.unchanged.append(path.name) if unchanged else todo.append(str(path)))

    written = 0
    if todo:
        cpus_per_worker = _actor_cpus(workers, cpus_per_worker, float(ray.cluster_resources().get("CPU", 0)))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(show)
        ds = (
            ray.data.from_items([{"path": p} for p in todo], override_num_blocks=min(len(todo), 200))
            .flat_map(parse_file, fn_args=(settings, mapping))
            .map_batches(
                EmbedActor,
                fn_constructor_args=(embedder_factory,),
                concurrency=workers,
                num_cpus=cpus_per_worker,
                batch_size=batch_size,
                batch_format="numpy",
            )
        )
        gathered: dict[str, list[dict[str, Any]]] = {}
        for row in ds.iter_rows():
            if row["error"]:
                log.warning("skipping %s: %s", row["path"], row["error"])
                report.failed.append((row["path"], row["error"]))
                continue
            rows = gathered.setdefault(row["path"], [])
            rows.append(row)
            if len(rows) < max(1, int(row["n"])):
                continue
            del gathered[row["path"]]
            _add_file(index, rows, report)
            written += 1
            if checkpoint_every and written % checkpoint_every == 0:
                store.save(index)
        if gathered:  # cannot happen unless Ray dropped rows: say so rather than save half a file
            raise MedragError(f"Ray returned incomplete chunk sets for {len(gathered)} file(s), e.g. {next(iter(gathered))}; re-run")

    if written:
        store.save(index)
    elif not store.exists(index.name):
        reasons = "; ".join(f"{p}: {r}" for p, r in report.failed) or "no readable files"
        raise InputError(f"nothing was ingested, so index '{index.name}' was not created ({reasons})")
    report.total_chunks = len(index)
    report.seconds = time.perf_counter() - started
    return report


def _actor_cpus(workers: int, cpus_per_worker: float, cluster_cpus: float) -> float:
    """CPUs each embedding actor reserves, leaving one CPU for the parse tasks.

    The actor pool starts first; if its actors reserved every CPU of the cluster (``--workers 2`` on
    a 2-CPU machine), the parse tasks (1 CPU each) could never be scheduled and the run would wait
    forever. So the actors share what is left after one CPU (at least 0.1 each).
    """
    if cluster_cpus >= 2 and workers * cpus_per_worker > cluster_cpus - 1:
        fitted = max(0.1, (cluster_cpus - 1) / workers)
        log.warning("%d workers x %.2g CPUs would leave no CPU for parsing on this %g-CPU cluster: each reserves %.2g", workers, cpus_per_worker, cluster_cpus, fitted)
        return fitted
    return cpus_per_worker


def _add_file(index, rows: list[dict[str, Any]], report: IngestReport) -> None:
    record = SourceRecord(**json.loads(rows[0]["doc"]))
    if index.has_content(record.content_hash):  # readers that hash file + options (records)
        report.unchanged.append(Path(rows[0]["path"]).name)
        return
    rows = sorted((r for r in rows if r["chunk"]), key=lambda r: int(r["i"]))
    chunks = [Chunk.from_record(json.loads(r["chunk"])) for r in rows]
    vectors = np.stack([np.asarray(r["vector"], dtype=np.float32) for r in rows]) if rows else np.zeros((0, index.embedder_info.dim), np.float32)
    replaces = any(r.source == record.source for r in index.sources.values())
    index.add_document_chunks(record, chunks, vectors)
    (report.replaced if replaces else report.added).append(record.source)
    report.chunks_added += len(chunks)


# -- engines by name (``--engine``, ``engine:`` in a recipe) --------------------------------------


def _run_local(paths, *, embedder_spec: str, settings: Settings, ray_address=None, workers=1, **options) -> IngestReport:
    from medrag.embed.text import make_embedder
    from medrag.ingest.pipeline import ingest

    return ingest(paths, embedder=make_embedder(embedder_spec, device=settings.device), settings=settings, **options)


def _run_ray(paths, *, embedder_spec: str, settings: Settings, ray_address=None, workers=1, skip_bad=True, **options) -> IngestReport:
    from medrag.embed.text import make_embedder

    # skip_bad does not apply: on Ray a bad file is always reported and skipped, never fatal
    factory = functools.partial(make_embedder, embedder_spec, device=settings.device)
    return ingest_ray(paths, embedder_factory=factory, settings=settings, address=ray_address, workers=workers, **options)


ENGINES: dict[str, Callable[..., IngestReport]] = {"local": _run_local, "ray": _run_ray}


def run_engine(engine: str, paths, **options) -> IngestReport:
    """Run the named ingestion engine; an unknown name lists the known ones."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown ingestion engine {engine!r}; known: {', '.join(sorted(ENGINES))}")
    return ENGINES[engine](paths, **options)
