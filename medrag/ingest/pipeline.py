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
from medrag.errors import InputError, MedragError, SourceFileError
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


def embed_in_batches(embedder: TextEmbedder, texts: Sequence[str], batch_size: int = 64, progress=None) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        parts.append(embedder.embed_texts(batch))
        if progress is not None:
            progress.update(len(batch))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate(parts)


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


def check_unique_ids(path: Path, doc: Document, chunks: Sequence[Chunk], index: TextIndex, pending) -> None:
    """Refuse a file whose chunk ids (report ids, record ids) another source already uses: one would overwrite the other."""
    ids = {c.chunk_id for c in chunks}
    for other, other_chunks, _ in pending:
        clash = ids.intersection(c.chunk_id for c in other_chunks)
        if clash:
            raise SourceFileError(path, f"duplicate id '{min(clash)}': {other.source} in this batch has it too")
    for chunk_id in sorted(ids):
        existing = index.chunks.get(chunk_id)
        if existing is not None and existing.source != doc.source:
            raise SourceFileError(path, f"duplicate id '{chunk_id}': already in index '{index.name}' from {existing.source}")


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
) -> IngestReport:
    """Ingest files into the named index under ``settings.home`` and save it atomically.

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
    pending: list[tuple[Document, list[Chunk], bool]] = []
    for path in tqdm(collect_files(paths), desc="reading", unit="file", disable=not show):
        try:
            content_hash = file_sha256(path)
            if index.has_content(content_hash):
                report.unchanged.append(path.name)
                continue
            doc = read_source(path, settings, **({"mapping": mapping} if mapping is not None else {}))
            if index.has_content(doc.content_hash):  # readers that hash file + options (records)
                report.unchanged.append(path.name)
                continue
            chunks = chunk_for(doc, settings)
            check_unique_ids(path, doc, chunks, index, pending)
        except MedragError as exc:
            if not skip_bad:
                raise
            log.warning("skipping %s: %s", path, exc)
            report.failed.append((str(path), str(exc)))
            continue
        replaces = any(r.source == doc.source for r in index.sources.values())
        attach_thumbnails(doc, chunks)
        pending.append((doc, chunks, replaces))

    # Pass 2: embed and add.
    total = sum(len(chunks) for _, chunks, _ in pending)
    with tqdm(total=total, desc="embedding", unit="chunk", disable=not show or total == 0) as bar:
        for doc, chunks, replaces in pending:
            add_chunks(index, source_record(doc), chunks, embedder, progress=bar)
            (report.replaced if replaces else report.added).append(doc.source)
            report.chunks_added += len(chunks)

    if pending:
        store.save(index)
    elif not store.exists(index.name):
        reasons = "; ".join(f"{p}: {r}" for p, r in report.failed) or "no readable files"
        raise InputError(f"nothing was ingested, so index '{index.name}' was not created ({reasons})")
    report.total_chunks = len(index)
    report.seconds = time.perf_counter() - started
    return report
