"""FAISS index kinds (HNSW, IVF-PQ, auto): conformance, restructuring by size, tombstones, compaction."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

import medrag.index.faiss_index as faiss_index_module
from medrag.errors import IndexCorrupt, InputError
from medrag.index.base import ManagedVectorIndex
from medrag.index.faiss_index import AnnParams, FaissIndex, choose_structure
from medrag.registry import indexes
from medrag.testing.conformance import (
    ManagedIndexConformance,
    VectorIndexConformance,
    unit_vectors,
)


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    # On a shared 2-core machine OpenMP threads spin against each other: k-means goes from 2 s to 35 s.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


class TestHnswConformance(VectorIndexConformance, ManagedIndexConformance):
    def make_index(self, dim):
        return FaissIndex(dim, kind="hnsw", use_gpu=False)

    def load_index(self, path):
        return FaissIndex.load(path, use_gpu=False)


class TestIvfpqConformance(VectorIndexConformance, ManagedIndexConformance):
    # Below its training size an IVF-PQ index is exact flat; the trained path is tested below.
    def make_index(self, dim):
        return FaissIndex(dim, kind="ivfpq", use_gpu=False)

    def load_index(self, path):
        return FaissIndex.load(path, use_gpu=False)


class TestAutoConformance(VectorIndexConformance, ManagedIndexConformance):
    # Thresholds low enough that the suite's 30 vectors build a graph.
    def make_index(self, dim):
        return FaissIndex(dim, kind="auto", params={"auto_hnsw_from": 10}, use_gpu=False)

    def load_index(self, path):
        return FaissIndex.load(path, use_gpu=False)


class TestFlatManagedConformance(ManagedIndexConformance):
    def make_index(self, dim):
        return FaissIndex(dim, use_gpu=False)

    def load_index(self, path):
        return FaissIndex.load(path, use_gpu=False)


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Unit vectors around a few centres, like sentence embeddings (uniform random data has no neighbours)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall_at_10(index: FaissIndex, x: np.ndarray, queries: np.ndarray) -> float:
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :10]
    found = index.search(queries, k=10)
    return float(np.mean([len({f"v{j}" for j in e} & {h.id for h in hits}) / 10 for e, hits in zip(exact, found)]))


def test_choose_structure_rule():
    p = AnnParams()
    assert [choose_structure("auto", n, p) for n in (0, 19_999, 20_000, 999_999, 1_000_000)] == [
        "flat", "flat", "hnsw", "hnsw", "ivfpq"
    ]
    assert choose_structure("ivfpq", 9_999, p) == "flat" and choose_structure("ivfpq", 10_000, p) == "ivfpq"
    assert choose_structure("hnsw", 0, p) == "hnsw" and choose_structure("flat", 10**9, p) == "flat"


def test_registry_makes_every_kind():
    for kind in ("flat", "hnsw", "ivfpq", "auto"):
        index = indexes.create(kind, dim=8)
        assert isinstance(index, FaissIndex) and index.kind == kind
        assert isinstance(index, ManagedVectorIndex)


def test_bad_params_refused():
    with pytest.raises(InputError, match="unknown index parameter"):
        FaissIndex(8, kind="hnsw", params={"hnsw_mm": 3})
    with pytest.raises(InputError, match="positive"):
        FaissIndex(8, kind="hnsw", params={"hnsw_m": 0})
    with pytest.raises(InputError, match="ivf_codec"):
        FaissIndex(8, kind="ivfpq", params={"ivf_codec": "opq"})
    with pytest.raises(InputError, match="ivf_bits"):
        FaissIndex(8, kind="ivfpq", params={"ivf_bits": 12})
    with pytest.raises(InputError, match="divide"):
        FaissIndex(16, kind="ivfpq", params={"ivf_codec": "pq", "pq_m": 5, "ivf_min_train": 300}).add(
            [f"v{i}" for i in range(300)], unit_vectors(300, 16)
        )


def test_hnsw_delete_leaves_tombstones_until_compact(tmp_path):
    x = clustered(500, 16)
    index = FaissIndex(16, kind="hnsw")
    index.add([f"v{i}" for i in range(500)], x, [{"n": i} for i in range(500)])
    assert index.delete([f"v{i}" for i in range(0, 500, 2)]) == 250
    assert len(index) == 250 and index.deleted == 250 and index.stats()["deleted"] == 250
    found = {h.id for hits in index.search(x[:50], k=20) for h in hits}
    assert found and all(int(i[1:]) % 2 for i in found)

    index.save(tmp_path / "h")
    loaded = FaissIndex.load(tmp_path / "h")
    assert loaded.deleted == 250 and len(loaded) == 250
    assert [h.id for h in loaded.search(x[1:2], k=5)[0]] == [h.id for h in index.search(x[1:2], k=5)[0]]

    report = loaded.compact()
    assert report["dropped"] == 250 and report["after"] == {"count": 250, "stored": 250, "structure": "hnsw"}
    assert loaded.deleted == 0
    assert loaded.search(x[1:2], k=1)[0][0].id == "v1"
    assert loaded.get("v1") == {"n": 1}
    loaded.add(["new"], x[:1])  # ids were renumbered: new rows must not clash
    assert loaded.search(x[:1], k=1)[0][0].id == "new"


@pytest.mark.slow
def test_ivfpq_trains_when_it_reaches_its_training_size(tmp_path):
    dim, n = 32, 3000
    x = clustered(n, dim)
    index = FaissIndex(dim, kind="ivfpq", params={"ivf_min_train": 2000, "ivf_codec": "pq", "pq_m": 8, "pq_bits": 6})
    index.add([f"v{i}" for i in range(1500)], x[:1500], [{"n": i} for i in range(1500)])
    assert index.structure == "flat"
    index.add([f"v{i}" for i in range(1500, n)], x[1500:], [{"n": i} for i in range(1500, n)])
    assert index.structure == "ivfpq" and len(index) == n
    stats = index.stats()
    assert stats["code_bytes"] == 6 and stats["memory_bytes"] < n * dim * 4  # smaller than the float vectors

    queries = clustered(50, dim, seed=1)
    assert recall_at_10(index, x, queries) >= 0.5  # 8-byte codes of 32-d vectors: approximate by design

    # deletes remove rows for real (no tombstones); filters still find rare matches
    assert index.delete(["v0", "v1"]) == 2 and index.deleted == 0 and "v0" not in index
    assert [h.id for h in index.search(x[7:8], k=3, where={"n": 2999})[0]] == ["v2999"]

    index.save(tmp_path / "pq")
    loaded = FaissIndex.load(tmp_path / "pq")
    assert loaded.structure == "ivfpq" and len(loaded) == n - 2
    before = [[h.id for h in hits] for hits in index.search(queries[:5], k=5)]
    assert [[h.id for h in hits] for hits in loaded.search(queries[:5], k=5)] == before

    loaded.delete([f"v{i}" for i in range(2, 1600)])
    report = loaded.compact()  # below the training size again: back to exact flat
    assert report["after"]["structure"] == "flat" and len(loaded) == n - 1600


def test_auto_grows_through_the_structures():
    p = {"auto_hnsw_from": 100, "auto_ivfpq_from": 600, "ivf_min_train": 600, "pq_m": 4, "pq_bits": 4}
    x = clustered(700, 16)
    index = FaissIndex(16, kind="auto", params=p)
    seen = []
    for start in range(0, 700, 50):
        index.add([f"v{i}" for i in range(start, start + 50)], x[start : start + 50])
        seen.append(index.structure)
    assert seen[0] == "flat" and "hnsw" in seen and seen[-1] == "ivfpq"
    assert len(index) == 700
    index.delete([f"v{i}" for i in range(650)])
    assert index.compact()["after"]["structure"] == "flat"


def test_filtered_search_through_the_graph_matches_exact():
    # exact_filter_max tiny: the filters below go through HNSW with a selector (and the exact fallback).
    x = clustered(2000, 16)
    meta = [{"half": i % 2, "rare": i % 100 == 0} for i in range(2000)]
    index = FaissIndex(16, kind="hnsw", params={"exact_filter_max": 5})
    index.add([f"v{i}" for i in range(2000)], x, meta)
    queries = clustered(20, 16, seed=3)
    for where, pool in (({"half": 1}, [i for i in range(2000) if i % 2]), ({"rare": True}, list(range(0, 2000, 100)))):
        exact = np.asarray(pool)[np.argsort(-(queries @ x[pool].T), axis=1)[:, :10]]
        results = index.search(queries, k=10, where=where)
        assert all(len(hits) == 10 for hits in results)
        assert all(all(index.get(h.id) == meta[int(h.id[1:])] for h in hits) for hits in results)
        assert all(all(matches_where(meta[int(h.id[1:])], where) for h in hits) for hits in results)
        overlap = np.mean([len({f"v{j}" for j in e} & {h.id for h in hits}) / 10 for e, hits in zip(exact, results)])
        assert overlap >= 0.9, (where, overlap)


def matches_where(meta, where):
    return all(meta[k] == v for k, v in where.items())


def test_failed_compaction_leaves_the_index_intact(monkeypatch):
    index = FaissIndex(16, kind="hnsw")
    x = unit_vectors(40, 16)
    index.add([f"v{i}" for i in range(40)], x)
    index.delete(["v0"])

    def broken(*args):
        raise MemoryError("out of memory while building")

    monkeypatch.setitem(faiss_index_module.BUILDERS, "hnsw", broken)
    with pytest.raises(MemoryError):
        index.compact()
    assert len(index) == 39 and index.deleted == 1
    assert index.search(x[5:6], k=1)[0][0].id == "v5"


def test_update_metadata_keeps_the_vector():
    index = FaissIndex(16, kind="hnsw")
    x = unit_vectors(5, 16)
    index.add([f"v{i}" for i in range(5)], x, [{"page": i} for i in range(5)])
    index.update_metadata("v2", {"page": 200})
    assert index.search(x[2:3], k=1, where={"page": 200})[0][0].id == "v2"
    assert index.search(x[2:3], k=1, where={"page": 2}) == [[]]
    with pytest.raises(KeyError):
        index.update_metadata("nope", {})


def test_folder_from_before_kinds_still_loads(tmp_path):
    index = FaissIndex(16)
    index.add(["a", "b"], unit_vectors(2, 16))
    index.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old/manifest.json").read_text())
    for key in ("structure", "params", "deleted"):
        del manifest[key]
    (tmp_path / "old/manifest.json").write_text(json.dumps(manifest))
    loaded = FaissIndex.load(tmp_path / "old")
    assert loaded.structure == "flat" and len(loaded) == 2


def test_kind_and_structure_must_agree(tmp_path):
    index = FaissIndex(16, kind="hnsw")
    index.add(["a"], unit_vectors(1, 16))
    index.save(tmp_path / "h")
    manifest = json.loads((tmp_path / "h/manifest.json").read_text())
    (tmp_path / "h/manifest.json").write_text(json.dumps({**manifest, "structure": "flat"}))
    with pytest.raises(IndexCorrupt):
        FaissIndex.load(tmp_path / "h")


def test_ivfpq_default_codec_recall_and_manifest(tmp_path):
    # The default IVF codec (2-bit RaBitQ, re-scored with the originals) on a small clustered set: close to exact search.
    dim, n = 32, 3000
    x = clustered(n, dim)
    index = FaissIndex(dim, kind="ivfpq", params={"ivf_min_train": 2000})
    index.add([f"v{i}" for i in range(n)], x, [{"n": i} for i in range(n)])
    stats = index.stats()
    assert index.structure == "ivfpq" and stats["ivf_codec"] == "rabitq" and stats["ivf_bits"] == 2
    assert stats["ivf_refine"] == 10 and stats["originals_disk_bytes"] == n * dim * 2
    assert stats["memory_bytes"] < n * dim * 4 * 1.5  # codes, not floats, dominate (small dim: per-row overhead shows)
    queries = clustered(50, dim, seed=1)
    assert recall_at_10(index, x, queries) >= 0.95
    hit = index.search(x[5:6], k=1)[0][0]
    assert hit.id == "v5" and abs(hit.score - 1.0) < 0.005  # re-scored: the inner product to float16 precision

    index.save(tmp_path / "rq")
    params = json.loads((tmp_path / "rq/manifest.json").read_text())["params"]
    assert params["ivf_codec"] == "rabitq" and params["ivf_bits"] == 2 and params["ivf_refine"] == 10 and params["ivf_nprobe"] == 32
    loaded = FaissIndex.load(tmp_path / "rq")
    assert loaded.params == index.params and loaded.stats()["ivf_codec"] == "rabitq"
    assert [h.id for h in loaded.search(queries[:3], k=5)[0]] == [h.id for h in index.search(queries[:3], k=5)[0]]
    assert loaded.delete(["v0"]) == 1 and "v0" not in loaded and loaded.deleted == 0


def test_ivfpq_saved_before_codecs_still_loads(tmp_path):
    # Folders written before ivf_codec existed hold IVF-PQ and no ivf_codec/ivf_bits in their params.
    dim, n = 16, 700
    x = clustered(n, dim)
    index = FaissIndex(dim, kind="ivfpq", params={"ivf_min_train": 600, "ivf_codec": "pq", "pq_m": 4, "pq_bits": 4})
    index.add([f"v{i}" for i in range(n)], x)
    index.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old/manifest.json").read_text())
    del manifest["params"]["ivf_codec"], manifest["params"]["ivf_bits"]
    (tmp_path / "old/manifest.json").write_text(json.dumps(manifest))
    loaded = FaissIndex.load(tmp_path / "old")
    assert loaded.params.ivf_codec == "pq" and loaded.stats()["pq_m"] == 4 and len(loaded) == n

    # A manifest naming another codec than the file holds is refused with a clear error.
    manifest["params"]["ivf_codec"] = "rabitq"
    (tmp_path / "old/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorrupt, match="ivf_codec"):
        FaissIndex.load(tmp_path / "old")


@pytest.mark.parametrize(
    "kind, params",
    [
        ("flat", {}),
        ("hnsw", {}),
        ("ivfpq", {"ivf_min_train": 500, "ivf_bits": 1, "ivf_refine": 0}),
        ("ivfpq", {"ivf_min_train": 500, "ivf_bits": 1}),  # with float16 originals re-scoring
    ],
    ids=["flat", "hnsw", "ivfpq", "ivfpq-refine"],
)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_query_refused_by_every_structure(kind, params, bad):
    # Unfiltered searches check finiteness from FAISS's answer, not before it: every structure
    # must still refuse a query with NaN/inf, wherever in the batch it is, and after a delete.
    vectors = unit_vectors(600, 16)
    index = FaissIndex(16, kind=kind, params=params, use_gpu=False)
    index.add([f"d{i}" for i in range(600)], vectors, [{"group": i % 3} for i in range(600)])
    assert index.structure == kind
    queries = unit_vectors(3, 16, seed=7)
    queries[2, 5] = bad
    for where in (None, {"group": 1}):
        with pytest.raises(InputError, match="NaN or infinite"):
            index.search(queries, k=5, where=where)
        with pytest.raises(InputError, match="NaN or infinite"):
            index.search(queries[2], k=5, where=where)
    index.delete(["d0", "d1"])
    with pytest.raises(InputError, match="NaN or infinite"):
        index.search(queries[2], k=5)
    good = index.search(queries[:2], k=5)
    assert [len(hits) for hits in good] == [5, 5]


def test_non_finite_query_refused_by_empty_index():
    with pytest.raises(InputError, match="NaN or infinite"):
        FaissIndex(16, use_gpu=False).search(np.full(16, np.nan, dtype=np.float32), k=3)


def test_query_views_and_other_dtypes_are_searched_as_copies():
    # The unfiltered path hands FAISS a pointer: strided views and float64 must become
    # C-contiguous float32 first, and give the same answer as a plain query.
    vectors = unit_vectors(50, 16)
    index = FaissIndex(16, kind="hnsw", use_gpu=False)
    index.add([f"d{i}" for i in range(50)], vectors)
    plain = index.search(vectors[7], k=3)
    wide = np.zeros((1, 32), dtype=np.float32)
    wide[0, ::2] = vectors[7]
    assert index.search(wide[:, ::2], k=3) == plain
    assert index.search(vectors[7].astype(np.float64), k=3) == plain
    assert index.search(np.asfortranarray(vectors[6:8]), k=3)[1] == plain[0]
