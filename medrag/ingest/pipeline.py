"""Ingestion: source files -> documents -> chunks -> vectors -> a named index.

Files are parsed before anything is embedded or written, so a bad file
(missing, not a PDF, corrupt, encrypted) stops the run with a clear error and
leaves the index as it was; with ``skip_bad=True`` bad files are reported and
the rest go in. Files already in the index with the same content hash are
skipped; a changed file replaces its earlier version.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medrag.config import Settings
from medrag.embed.base import TextEmbedder
from medrag.errors import InputError, MedragError, SourceFileError, failure_reason
import medrag.ingest.ontology  # noqa: F401  (registers the .obo reader)
import medrag.ingest.records  # noqa: F401  (registers the .jsonl and .csv readers)
import medrag.ingest.reports  # noqa: F401  (registers the .xml and .txt report readers)
from medrag.index.text_index import IndexStore, SourceRecord, TextIndex, embedding_text
from medrag.registry import sources
from medrag.types import Chunk, Document

log = logging.getLogger(__name__)


@sources.register(".pdf")
def _read_pdf_source(path: Path, settings: Settings, **_options) -> Document:
    from medrag.ingest.pdf import read_pdf

    assets = settings.home / "assets"
    return read_pdf(path, thumbnails_dir=assets / "pages", figures_dir=assets / "figures", ocr=settings.ocr)


def chunk_for(doc: Document, settings: Settings) -> list[Chunk]:
    """Split a document into chunks the way its kind needs (pages for books, terms for ontologies)."""
    if doc.kind == "ontology":
        from medrag.ingest.ontology import chunk_ontology

        return chunk_ontology(doc)
    if doc.kind == "records":
        from medrag.ingest.records import chunk_records

        return chunk_records(doc, **settings.chunking.model_dump())
    from medrag.ingest.chunking import chunk_document
    from medrag.ingest.figures import attach_figures

    chunks = chunk_document(doc, **settings.chunking.model_dump())
    attach_figures(doc, chunks)  # caption chunks carry their figure's image and region
    return chunks


def supported_suffixes() -> list[str]:
    return [name for name in sources.names() if name.startswith(".")]


def collect_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the supported files inside them; missing paths are errors."""
    files: list[Path] = []
    suffixes = set(supported_suffixes())
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise SourceFileError(path, "file not found")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise SourceFileError(path, f"folder holds no supported files ({', '.join(sorted(suffixes))})")
            files.extend(found)
        else:
            files.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise InputError("no files to ingest")
    return unique


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_source(path: Path, settings: Settings, **options) -> Document:
    """Read one file with the reader registered for its suffix; ``options`` (e.g. ``mapping``) go to the reader."""
    suffix = path.suffix.lower()
    if suffix not in sources:
        raise SourceFileError(path, f"unsupported file type '{suffix or '(none)'}'; supported: {', '.join(supported_suffixes())}")
    return sources.get(suffix)(path, settings, **options)


@dataclass
class IngestReport:
    index: str
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    total_chunks: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        parts = [f"index '{self.index}': {len(self.added)} added", f"{len(self.replaced)} replaced", f"{len(self.unchanged)} unchanged"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts) + f"; +{self.chunks_added} chunks ({self.total_chunks} in all) in {self.seconds:.1f}s"


EMBED_GROUP = 256  # texts per embedder call: few calls, and a progress step every few seconds
EMBED_GROUP_CHUNKS = 2048  # chunks of whole files embedded together between checkpoints
CHECKPOINT_SECONDS = 60.0  # save the index again after this much work: a crash loses at most about this much


def file_groups(pending: Sequence, min_chunks: int) -> Iterable[list]:
    """Consecutive groups of (doc, chunks, replaces) holding at least ``min_chunks`` chunks (the last may hold fewer)."""
    group: list = []
    count = 0
    for entry in pending:
        group.append(entry)
        count += len(entry[1])
        if count >= min_chunks:
            yield group
            group, count = [], 0
    if group:
        yield group


