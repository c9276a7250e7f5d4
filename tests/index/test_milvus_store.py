"""MilvusStore on embedded milvus-lite: the shared VectorIndex conformance suite plus store-specific behaviour."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pymilvus", reason='the Milvus store needs pip install "medrag[milvus]"')
pytest.importorskip("milvus_lite", reason='the embedded Milvus store needs pip install "medrag[milvus]"')

from medrag.embed.base import EmbedderInfo  # noqa: E402
from medrag.errors import IndexMismatch, IndexNotFound, IndexStoreError, InputError  # noqa: E402
from medrag.index.milvus_store import MilvusStore, default_uri, filter_expression  # noqa: E402
from medrag.testing.conformance import ManagedIndexConformance, VectorIndexConformance, unit_vectors  # noqa: E402

EMB = EmbedderInfo(name="test-embedder", fingerprint="fp-1", dim=16)


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    """One milvus-lite file per test module: starting the embedded server costs ~2 s."""
    return str(tmp_path_factory.mktemp("milvus") / "test.db")


class TestMilvusConformance(VectorIndexConformance, ManagedIndexConformance):
    @pytest.fixture(autouse=True)
    def _uri(self, milvus_uri):
        self.uri = milvus_uri

    def make_index(self, dim):
        return MilvusStore(dim, uri=self.uri)

    def load_index(self, path):
        return MilvusStore.load(path)


def test_default_uri_is_under_medrag_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDRAG_MILVUS_URI", raising=False)
    monkeypatch.setenv("MEDRAG_HOME", str(tmp_path))
    assert default_uri() == str(tmp_path / "milvus" / "medrag.db")
    monkeypatch.setenv("MEDRAG_MILVUS_URI", "http://milvus.example:19530")
    assert default_uri() == "http://milvus.example:19530"


def test_filter_expression_shapes():
    assert filter_expression(None) == ""
    assert filter_expression({"kind": "odd", "page": {"gte": 2, "lte": 5}}) == (
        '(metadata["kind"] == "odd") and (metadata["page"] >= 2) and (metadata["page"] <= 5)'
    )
    assert filter_expression({"page": [1, 2]}) == '(metadata["page"] == 1 or metadata["page"] == 2)'
    assert filter_expression({"flag": True}) == '(metadata["flag"] == true)'
    with pytest.raises(InputError):
        filter_expression({"page": {"gt": 3}})


def test_manifest_names_the_collection_without_credentials(milvus_uri, tmp_path):
    store = MilvusStore(16, uri=milvus_uri, embedder=EMB)
    store.add(["a"], unit_vectors(1, 16))
    store.save(tmp_path / "dense")
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    assert manifest["format"] == "medrag.milvus" and manifest["table"] == store.collection
    assert manifest["uri"] == milvus_uri and manifest["count"] == 1 and manifest["embedder"] == EMB.to_dict()
    assert sorted(p.name for p in (tmp_path / "dense").iterdir()) == ["manifest.json"]


def test_unsaved_rows_are_rolled_back_on_load(milvus_uri, tmp_path):
    """A session killed before its save leaves no rows behind: a re-run neither duplicates nor clashes."""
    store = MilvusStore(16, uri=milvus_uri)
    vectors = unit_vectors(4, 16)
    store.add(["a", "b"], vectors[:2])
    store.save(tmp_path / "dense")
    store.add(["c", "d"], vectors[2:])  # then the process "dies" before saving
    reopened = MilvusStore.load(tmp_path / "dense")
    assert len(reopened) == 2 and "c" not in reopened
    reopened.add(["c", "d"], vectors[2:])
    assert len(reopened) == 4


def test_upsert_replaces_vector_and_metadata(milvus_uri):
    store = MilvusStore(16, uri=milvus_uri)
    vectors = unit_vectors(3, 16)
    store.add(["a", "b"], vectors[:2], [{"v": 1}, {"v": 1}])
    store.upsert(["a"], vectors[2:3], [{"v": 2}])
    assert len(store) == 2
    hit = store.search(vectors[2:3], k=1)[0][0]
    assert hit.id == "a" and hit.metadata == {"v": 2}


def test_embedder_mismatch_refused(milvus_uri, tmp_path):
    store = MilvusStore(16, uri=milvus_uri, embedder=EMB)
    store.save(tmp_path / "dense")
    with pytest.raises(IndexMismatch):
        MilvusStore.load(tmp_path / "dense", embedder=EmbedderInfo("other", "fp-2", 16))
    with pytest.raises(InputError):
        MilvusStore(32, uri=milvus_uri, embedder=EMB)


def test_dropped_collection_is_reported(milvus_uri, tmp_path):
    store = MilvusStore(16, uri=milvus_uri)
    store.save(tmp_path / "dense")
    store.drop()
    with pytest.raises(IndexNotFound, match="re-ingest"):
        MilvusStore.load(tmp_path / "dense")


def test_existing_collection_not_clobbered(milvus_uri):
    store = MilvusStore(16, uri=milvus_uri)
    with pytest.raises(IndexStoreError, match="already exists"):
        MilvusStore(16, uri=milvus_uri, collection=store.collection)


@pytest.mark.slow
def test_unreachable_server_names_the_uri():
    with pytest.raises(IndexStoreError, match="127.0.0.1:9"):
        MilvusStore(16, uri="http://127.0.0.1:9")
