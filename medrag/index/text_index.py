"""A named hybrid text index: dense FAISS vectors + BM25 + the chunks themselves.

Folder layout (one folder per index under ``$MEDRAG_HOME/indexes``)::

    NAME/
      manifest.json   format, embedder, settings, sources (file, hash, chunks), counts
      chunks.jsonl    every chunk with its text and citation fields
      dense/          FaissIndex folder (its own manifest names the embedder)
      lexical/        BM25Index folder

The whole folder is rewritten atomically on save, so a crash or a bad file
never leaves a half-written index behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medrag.embed.base import EmbedderInfo, TextEmbedder
from medrag.errors import IndexCorrupt, IndexMismatch, IndexNotFound, InputError
from medrag.index.bm25 import BM25Index
from medrag.index.folders import IndexFolders, validate_index_name
from medrag.storage import atomic_folder, write_json
from medrag.types import Chunk

FORMAT = "medrag.text-index"
FORMAT_VERSION = 1

# Metadata copied into the vector/lexical indexes so searches can filter on it.
FILTER_FIELDS = ("doc_id", "source", "page", "kind", "section", "figure", "record_id", "record_section", "year", "modality", "date")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class SourceRecord:
    """One ingested source file, so re-ingesting it can be skipped or replaced."""

    source: str
    doc_id: str
    content_hash: str
    title: str
    kind: str
    pages: int
    chunk_ids: list[str] = field(default_factory=list)
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TextIndex:
    """Chunks searchable by meaning (FAISS) and by words (BM25)."""

    def __init__(
        self,
        name: str,
        embedder_info: EmbedderInfo,
        settings: dict[str, Any] | None = None,
        *,
        store: str = "faiss",
        store_uri: str | None = None,
        home: str | Path | None = None,
    ) -> None:
        from medrag.index.stores import create_store

        self.name = validate_index_name(name)
        self.embedder_info = embedder_info
        self.settings = dict(settings or {})
        # Where the vectors live (faiss in this folder, or milvus/pgvector): see medrag.index.stores.
        # settings["index"]: the vector index kind and its parameters, e.g. {"kind": "hnsw", "params": {...}}.
        index_options = {key: value for key, value in (self.settings.get("index") or {}).items() if key in ("kind", "params")}
        self.dense = create_store(
            store, embedder_info.dim, embedder=embedder_info, index_name=self.name, home=home, uri=store_uri, **index_options
        )
        if store != "faiss":
            self.settings["store"] = store
        self.lexical = BM25Index()
        self.chunks: dict[str, Chunk] = {}
        self.sources: dict[str, SourceRecord] = {}  # by doc_id
        self.created = _now()
        self.updated = self.created

    def __len__(self) -> int:
        return len(self.chunks)

    # -- changes -------------------------------------------------------------
    def add_document_chunks(self, record: SourceRecord, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Add one source's chunks and their vectors, replacing an earlier version of the same file."""
        if len(chunks) != len(vectors):
            raise InputError(f"{len(chunks)} chunks but {len(vectors)} vectors for {record.source}")
        self.remove_source(record.source)
        self.remove_doc(record.doc_id)
        ids = [c.chunk_id for c in chunks]
        if chunks:
            meta = [filter_metadata(c) for c in chunks]
            self.dense.add(ids, vectors, meta)
            self.lexical.add(ids, [lexical_text(c) for c in chunks], meta)
            for chunk in chunks:
                self.chunks[chunk.chunk_id] = chunk
        record.chunk_ids = ids
        self.sources[record.doc_id] = record
        self._docs_of_source().setdefault(record.source, set()).add(record.doc_id)
        self._docs_of_hash().setdefault(record.content_hash, set()).add(record.doc_id)
        self.updated = _now()

    def check_embedder(self, embedder: TextEmbedder) -> None:
        if embedder.info() != self.embedder_info:
            raise IndexMismatch(self._mismatch_message(embedder.info()))

    def remove_doc(self, doc_id: str) -> int:
        record = self.sources.pop(doc_id, None)
        if record is None:
            return 0
        self._docs_of_source().get(record.source, set()).discard(doc_id)
        self._docs_of_hash().get(record.content_hash, set()).discard(doc_id)
        self.dense.delete(record.chunk_ids)
        self.lexical.delete(record.chunk_ids)
        for cid in record.chunk_ids:
            self.chunks.pop(cid, None)
        self.updated = _now()
        return len(record.chunk_ids)

    def remove_source(self, source: str) -> int:
        removed = 0
        for doc_id in sorted(self._docs_of_source().get(source, ())):
            removed += self.remove_doc(doc_id)
        return removed

    def compact(self) -> dict[str, Any]:
        """Drop deleted vectors and rebuild the dense structure for the current size (see FaissIndex.compact).

        BM25 needs nothing: its deletes are immediate and its matrix is rebuilt on the next search.
        Stores that compact on their own (no ``compact`` method) report nothing to do.
        """
        compact = getattr(self.dense, "compact", None)
        report = compact() if compact is not None else {"after": {"count": len(self.dense)}, "dropped": 0}
        self.updated = _now()
        return report

    def has_content(self, content_hash: str) -> bool:
        return bool(self._docs_of_hash().get(content_hash))

    # Lookups from source name / content hash to doc ids, kept beside ``sources`` so that adding
    # many files stays linear (a scan of every source per file is quadratic: hours at 100k reports).
    def _docs_of_source(self) -> dict[str, set[str]]:
        return self._docs_by("source")

    def _docs_of_hash(self) -> dict[str, set[str]]:
        return self._docs_by("content_hash")

    def _docs_by(self, field_name: str) -> dict[str, set[str]]:
        """{value of the SourceRecord field: doc ids}, built on first use (a loaded index has none yet)."""
        lookups = self.__dict__.setdefault("_lookups", {})
        if field_name not in lookups:
            table: dict[str, set[str]] = {}
            for doc_id, record in self.sources.items():
                table.setdefault(getattr(record, field_name), set()).add(doc_id)
            lookups[field_name] = table
        return lookups[field_name]

    # -- persistence ---------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "embedder": self.embedder_info.to_dict(),
            "settings": self.settings,
            "created": self.created,
            "updated": self.updated,
            "counts": {"sources": len(self.sources), "chunks": len(self.chunks)},
            "vectors": self.dense.stats() if hasattr(self.dense, "stats") else {"count": len(self.dense)},
            "sources": [r.to_dict() for r in self.sources.values()],
        }

    def save(self, path: str | Path) -> None:
        with atomic_folder(Path(path)) as tmp:
            with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as fh:
                for chunk in self.chunks.values():
                    fh.write(json.dumps(chunk.to_record(), ensure_ascii=False) + "\n")
            self.dense.save(tmp / "dense")
            self.lexical.save(tmp / "lexical")
            write_json(tmp / "manifest.json", self.manifest())

    @classmethod
    def load(cls, path: str | Path, embedder_info: EmbedderInfo | None = None) -> "TextIndex":
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise IndexNotFound(f"no index at {path}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            stored = EmbedderInfo.from_dict(manifest["embedder"])
        except (OSError, ValueError, KeyError) as exc:
            raise IndexCorrupt(f"unreadable manifest {manifest_path}: {exc}") from exc
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise IndexCorrupt(f"{manifest_path} is not a {FORMAT} v{FORMAT_VERSION} manifest")
        index = cls.__new__(cls)
        index.name = manifest["name"]
        index.embedder_info = stored
        if embedder_info is not None and embedder_info != stored:
            raise IndexMismatch(index._mismatch_message(embedder_info))
        index.settings = manifest.get("settings", {})
        index.created = manifest.get("created", "")
        index.updated = manifest.get("updated", "")
        try:
            index.sources = {r["doc_id"]: SourceRecord(**r) for r in manifest.get("sources", [])}
        except (KeyError, TypeError) as exc:
            raise IndexCorrupt(f"{manifest_path} has an unreadable source record: {exc!r}; re-ingest it") from exc
        try:
            from medrag.index.stores import load_store

            index.dense = load_store(path / "dense", embedder=stored)
            index.lexical = BM25Index.load(path / "lexical")
        except IndexNotFound as exc:  # the index exists (it has a manifest) but a part of it is gone
            raise IndexCorrupt(f"index {path} is incomplete: {exc}") from exc
        index.chunks = {}
        try:
            with (path / "chunks.jsonl").open(encoding="utf-8") as fh:
                for line in fh:
                    chunk = Chunk.from_record(json.loads(line))
                    index.chunks[chunk.chunk_id] = chunk
        except (OSError, ValueError, TypeError) as exc:
            raise IndexCorrupt(f"unreadable chunks file in {path}: {exc}") from exc
        if not (len(index.chunks) == len(index.dense) == len(index.lexical)):
            raise IndexCorrupt(
                f"index {path} is inconsistent: {len(index.chunks)} chunks, {len(index.dense)} vectors, "
                f"{len(index.lexical)} lexical entries; re-ingest it"
            )
        stray = [cid for cid in index.chunks if cid not in index.dense or cid not in index.lexical]
        if stray:
            raise IndexCorrupt(
                f"index {path} is inconsistent: {len(stray)} chunks (e.g. {stray[0]!r}) have no vector or "
                "lexical entry; re-ingest it"
            )
        return index

    def _mismatch_message(self, asked: EmbedderInfo) -> str:
        have = self.embedder_info
        return (
            f"index '{self.name}' was built with embedder '{have.name}' (fingerprint {have.fingerprint}, dim {have.dim}) "
            f"but '{asked.name}' (fingerprint {asked.fingerprint}, dim {asked.dim}) was asked for; "
            "search it with the embedder that built it, or re-ingest into a new index"
        )


def filter_metadata(chunk: Chunk) -> dict[str, Any]:
    meta = {"doc_id": chunk.doc_id, "source": chunk.source, "page": chunk.page}
    for key in FILTER_FIELDS[3:]:
        if chunk.metadata.get(key) is not None:
            meta[key] = chunk.metadata[key]
    return meta


def embedding_text(chunk: Chunk) -> str:
    """What the dense embedder reads: the section heading gives short chunks their context."""
    section = chunk.metadata.get("section")
    if section and not chunk.text.startswith(section):
        return f"{section}. {chunk.text}"
    return chunk.text


def lexical_text(chunk: Chunk) -> str:
    section = chunk.metadata.get("section") or ""
    return f"{section}\n{chunk.text}" if section else chunk.text


class IndexStore(IndexFolders[TextIndex]):
    """The named text indexes under one folder (``$MEDRAG_HOME/indexes``)."""

    index_class = TextIndex
    what = "index"
    create_hint = "medrag ingest PATH --index {name}"

    def compact(self, name: str) -> dict[str, Any]:
        """Compact a saved index and write it back atomically (a crash leaves the previous version)."""
        self._require(name)
        index = TextIndex.load(self.path(name))
        report = index.compact()
        self.save(index)
        return report
