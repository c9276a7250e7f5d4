"""PgvectorStore on an embedded PostgreSQL with pgvector: the shared conformance suite plus store-specific behaviour."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("psycopg", reason='the pgvector store needs pip install "medrag[pgvector]"')
pytest.importorskip("pgvector", reason='the pgvector store needs pip install "medrag[pgvector]"')
pytest.importorskip("pgserver", reason='the embedded PostgreSQL needs pip install "medrag[pgvector]" (pgserver)')

from medrag.embed.base import EmbedderInfo  # noqa: E402
from medrag.errors import IndexMismatch, IndexNotFound, IndexStoreError, InputError  # noqa: E402
from medrag.index.pgvector_store import EMBEDDED, PgvectorStore, _servers, default_uri, filter_sql  # noqa: E402
from medrag.testing.conformance import ManagedIndexConformance, VectorIndexConformance, unit_vectors  # noqa: E402

EMB = EmbedderInfo(name="test-embedder", fingerprint="fp-1", dim=16)


@pytest.fixture(scope="session")
def pg_uri():
    """One embedded PostgreSQL per test session (starting it costs ~3 s); $MEDRAG_TEST_PG_DSN uses a server instead.

    Its data folder is made outside pytest's 0700 temp tree: as root, pgserver runs postgres as
    an unprivileged user that must be able to enter every parent folder.
    """
    if os.environ.get("MEDRAG_TEST_PG_DSN"):
        yield os.environ["MEDRAG_TEST_PG_DSN"]
        return
    folder = Path(tempfile.mkdtemp(prefix="medrag-test-pg-"))
    folder.chmod(0o755)
    yield EMBEDDED + str(folder / "pgdata")
    server = _servers.pop(str((folder / "pgdata").resolve()), None)
    if server is not None:
        server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


class TestPgvectorConformance(VectorIndexConformance, ManagedIndexConformance):
    @pytest.fixture(autouse=True)
    def _uri(self, pg_uri):
        self.uri = pg_uri

    def make_index(self, dim):
        return PgvectorStore(dim, uri=self.uri)

    def load_index(self, path):
        return PgvectorStore.load(path)


class TestPgvectorHnswConformance(TestPgvectorConformance):
    """The approximate (HNSW) table passes too: tiny tables and iterative scans keep it exact here."""

    def make_index(self, dim):
        return PgvectorStore(dim, uri=self.uri, index_type="hnsw")


def test_default_uri_is_under_medrag_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDRAG_PG_DSN", raising=False)
    monkeypatch.setenv("MEDRAG_HOME", str(tmp_path))
    assert default_uri() == EMBEDDED + str(tmp_path / "pgdata")


def test_filter_sql_shapes():
    assert filter_sql(None) == ("TRUE", [])
    sql, params = filter_sql({"kind": "odd", "page": [1, 2]})
    assert sql == "(metadata -> %s) = %s::jsonb AND (metadata -> %s) = ANY(%s::jsonb[])"
    assert params == ["kind", '"odd"', "page", ["1", "2"]]
    with pytest.raises(InputError):
        filter_sql({"page": {"gt": 1}})


def test_manifest_has_no_password(pg_uri, tmp_path):
    store = PgvectorStore(16, uri=pg_uri, embedder=EMB)
    store.add(["a"], unit_vectors(1, 16))
    store.save(tmp_path / "dense")
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    assert manifest["format"] == "medrag.pgvector" and manifest["table"] == store.table and manifest["count"] == 1
    from medrag.index.external import redact_uri

    assert redact_uri("postgresql://me:secret@db.example:5432/med") == "postgresql://db.example:5432/med"


def test_unsaved_rows_are_rolled_back_on_load(pg_uri, tmp_path):
    store = PgvectorStore(16, uri=pg_uri)
    vectors = unit_vectors(4, 16)
    store.add(["a", "b"], vectors[:2])
    store.save(tmp_path / "dense")
    store.add(["c", "d"], vectors[2:])  # the process "dies" before saving
    reopened = PgvectorStore.load(tmp_path / "dense")
    assert len(reopened) == 2 and "c" not in reopened
    reopened.add(["c", "d"], vectors[2:])
    assert len(reopened) == 4


def test_upsert_replaces(pg_uri):
    store = PgvectorStore(16, uri=pg_uri)
    vectors = unit_vectors(3, 16)
    store.add(["a", "b"], vectors[:2], [{"v": 1}, {"v": 1}])
    store.upsert(["a"], vectors[2:3], [{"v": 2}])
    assert len(store) == 2
    hit = store.search(vectors[2:3], k=1)[0][0]
    assert hit.id == "a" and hit.metadata == {"v": 2}


def test_embedder_mismatch_and_missing_table(pg_uri, tmp_path):
    store = PgvectorStore(16, uri=pg_uri, embedder=EMB)
    store.save(tmp_path / "dense")
    with pytest.raises(IndexMismatch):
        PgvectorStore.load(tmp_path / "dense", embedder=EmbedderInfo("other", "fp-2", 16))
    store.drop()
    with pytest.raises(IndexNotFound, match="re-ingest"):
        PgvectorStore.load(tmp_path / "dense")
    with pytest.raises(IndexStoreError, match="already exists"):
        other = PgvectorStore(16, uri=pg_uri)
        PgvectorStore(16, uri=pg_uri, table=other.table)


def test_unreachable_server_names_the_uri():
    with pytest.raises(IndexStoreError, match="127.0.0.1:9"):
        PgvectorStore(16, uri="postgresql://someone:pw@127.0.0.1:9/db")


def test_text_index_on_pgvector(pg_uri, tmp_path, medical_pdf):
    """`ingest --store pgvector`: the named index keeps its vectors in PostgreSQL and reopens from its folder."""
    from medrag.config import load_settings
    from medrag.index.text_index import IndexStore
    from medrag.ingest.pipeline import ingest
    from medrag.testing.fakes import HashingEmbedder

    settings = load_settings(home=str(tmp_path / "home"), progress=False)
    embedder = HashingEmbedder(dim=64)
    report = ingest([medical_pdf], index_name="book", embedder=embedder, settings=settings, vector_store="pgvector", store_uri=pg_uri)
    index = IndexStore(settings.indexes_dir).open("book", embedder.info())
    assert type(index.dense).__name__ == "PgvectorStore" and len(index.dense) == report.total_chunks > 0
    assert index.settings["store"] == "pgvector"
    hits = index.dense.search(embedder.embed_texts(["sinoatrial node pacemaker"]), k=2, where={"page": 2})[0]
    assert hits and all(h.metadata["page"] == 2 for h in hits)
    again = ingest([medical_pdf], index_name="book", embedder=embedder, settings=settings)
    assert again.unchanged == ["anatomy.pdf"] and again.total_chunks == report.total_chunks


def test_ef_search_is_kept_used_and_checked(pg_uri, tmp_path):
    store = PgvectorStore(16, uri=pg_uri, embedder=EMB, index_type="hnsw", ef_search=200)
    store.add([f"v{i}" for i in range(50)], unit_vectors(50, 16))
    store.save(tmp_path / "idx")
    assert json.loads((tmp_path / "idx" / "manifest.json").read_text())["ef_search"] == 200
    loaded = PgvectorStore.load(tmp_path / "idx")
    assert loaded.ef_search == 200
    seen = []
    execute = loaded._conn.execute
    loaded._conn.execute = lambda sql, *a, **kw: (seen.append(sql), execute(sql, *a, **kw))[1]
    loaded.search(unit_vectors(1, 16), k=5)
    assert "SET LOCAL hnsw.ef_search = 200" in seen
    for bad in (0, 1001, "100", True):
        with pytest.raises(InputError, match="ef_search"):
            PgvectorStore(16, uri=pg_uri, index_type="hnsw", ef_search=bad)


def test_recipe_hnsw_ef_search_reaches_the_store(pg_uri):
    from medrag.index.stores import PgvectorKind

    store = PgvectorKind.create(16, embedder=EMB, index_name="efs", uri=pg_uri, kind="hnsw", params={"hnsw_ef_search": 120})
    assert (store.index_type, store.ef_search) == ("hnsw", 120)
