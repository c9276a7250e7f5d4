"""Where a text index keeps its vectors: ``faiss`` (a file in the index folder), ``milvus`` or ``pgvector``.

Each store kind is registered in ``medrag.registry.stores`` (plugins add more
through the ``medrag.stores`` entry point) as an object with::

    format: str                                      the "format" its saved manifest carries
    create(dim, *, embedder, index_name, home, uri)  a new, empty VectorIndex
    load(path, *, embedder)                          reopen a saved one

so callers pick a store by name (``--store``, ``store:`` in a recipe) and never branch on it.
The store classes themselves are also in ``medrag.registry.indexes`` beside the FAISS kinds,
as plain ``factory(dim, **options) -> VectorIndex`` entries.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from medrag.embed.base import EmbedderInfo
from medrag.errors import ConfigError, IndexCorrupt
from medrag.index import external
from medrag.registry import indexes, stores
from medrag.storage import read_json

DEFAULT_STORE = "faiss"
log = logging.getLogger(__name__)


def _table_for(index_name: str, home: str | Path | None) -> str:
    """One collection/table per (MEDRAG_HOME, index name): two homes sharing a server never collide."""
    where = str(Path(home).expanduser().resolve()) if home is not None else ""
    return external.table_name("medrag_", f"{index_name}_{hashlib.sha1(where.encode()).hexdigest()[:8]}")


def _external_kind(store: str, kind: str, params: dict | None, supported: dict[str, str]) -> str:
    """The store's own index type for a recipe's ``index.kind``; FAISS AnnParams do not apply to it."""
    if kind not in supported:
        raise ConfigError(f"the {store} store supports index kinds {', '.join(supported)}, not {kind!r}")
    if params:
        log.warning("index params %s are FAISS parameters; the %s store ignores them", sorted(params), store)
    return supported[kind]


class FaissStore:
    format = "medrag.faiss"

    @staticmethod
    def create(
        dim: int, *, embedder: EmbedderInfo | None, index_name: str = "", home: Any = None, uri: str | None = None,
        kind: str = "flat", params: dict | None = None,
    ):
        from medrag.index.faiss_index import FaissIndex

        # kind/params: flat, hnsw, ivfpq or auto and their AnnParams (an index recipe's ``index:`` section).
        return FaissIndex(dim, embedder=embedder, kind=kind, params=params)

    @staticmethod
    def load(path: str | Path, *, embedder: EmbedderInfo | None = None):
        from medrag.index.faiss_index import FaissIndex

        return FaissIndex.load(path, embedder=embedder)


class MilvusKind:
    format = "medrag.milvus"

    @staticmethod
    def create(
        dim: int, *, embedder: EmbedderInfo | None, index_name: str, home: Any = None, uri: str | None = None,
        kind: str = "flat", params: dict | None = None,
    ):
        from medrag.index.milvus_store import MilvusStore, default_uri

        _external_kind("milvus", kind, params, {"flat": "FLAT", "auto": "FLAT"})
        # No folder exists for this index yet, so a collection of the same name is a crashed first run's.
        return MilvusStore(dim, uri=uri or default_uri(home), collection=_table_for(index_name, home), embedder=embedder, overwrite=True)

    @staticmethod
    def load(path: str | Path, *, embedder: EmbedderInfo | None = None):
        from medrag.index.milvus_store import MilvusStore

        return MilvusStore.load(path, embedder=embedder)


class PgvectorKind:
    format = "medrag.pgvector"

    @staticmethod
    def create(
        dim: int, *, embedder: EmbedderInfo | None, index_name: str, home: Any = None, uri: str | None = None,
        kind: str = "flat", params: dict | None = None,
    ):
        from medrag.index.pgvector_store import DEFAULT_EF_SEARCH, PgvectorStore, default_uri

        params = dict(params or {})
        ef_search = params.pop("hnsw_ef_search", DEFAULT_EF_SEARCH)  # the one ANN parameter pgvector shares with FAISS
        index_type = _external_kind("pgvector", kind, params, {"flat": "flat", "auto": "flat", "hnsw": "hnsw"})
        return PgvectorStore(
            dim, uri=uri or default_uri(home), table=_table_for(index_name, home), embedder=embedder, overwrite=True,
            index_type=index_type, ef_search=ef_search,
        )

    @staticmethod
    def load(path: str | Path, *, embedder: EmbedderInfo | None = None):
        from medrag.index.pgvector_store import PgvectorStore

        return PgvectorStore.load(path, embedder=embedder)


stores.register("faiss", FaissStore)
stores.register("milvus", MilvusKind)
stores.register("pgvector", PgvectorKind)


def _lazy_factory(module: str, name: str):
    def factory(dim: int, **options: Any):
        import importlib

        return getattr(importlib.import_module(module), name)(dim, **options)

    factory.__doc__ = f"A {name} (medrag.index.{module.rsplit('.', 1)[1]})."
    return factory


indexes.register("milvus", _lazy_factory("medrag.index.milvus_store", "MilvusStore"), replace=True)
indexes.register("pgvector", _lazy_factory("medrag.index.pgvector_store", "PgvectorStore"), replace=True)


def check_store(store: str) -> str:
    """``store`` if it names a registered store kind, else RegistryError listing the known ones."""
    stores.get(store)
    return store


def create_store(
    store: str, dim: int, *, embedder: EmbedderInfo | None, index_name: str, home: Any = None, uri: str | None = None, **options: Any
):
    """A new empty VectorIndex of the named store kind; an unknown name lists the known ones.

    ``options`` go to the store (FAISS: ``kind`` and ``params``); only given when the caller set them.
    """
    return stores.get(store or DEFAULT_STORE).create(dim, embedder=embedder, index_name=index_name, home=home, uri=uri, **options)


def store_of(path: str | Path) -> str:
    """The store name a saved vector folder was written by (from its manifest's format)."""
    manifest_path = Path(path) / "manifest.json"
    try:
        fmt = read_json(manifest_path).get("format")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_STORE  # let the FAISS loader report the missing/corrupt folder in its own words
    for name in stores.names():
        if getattr(stores.get(name), "format", None) == fmt:
            return name
    raise IndexCorrupt(f"{manifest_path}: no installed store reads format {fmt!r} (known: {', '.join(stores.names())})")


def load_store(path: str | Path, *, embedder: EmbedderInfo | None = None):
    """Reopen a saved VectorIndex, whichever store wrote it."""
    return stores.get(store_of(path)).load(path, embedder=embedder)