def embed_in_batches(embedder: TextEmbedder, texts: Sequence[str], batch_size: int = EMBED_GROUP, progress=None) -> np.ndarray:
    """Embed texts longest first, ``batch_size`` per call; the vectors come back in input order.

    Why sort: a model batch is padded to its longest text, so batching texts of similar length
    (over all files of a run, not file by file) wastes the least work on padding, and few large
    calls cost less than one small call per file (each call pays tokenizer and thread start-up).
    """
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    vectors: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        picked = order[start : start + batch_size]
        part = np.asarray(embedder.embed_texts([texts[i] for i in picked]), dtype=np.float32)
        if vectors is None:
            vectors = np.empty((len(texts), part.shape[1]), dtype=np.float32)
        vectors[picked] = part
        if progress is not None:
            progress.update(len(picked))
    return vectors


def add_chunks(
    index: TextIndex,
    record: SourceRecord,
    chunks: Sequence[Chunk],
    embedder: TextEmbedder,
    progress=None,
    text_for_embedding: Callable[[Chunk], str] = embedding_text,
) -> None:
    vectors = embed_in_batches(embedder, [text_for_embedding(c) for c in chunks], progress=progress)
    index.add_document_chunks(record, chunks, vectors)


def open_or_create(
    store: IndexStore, name: str, embedder: TextEmbedder, settings: Settings, *, vector_store: str = "faiss", store_uri: str | None = None
) -> TextIndex:
    """Open the named index, or make a new one whose vectors go to ``vector_store`` (faiss, milvus, pgvector)."""
    info = embedder.info()
    if store.exists(name):
        return store.open(name, info)
    return TextIndex(
        name, info, settings={"chunking": settings.chunking.model_dump()}, store=vector_store, store_uri=store_uri, home=settings.home
    )


def attach_thumbnails(doc: Document, chunks: Sequence[Chunk]) -> None:
    """Each chunk of a paged document points at its page thumbnail."""
    for chunk in chunks:
        thumb = doc.pages[chunk.page - 1].thumbnail_path if chunk.page and chunk.page <= len(doc.pages) else None
        if thumb:
            chunk.metadata["thumbnail"] = thumb


def source_record(doc: Document) -> SourceRecord:
    return SourceRecord(
        source=doc.source,
        doc_id=doc.doc_id,
        content_hash=doc.content_hash,
        title=doc.title,
        kind=doc.kind,
        pages=len(doc.pages),
        path=str(doc.metadata.get("path", "")),
    )


def check_unique_ids(path: Path, doc: Document, chunks: Sequence[Chunk], index: TextIndex, claimed: dict[str, str]) -> None:
    """Refuse a file whose chunk ids (report ids, record ids) another source already uses: one would overwrite the other.

    ``claimed`` maps the chunk ids of the files accepted so far in this run to their source
    (a dict, so checking many small files stays linear); this file's ids are added to it.
    """
    ids = sorted({c.chunk_id for c in chunks})
    clash = [cid for cid in ids if cid in claimed]
    if clash:
        raise SourceFileError(path, f"duplicate id '{clash[0]}': {claimed[clash[0]]} in this batch has it too")
    for chunk_id in ids:
        existing = index.chunks.get(chunk_id)
        if existing is not None and existing.source != doc.source:
            raise SourceFileError(path, f"duplicate id '{chunk_id}': already in index '{index.name}' from {existing.source}")
    claimed.update(dict.fromkeys(ids, doc.source))


