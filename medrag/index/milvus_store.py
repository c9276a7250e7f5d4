"""A VectorIndex on Milvus: embedded milvus-lite by default, a Milvus server or cluster by URI.

One collection per index: ``id`` (VARCHAR primary key), ``vector``
(FLOAT_VECTOR, inner product), ``metadata`` (JSON, filtered with Milvus
expressions) and ``txn`` (the save generation, see medrag.index.external).

Where the data lives:

- no URI: the milvus-lite file ``$MEDRAG_HOME/milvus/medrag.db`` (one process at a time);
- ``uri=`` / ``--store-uri`` / ``$MEDRAG_MILVUS_URI``: a file path ending in ``.db``
  (milvus-lite) or ``http://HOST:19530`` (a server). A token, when the server
  needs one, comes from ``$MEDRAG_MILVUS_TOKEN`` and is never saved.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrag.embed.base import EmbedderInfo
from medrag.errors import IndexCorrupt, IndexNotFound, IndexStoreError, InputError, require
from medrag.index import external
from medrag.index.base import Where
from medrag.storage import utc_now
from medrag.types import Hit

log = logging.getLogger(__name__)

FORMAT = "medrag.milvus"
URI_ENV, TOKEN_ENV = "MEDRAG_MILVUS_URI", "MEDRAG_MILVUS_TOKEN"
MAX_ID_LENGTH = 512
MAX_LIMIT = 16384  # Milvus refuses a larger top-k
_BATCH = 1000  # rows per insert / ids per query expression
# Reads see this client's own writes (one client per URI per process; the driver is the only
# writer) without waiting for the cluster-wide timestamp "Strong" waits for: ~3x faster on lite.
CONSISTENCY = "Session"
_clients: dict[str, Any] = {}


def default_uri(home: str | Path | None = None) -> str:
    """``$MEDRAG_MILVUS_URI``, else the milvus-lite file under MEDRAG_HOME."""
    if os.environ.get(URI_ENV):
        return os.environ[URI_ENV]
    root = Path(home) if home is not None else Path(os.environ.get("MEDRAG_HOME") or "~/.medrag")
    return str(root.expanduser() / "milvus" / "medrag.db")


def _is_lite(uri: str) -> bool:
    return "://" not in uri


def connect(uri: str) -> Any:
    """A MilvusClient for ``uri`` (cached per process); unreachable stores raise IndexStoreError naming it."""
    if uri in _clients:
        return _clients[uri]
    pymilvus = require("pymilvus", extra="milvus", purpose="The Milvus vector store")
    if _is_lite(uri):
        require("milvus_lite", package="milvus-lite", extra="milvus", purpose="The embedded Milvus store (milvus-lite)")
        if not uri.endswith(".db"):
            raise InputError(f"a milvus-lite store is a file ending in .db, got {uri!r}; or give http://HOST:19530")
        Path(uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        uri = str(Path(uri).expanduser())
    try:
        client = pymilvus.MilvusClient(uri=uri, token=os.environ.get(TOKEN_ENV, ""), timeout=30)
    except Exception as exc:
        raise IndexStoreError(
            f"cannot reach the Milvus store at {external.redact_uri(uri)} ({str(exc)[:200]}); "
            f"start it, or point --store-uri / {URI_ENV} at a running one"
        ) from exc
    _clients[uri] = client
    return client


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def filter_expression(where: Where | None) -> str:
    """A Where filter as a Milvus boolean expression over the JSON ``metadata`` field."""
    terms = []
    for key, op, value in external.check_where(where):
        field = f"metadata[{json.dumps(key, ensure_ascii=False)}]"
        if op == "eq" and value is None:
            terms.append(f"not exists {field}")
        elif op == "eq":
            terms.append(f"{field} == {_literal(value)}")
        elif op == "in":
            # milvus-lite refuses `in` on a JSON path: a disjunction of equalities means the same
            options = [f"{field} == {_literal(v)}" for v in value if v is not None]
            options += [f"not exists {field}"] if any(v is None for v in value) else []
            terms.append(" or ".join(options) or "false")
        else:
            terms.append(f"{field} {'>=' if op == 'gte' else '<='} {_literal(value)}")
    return " and ".join(f"({t})" for t in terms)


def _id_list(ids: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(i, ensure_ascii=False) for i in ids) + "]"


class MilvusStore:
    """Exact inner-product search in a Milvus collection; see medrag.index.base.VectorIndex."""

    format = FORMAT

    def __init__(
        self,
        dim: int,
        *,
        uri: str | None = None,
        collection: str | None = None,
        embedder: EmbedderInfo | None = None,
        overwrite: bool = False,
        index_type: str = "FLAT",
        _generation: int = 0,
        _open: bool = False,
    ) -> None:
        self._dim = external.check_dim(dim)
        if embedder is not None and embedder.dim != self._dim:
            raise InputError(f"Embedder {embedder.name} produces {embedder.dim}-d vectors but the index has dim {self._dim}")
        self.uri = uri or default_uri()
        self.collection = collection or f"medrag_{uuid.uuid4().hex[:16]}"
        self.embedder = embedder
        self.index_type = index_type
        self._generation = _generation  # last committed save
        self.created = utc_now()
        self._client = connect(self.uri)
        if _open:
            return
        if self._client.has_collection(self.collection):
            if not overwrite:
                raise IndexStoreError(
                    f"Milvus collection {self.collection!r} already exists at {external.redact_uri(self.uri)}; "
                    "open it with MilvusStore.load(folder) or pass overwrite=True"
                )
            self._client.drop_collection(self.collection)
        self._create_collection()

    def _create_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("txn", DataType.INT64)
        params = self._client.prepare_index_params()
        params.add_index(field_name="vector", index_type=self.index_type, metric_type="IP")
        self._client.create_collection(self.collection, schema=schema, index_params=params, consistency_level=CONSISTENCY)

    # -- introspection -------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"], consistency_level=CONSISTENCY)
        return int(rows[0]["count(*)"]) if rows else 0

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and bool(self._present([id]))

    def __repr__(self) -> str:
        return f"MilvusStore(dim={self._dim}, uri={external.redact_uri(self.uri)!r}, collection={self.collection!r})"

    def _present(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _BATCH):
            part = ids[start : start + _BATCH]
            rows = self._client.query(self.collection, filter=f"id in {_id_list(part)}", output_fields=["id"], consistency_level=CONSISTENCY)
            found.update(r["id"] for r in rows)
        return found

    def reconstruct(self, id: str) -> np.ndarray:
        rows = self._client.query(self.collection, filter=f"id in {_id_list([id])}", output_fields=["vector"], consistency_level=CONSISTENCY)
        if not rows:
            raise KeyError(id)
        return np.asarray(rows[0]["vector"], dtype=np.float32)

    # -- writing -------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add vectors under new ids; an id already present raises InputError (use upsert)."""
        ids, x, metas = self._prepare(ids, vectors, metadata)
        present = self._present(ids)
        if present:
            first = next(i for i in ids if i in present)
            raise InputError(f"{len(present)} id(s) already in the index, e.g. {first!r}; use upsert to replace")
        self._write(ids, x, metas, self._client.insert)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add vectors, replacing any ids already present (vector and metadata)."""
        ids, x, metas = self._prepare(ids, vectors, metadata)
        self._write(ids, x, metas, self._client.upsert)

    def _prepare(self, ids, vectors, metadata):
        ids, x, metas = external.prepare_batch(ids, vectors, metadata, self._dim)
        long = [i for i in ids if len(i.encode("utf-8")) > MAX_ID_LENGTH]
        if long:
            raise InputError(f"ids longer than {MAX_ID_LENGTH} bytes do not fit a Milvus key, e.g. {long[0][:60]!r}...")
        return ids, x, metas

    def _write(self, ids: list[str], x: np.ndarray, metas: list[dict[str, Any]], method) -> None:
        pending = self._generation + 1
        for start in range(0, len(ids), _BATCH):
            rows = [
                {"id": i, "vector": v, "metadata": m, "txn": pending}
                for i, v, m in zip(ids[start : start + _BATCH], x[start : start + _BATCH].tolist(), metas[start : start + _BATCH])
            ]
            method(self.collection, data=rows)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ids; returns how many were present (absent ids are ignored)."""
        ids = list(dict.fromkeys(external.check_ids(ids)))
        present = sorted(self._present(ids))
        for start in range(0, len(present), _BATCH):
            self._client.delete(self.collection, ids=present[start : start + _BATCH])
        return len(present)

    def compact(self) -> dict[str, Any]:
        """Ask Milvus to merge segments and purge deleted rows (it also does so on its own)."""
        before = self.stats()
        try:
            self._client.compact(self.collection)
        except Exception as exc:  # milvus-lite has no compaction: deleted rows are already gone from search
            log.debug("Milvus compaction not available: %s", exc)
        return {"before": before, "after": self.stats()}

    def stats(self) -> dict[str, Any]:
        count = len(self)
        return {
            "kind": f"milvus-{self.index_type.lower()}",
            "count": count,
            "dim": self._dim,
            "deleted": 0,  # Milvus drops deleted rows from search at once and purges them itself
            "memory_bytes": count * self._dim * 4,  # the raw vectors; the server's own overhead is not seen here
            "uri": external.redact_uri(self.uri),
            "collection": self.collection,
        }

    # -- search --------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int, where: Where | None = None) -> list[list[Hit]]:
        """For each query row, up to k hits by descending score; ``where`` is evaluated inside Milvus."""
        k = external.check_k(k)
        q = external.as_matrix(vectors, self._dim, what="query vectors", allow_1d=True)
        expr = filter_expression(where)
        limit = min(k, MAX_LIMIT)  # Milvus returns fewer rows when fewer match
        found = self._client.search(
            self.collection,
            data=q.tolist(),
            limit=limit,
            filter=expr,
            output_fields=["metadata"],
            search_params={"metric_type": "IP"},
            consistency_level=CONSISTENCY,
        )
        return [
            [Hit(id=str(r["id"]), score=float(r["distance"]), metadata=dict(r["entity"].get("metadata") or {})) for r in rows]
            for rows in found
        ]

    # -- persistence ---------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return external.base_manifest(
            FORMAT, dim=self._dim, uri=self.uri, table=self.collection, generation=self._generation,
            count=len(self), embedder=self.embedder, created=self.created,
        ) | {"index_type": self.index_type}

    def save(self, path: str | Path) -> None:
        """Commit what was written since the last save and write the folder that points at the collection."""
        self._client.flush(self.collection)
        committed = self._generation + 1  # rows written since the last save carry txn=committed
        self._generation = committed
        try:
            external.write_manifest(path, self.manifest())
        except BaseException:
            self._generation = committed - 1
            raise

    @classmethod
    def load(cls, path: str | Path, *, embedder: EmbedderInfo | None = None, uri: str | None = None) -> "MilvusStore":
        """Reconnect to the collection a saved folder names, dropping rows no save committed."""
        folder = Path(path)
        manifest = external.read_manifest(folder, FORMAT, "Milvus")
        stored = external.stored_embedder(folder, manifest, embedder)
        saved_uri = str(manifest["uri"])
        if not uri and not _is_lite(saved_uri):  # a server: the environment may name it with credentials
            uri = os.environ.get(URI_ENV)
        self = cls(
            int(manifest["dim"]), uri=uri or saved_uri, collection=str(manifest["table"]), embedder=stored,
            index_type=str(manifest.get("index_type", "FLAT")), _generation=int(manifest["generation"]), _open=True,
        )
        if not self._client.has_collection(self.collection):
            raise IndexNotFound(
                f"{folder}: Milvus collection {self.collection!r} is gone from {external.redact_uri(self.uri)}; re-ingest to rebuild it"
            )
        described = self._client.describe_collection(self.collection)
        dims = [f.get("params", {}).get("dim") for f in described.get("fields", []) if f.get("name") == "vector"]
        if not dims or int(dims[0]) != self._dim:
            raise IndexCorrupt(f"{folder}: collection {self.collection!r} holds {dims[0] if dims else '?'}-d vectors, manifest says {self._dim}")
        self._client.load_collection(self.collection)
        self._client.delete(self.collection, filter=f"txn > {self._generation}")  # an unsaved (crashed) session's rows
        self.created = str(manifest.get("created") or self.created)
        return self

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        self._client.drop_collection(self.collection)
