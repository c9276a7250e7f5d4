"""A VectorIndex on PostgreSQL + pgvector.

One table per index: ``id`` (text primary key), ``embedding`` (vector(dim),
inner product), ``metadata`` (jsonb, filtered in SQL) and ``txn`` (the save
generation, see medrag.index.external). Every write is one transaction, so a
failed batch leaves nothing behind.

Where the data lives:

- no DSN: an embedded PostgreSQL with pgvector (the ``pgserver``
  package) in ``$MEDRAG_HOME/pgdata``, started on first use;
- ``dsn=`` / ``--store-uri`` / ``$MEDRAG_PG_DSN``: ``postgresql://HOST/DB``. The
  password belongs in the environment (``$MEDRAG_PG_DSN``, ``PGPASSWORD`` or
  ``~/.pgpass``); the saved manifest never holds it.
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

FORMAT = "medrag.pgvector"
DSN_ENV = "MEDRAG_PG_DSN"
EMBEDDED = "embedded:"  # URI prefix of the embedded server: embedded:/path/to/pgdata
# hnsw.ef_search: candidates the graph walk keeps. pgvector's default 40 serves 100k rows (recall@10
# 0.995 in tools/bench_scale.py) but not 1M (0.67): large tables need more (recipe: hnsw_ef_search).
DEFAULT_EF_SEARCH = 40
MAX_EF_SEARCH = 1000  # pgvector's upper limit
INDEX_TYPES = ("flat", "hnsw")
_servers: dict[str, Any] = {}


def default_uri(home: str | Path | None = None) -> str:
    """``$MEDRAG_PG_DSN``, else the embedded server's data folder under MEDRAG_HOME."""
    if os.environ.get(DSN_ENV):
        return os.environ[DSN_ENV]
    root = Path(home) if home is not None else Path(os.environ.get("MEDRAG_HOME") or "~/.medrag")
    return EMBEDDED + str(root.expanduser() / "pgdata")


def embedded_server(pgdata: str | Path) -> Any:
    """Start (once per process) the embedded PostgreSQL in ``pgdata``; it stops when the process ends."""
    key = str(Path(pgdata).expanduser().resolve())
    if key not in _servers:
        pgserver = require("pgserver", package="pgserver", extra="pgvector", purpose="The embedded PostgreSQL store")
        Path(key).mkdir(parents=True, exist_ok=True)
        _check_reachable_by_postgres(Path(key))
        try:
            _servers[key] = pgserver.get_server(key, cleanup_mode="stop")
        except Exception as exc:
            raise IndexStoreError(f"cannot start the embedded PostgreSQL in {key}: {str(exc)[:300]}") from exc
    return _servers[key]