def ingest(
    paths: Iterable[str | Path],
    *,
    index_name: str,
    embedder: TextEmbedder,
    settings: Settings,
    skip_bad: bool = False,
    progress: bool | None = None,
    mapping=None,
    vector_store: str = "faiss",
    store_uri: str | None = None,
    checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
) -> IngestReport:
    """Ingest files into the named index under ``settings.home`` and save it atomically.

    Files are parsed first (nothing is written while parsing), then embedded in groups of whole
    files; after a group, the index is saved again when ``checkpoint_seconds`` have passed since
    the last save, so a crash loses at most that much embedding work (a re-run skips what was
    saved, by content hash). ``None`` saves only at the end.

    ``mapping`` (a RecordMapping) says which fields of JSONL/CSV records are id, title and text.
    Image files and image folders (PNG/JPEG/DICOM, images.jsonl sidecar) go to the image index
    of the same name (medrag.ingest.images); mixing them with documents in one call is refused.
    """
    from medrag.ingest.images import ingest_images, split_image_paths

    image_paths, other_paths = split_image_paths(list(paths))
    if image_paths and other_paths:
        raise InputError(f"ingest images ({image_paths[0]}) and documents ({other_paths[0]}) in separate calls: they go to different indexes")
    if image_paths:
        return ingest_images(image_paths, index_name=index_name, embedder=embedder, settings=settings, skip_bad=skip_bad, progress=progress)
    paths = other_paths
    started = time.perf_counter()
    show = settings.progress if progress is None else progress
    store = IndexStore(settings.indexes_dir)
    index = open_or_create(store, index_name, embedder, settings, vector_store=vector_store, store_uri=store_uri)
    report = IngestReport(index=index.name)

    # Pass 1: hash and parse everything; nothing is written yet.
    # Sets built once: looking each file up in the index's source list would be quadratic in files.
    known_hashes = {r.content_hash for r in index.sources.values()}
    known_sources = {r.source for r in index.sources.values()}
    claimed: dict[str, str] = {}
    pending: list[tuple[Document, list[Chunk], bool]] = []
    for path in tqdm(collect_files(paths), desc="reading", unit="file", disable=not show):
        try:
            if file_sha256(path) in known_hashes:
                report.unchanged.append(path.name)
                continue
            doc = read_source(path, settings, **({"mapping": mapping} if mapping is not None else {}))
            if doc.content_hash in known_hashes:  # readers that hash file + options (records)
                report.unchanged.append(path.name)
                continue
            chunks = chunk_for(doc, settings)
            check_unique_ids(path, doc, chunks, index, claimed)
        except MedragError as exc:
            if not skip_bad:
                raise
            log.warning("skipping %s: %s", path, failure_reason(exc))
            report.failed.append((str(path), failure_reason(exc)))
            continue
        attach_thumbnails(doc, chunks)
        pending.append((doc, chunks, doc.source in known_sources))

    # Pass 2: embed groups of whole files together (longest first, large batches), add, checkpoint.
    total = sum(len(chunks) for _, chunks, _ in pending)
    last_save = time.perf_counter()
    with tqdm(total=total, desc="embedding", unit="chunk", disable=not show or total == 0) as bar:
        for group in file_groups(pending, EMBED_GROUP_CHUNKS):
            texts = [embedding_text(c) for _, chunks, _ in group for c in chunks]
            vectors = embed_in_batches(embedder, texts, progress=bar)
            start = 0
            for doc, chunks, replaces in group:
                index.add_document_chunks(source_record(doc), chunks, vectors[start : start + len(chunks)])
                start += len(chunks)
                (report.replaced if replaces else report.added).append(doc.source)
                report.chunks_added += len(chunks)
            if checkpoint_seconds is not None and time.perf_counter() - last_save >= checkpoint_seconds:
                store.save(index)
                last_save = time.perf_counter()

    if pending:
        store.save(index)
    elif not store.exists(index.name):
        reasons = "; ".join(f"{p}: {r}" for p, r in report.failed) or "no readable files"
        raise InputError(f"nothing was ingested, so index '{index.name}' was not created ({reasons})")
    report.total_chunks = len(index)
    report.seconds = time.perf_counter() - started
    return report