def _check_reachable_by_postgres(pgdata: Path) -> None:
    """As root, pgserver runs postgres as an unprivileged user, who must be able to enter every parent folder."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    for folder in pgdata.parents:
        if not os.stat(folder).st_mode & 0o001:
            raise IndexStoreError(
                f"the embedded PostgreSQL runs as an unprivileged user when medrag runs as root, and cannot enter "
                f"{folder} (mode {oct(os.stat(folder).st_mode & 0o777)}); set MEDRAG_HOME to a folder outside it, "
                f"or chmod o+x {folder}"
            )


def connect(uri: str) -> Any:
    """An autocommit psycopg connection with the vector type registered."""
    psycopg = require("psycopg", package="psycopg[binary]", extra="pgvector", purpose="The pgvector store")
    pgvector_psycopg = require("pgvector.psycopg", package="pgvector", extra="pgvector", purpose="The pgvector store")
    dsn = embedded_server(uri[len(EMBEDDED):]).get_uri() if uri.startswith(EMBEDDED) else uri
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise IndexStoreError(
            f"cannot reach PostgreSQL at {external.redact_uri(uri)} ({str(exc).strip()[:200]}); "
            f"start it, or point --store-uri / {DSN_ENV} at a running one"
        ) from exc
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        conn.close()
        raise IndexStoreError(
            f"PostgreSQL at {external.redact_uri(uri)} has no pgvector extension ({str(exc).strip()[:200]}); "
            "install pgvector there (e.g. apt-get install postgresql-15-pgvector)"
        ) from exc
    pgvector_psycopg.register_vector(conn)
    return conn


def filter_sql(where: Where | None) -> tuple[str, list[Any]]:
    """A Where filter as a SQL condition over the jsonb ``metadata`` column, with its parameters."""
    terms, params = [], []
    for key, op, value in external.check_where(where):
        field = "(metadata -> %s)"
        if op == "eq" and value is None:
            terms.append(f"({field} IS NULL OR {field} = 'null'::jsonb)")
            params += [key, key]
        elif op == "eq":
            terms.append(f"{field} = %s::jsonb")
            params += [key, json.dumps(value)]
        elif op == "in":
            terms.append(f"{field} = ANY(%s::jsonb[])")
            params += [key, [json.dumps(v) for v in value]]
        else:  # jsonb orders across types; compare only like with like, as Python would
            terms.append(f"(jsonb_typeof({field}) = jsonb_typeof(%s::jsonb) AND {field} {'>=' if op == 'gte' else '<='} %s::jsonb)")
            params += [key, json.dumps(value), key, json.dumps(value)]
    return " AND ".join(terms) or "TRUE", params


def _vector_text(row: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in row) + "]"


class PgvectorStore:
    """Inner-product search in a PostgreSQL table (exact by default); see medrag.index.base.VectorIndex."""

    format = FORMAT

    def __init__(
        self,
        dim: int,
        *,
        uri: str | None = None,
        table: str | None = None,
        embedder: EmbedderInfo | None = None,
        overwrite: bool = False,
        index_type: str = "flat",
        ef_search: int = DEFAULT_EF_SEARCH,
        _generation: int = 0,
        _open: bool = False,
    ) -> None:
        self._dim = external.check_dim(dim)
        if embedder is not None and embedder.dim != self._dim:
            raise InputError(f"Embedder {embedder.name} produces {embedder.dim}-d vectors but the index has dim {self._dim}")
        if index_type not in INDEX_TYPES:
            raise InputError(f"unknown pgvector index type {index_type!r}; known: {', '.join(INDEX_TYPES)}")
        self.uri = uri or default_uri()
        self.table = table or f"medrag_{uuid.uuid4().hex[:16]}"
        if external.table_name("", self.table) != self.table:
            raise InputError(f"table name {self.table!r}: use lower-case letters, digits and '_'")
        self.embedder = embedder
        self.index_type = index_type
        if not isinstance(ef_search, int) or isinstance(ef_search, bool) or not 1 <= ef_search <= MAX_EF_SEARCH:
            raise InputError(f"pgvector ef_search must be an integer from 1 to {MAX_EF_SEARCH}, got {ef_search!r}")
        self.ef_search = ef_search
        self._generation = _generation
        self.created = utc_now()
        self._conn = connect(self.uri)
        if _open:
            return
        if self._exists():
            if not overwrite:
                raise IndexStoreError(
                    f"table {self.table!r} already exists at {external.redact_uri(self.uri)}; "
                    "open it with PgvectorStore.load(folder) or pass overwrite=True"
                )
            self._conn.execute(f"DROP TABLE {self.table}")
        with self._conn.transaction():
            self._conn.execute(
                f"CREATE TABLE {self.table} (id text PRIMARY KEY, embedding vector({self._dim}) NOT NULL, "
                "metadata jsonb NOT NULL DEFAULT '{}', txn bigint NOT NULL)"
            )
            if index_type == "hnsw":
                self._conn.execute(f"CREATE INDEX ON {self.table} USING hnsw (embedding vector_ip_ops)")

    def _exists(self) -> bool:
        return self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self.table]).fetchone()[0]

    # -- introspection -------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return int(self._conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self._conn.execute(f"SELECT 1 FROM {self.table} WHERE id = %s", [id]).fetchone() is not None

    def __repr__(self) -> str:
        return f"PgvectorStore(dim={self._dim}, uri={external.redact_uri(self.uri)!r}, table={self.table!r})"

    def reconstruct(self, id: str) -> np.ndarray:
        row = self._conn.execute(f"SELECT embedding FROM {self.table} WHERE id = %s", [id]).fetchone()
        if row is None:
            raise KeyError(id)
        return np.asarray(row[0], dtype=np.float32)

    # -- writing -------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add vectors under new ids; an id already present raises InputError (use upsert)."""
        ids, x, metas = external.prepare_batch(ids, vectors, metadata, self._dim)
        with self._conn.transaction():
            present = [r[0] for r in self._conn.execute(f"SELECT id FROM {self.table} WHERE id = ANY(%s)", [ids])]
            if present:
                raise InputError(f"{len(present)} id(s) already in the index, e.g. {present[0]!r}; use upsert to replace")
            self._copy(ids, x, metas)

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add vectors, replacing any ids already present (vector and metadata)."""
        ids, x, metas = external.prepare_batch(ids, vectors, metadata, self._dim)
        with self._conn.transaction():
            self._conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", [ids])
            self._copy(ids, x, metas)

    def _copy(self, ids: list[str], x: np.ndarray, metas: list[dict[str, Any]]) -> None:
        pending = self._generation + 1
        from psycopg.types.json import Jsonb

        with self._conn.cursor() as cur:  # binary COPY: vectors go over the wire as float32, not text
            with cur.copy(f"COPY {self.table} (id, embedding, metadata, txn) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["text", "vector", "jsonb", "int8"])
                for id_, row, meta in zip(ids, x, metas):
                    copy.write_row((id_, row, Jsonb(meta), pending))

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ids; returns how many were present (absent ids are ignored)."""
        ids = list(dict.fromkeys(external.check_ids(ids)))
        if not ids:
            return 0
        return self._conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", [ids]).rowcount

    def compact(self) -> dict[str, Any]:
        """VACUUM the table: PostgreSQL reclaims the space of deleted rows and updates its statistics."""
        before = self.stats()
        self._conn.execute(f"VACUUM (ANALYZE) {self.table}")
        return {"before": before, "after": self.stats()}

    def stats(self) -> dict[str, Any]:
        count = len(self)
        size = self._conn.execute("SELECT pg_total_relation_size(%s::regclass)", [self.table]).fetchone()[0]
        return {
            "kind": f"pgvector-{self.index_type}",
            "count": count,
            "dim": self._dim,
            "deleted": 0,  # deleted rows are invisible at once; VACUUM reclaims their space
            "memory_bytes": int(size),  # table + indexes on disk (PostgreSQL caches what it needs)
            "uri": external.redact_uri(self.uri),
            "table": self.table,
        }

    # -- search --------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int, where: Where | None = None) -> list[list[Hit]]:
        """For each query row, up to k hits by descending score; ``where`` is evaluated in SQL."""
        k = external.check_k(k)
        q = external.as_matrix(vectors, self._dim, what="query vectors", allow_1d=True)
        condition, params = filter_sql(where)
        # An HNSW index can only serve ORDER BY <distance> alone: a second sort key (id, for
        # deterministic ties) makes PostgreSQL sort the whole table, i.e. an exact scan. So the
        # HNSW path orders by distance only and breaks ties by id in Python.
        tie = "" if self.index_type == "hnsw" else ", id"
        sql = (
            f"SELECT id, -(embedding <#> %s::vector) AS score, metadata FROM {self.table} "
            f"WHERE {condition} ORDER BY embedding <#> %s::vector{tie} LIMIT %s"
        )
        results = []
        with self._conn.transaction():
            if self.index_type == "hnsw":  # the graph walk returns at most ef_search rows before filtering
                self._conn.execute(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, min(MAX_EF_SEARCH, 2 * k))}")
            for row in q:
                text = _vector_text(row)
                rows = self._conn.execute(sql, [text, *params, text, k]).fetchall()
                if self.index_type == "hnsw" and len(rows) < k and len(self) > len(rows):
                    # The filter dropped most of what the graph walk found: scan exactly so rare
                    # matches are still reached (pgvector < 0.8 has no iterative index scans).
                    self._conn.execute("SET LOCAL enable_indexscan = off")
                    rows = self._conn.execute(sql, [text, *params, text, k]).fetchall()
                    self._conn.execute("SET LOCAL enable_indexscan = on")
                if tie == "":
                    rows.sort(key=lambda r: (-r[1], r[0]))
                results.append([Hit(id=r[0], score=float(r[1]), metadata=r[2]) for r in rows])
        return results

    # -- persistence ---------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return external.base_manifest(
            FORMAT, dim=self._dim, uri=self.uri, table=self.table, generation=self._generation,
            count=len(self), embedder=self.embedder, created=self.created,
        ) | {"index_type": self.index_type, "ef_search": self.ef_search}

    def save(self, path: str | Path) -> None:
        """Commit what was written since the last save and write the folder that points at the table."""
        committed = self._generation + 1  # rows written since the last save carry txn=committed
        self._generation = committed
        try:
            external.write_manifest(path, self.manifest())
        except BaseException:
            self._generation = committed - 1
            raise

    @classmethod
    def load(cls, path: str | Path, *, embedder: EmbedderInfo | None = None, uri: str | None = None) -> "PgvectorStore":
        """Reconnect to the table a saved folder names, dropping rows no save committed."""
        folder = Path(path)
        manifest = external.read_manifest(folder, FORMAT, "pgvector")
        stored = external.stored_embedder(folder, manifest, embedder)
        saved_uri = str(manifest["uri"])
        if not uri and not saved_uri.startswith(EMBEDDED):  # a server: the environment may hold the password
            uri = os.environ.get(DSN_ENV)
        self = cls(
            int(manifest["dim"]), uri=uri or saved_uri, table=str(manifest["table"]), embedder=stored,
            index_type=str(manifest.get("index_type", "flat")), ef_search=int(manifest.get("ef_search", DEFAULT_EF_SEARCH)), _generation=int(manifest["generation"]), _open=True,
        )
        if not self._exists():
            raise IndexNotFound(f"{folder}: table {self.table!r} is gone from {external.redact_uri(self.uri)}; re-ingest to rebuild it")
        typmod = self._conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'", [self.table]
        ).fetchone()
        if typmod is None or int(typmod[0]) != self._dim:
            raise IndexCorrupt(f"{folder}: table {self.table!r} holds {typmod[0] if typmod else '?'}-d vectors, manifest says {self._dim}")
        self._conn.execute(f"DELETE FROM {self.table} WHERE txn > %s", [self._generation])  # an unsaved (crashed) session's rows
        self.created = str(manifest.get("created") or self.created)
        return self

    def drop(self) -> None:
        """Delete the table and everything in it."""
        self._conn.execute(f"DROP TABLE IF EXISTS {self.table}")
