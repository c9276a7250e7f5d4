"""Original vectors kept beside IVF codes: re-scoring, persistence, edits, compaction, corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medrag.errors import IndexCorrupt
from medrag.index.faiss_index import FaissIndex
from medrag.index.originals import ORIGINALS_FILE, OriginalVectors, rescore


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    centres = np.random.default_rng(99).standard_normal((clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(x: np.ndarray, queries: np.ndarray, k: int = 10) -> list[set[str]]:
    return [{f"v{j}" for j in row} for row in np.argsort(-(queries @ x.T), axis=1)[:, :k]]


def recall(index: FaissIndex, x: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    found = index.search(queries, k=k)
    return float(np.mean([len(t & {h.id for h in hits}) / k for t, hits in zip(exact_top(x, queries, k), found)]))


def ivf(params: dict | None = None, dim: int = 32) -> FaissIndex:
    return FaissIndex(dim, kind="ivfpq", params={"ivf_min_train": 1000, "ivf_bits": 1, **(params or {})}, use_gpu=False)


# -- OriginalVectors ---------------------------------------------------------------


def test_rows_in_memory_then_mapped_after_write(tmp_path):
    x = clustered(10, 8)
    store = OriginalVectors(8)
    store.append(0, x[:6])
    store.append(6, x[6:])
    assert len(store) == 10 and store.saved_rows == 0
    ids = np.array([9, 0, 9, 3])
    np.testing.assert_allclose(store.get(ids), x[ids], atol=1e-3)  # float16 precision
    store.write(tmp_path)
    assert (tmp_path / ORIGINALS_FILE).stat().st_size == 10 * 8 * 2
    store.open(tmp_path, 10)
    assert store.saved_rows == 10
    store.append(10, x[:2])  # saved part + new tail
    np.testing.assert_allclose(store.get(np.array([11, 2])), x[[1, 2]], atol=1e-3)
    with pytest.raises(RuntimeError, match="rows from id 5"):
        store.append(5, x[:1])  # ids come in order: a gap or overlap is a bug


def test_open_checks_the_file(tmp_path):
    store = OriginalVectors(8)
    with pytest.raises(IndexCorrupt, match="missing"):
        store.open(tmp_path, 3)
    (tmp_path / ORIGINALS_FILE).write_bytes(b"\0" * (3 * 8 * 2 - 1))
    with pytest.raises(IndexCorrupt, match="need 48"):
        store.open(tmp_path, 3)


def test_rescore_ranks_candidates_by_exact_score_and_pads():
    x = clustered(20, 8)
    store = OriginalVectors(8)
    store.append(0, x)
    q = x[[3, 7]]
    labels = np.array([[1, 3, 5, -1], [-1, -1, -1, -1]])
    scores, top = rescore(q, labels, store, k=3)
    assert top[0].tolist()[0] == 3 and abs(scores[0, 0] - 1.0) < 2e-3
    assert sorted(top[0].tolist()) == [1, 3, 5] and list(scores[0]) == sorted(scores[0], reverse=True)
    assert top[1].tolist() == [-1, -1, -1] and np.isneginf(scores[1]).all()


# -- FaissIndex with ivf_refine -----------------------------------------------------------------


def test_refine_lifts_tiny_codes_to_near_exact_recall():
    x, queries = clustered(3000, 32), clustered(40, 32, seed=1)
    plain, refined = ivf({"ivf_refine": 0}), ivf({"ivf_refine": 10})
    for index in (plain, refined):
        index.add([f"v{i}" for i in range(len(x))], x)
        assert index.structure == "ivfpq"
    assert "originals_disk_bytes" not in plain.stats()
    assert refined.stats()["originals_disk_bytes"] == len(x) * 32 * 2
    assert recall(refined, x, queries) >= 0.97 > recall(plain, x, queries)


def test_save_maps_the_originals_and_edits_survive_reloads(tmp_path):
    x, queries = clustered(2000, 32), clustered(20, 32, seed=1)
    index = ivf({"ivf_refine": 10})
    index.add([f"v{i}" for i in range(len(x))], x, [{"n": i} for i in range(len(x))])
    index.save(tmp_path / "ix")
    assert json.loads((tmp_path / "ix/manifest.json").read_text())["original_rows"] == 2000
    before = [[h.id for h in hits] for hits in index.search(queries, k=5)]
    assert index._originals.saved_rows == 2000  # mapped from the file just written, not kept in memory

    loaded = FaissIndex.load(tmp_path / "ix", use_gpu=False)
    assert [[h.id for h in hits] for hits in loaded.search(queries, k=5)] == before
    np.testing.assert_allclose(loaded.reconstruct("v7"), x[7], atol=1e-3)  # originals, not decoded codes

    # Delete the last rows, add new ones, upsert: the ids handed out next must not reuse the deleted rows.
    assert loaded.delete(["v1999", "v1998"]) == 2
    loaded.save(tmp_path / "ix")
    again = FaissIndex.load(tmp_path / "ix", use_gpu=False)
    assert json.loads((tmp_path / "ix/manifest.json").read_text())["original_rows"] == 2000
    fresh = clustered(3, 32, seed=5)
    again.add(["n0", "n1"], fresh[:2])
    again.upsert(["v5"], fresh[2:3])
    for name, vector in (("n0", fresh[0]), ("n1", fresh[1]), ("v5", fresh[2])):
        assert again.search(vector, k=1)[0][0].id == name
        np.testing.assert_allclose(again.reconstruct(name), vector, atol=1e-3)
    again.save(tmp_path / "ix")
    last = FaissIndex.load(tmp_path / "ix", use_gpu=False)
    assert len(last) == 2000 - 2 + 2 and last.search(fresh[1], k=1)[0][0].id == "n1"
    assert "v1999" not in last and last.get("v10") == {"n": 10}


def test_filters_score_exactly_with_originals():
    x = clustered(2000, 32)
    index = ivf({"ivf_refine": 10})
    index.add([f"v{i}" for i in range(len(x))], x, [{"group": i % 10} for i in range(len(x))])
    hits = index.search(x[13], k=3, where={"group": 3})[0]
    assert hits[0].id == "v13" and abs(hits[0].score - 1.0) < 2e-3 and all(h.metadata["group"] == 3 for h in hits)


def test_compaction_rebuilds_from_the_originals(tmp_path):
    x, queries = clustered(3000, 32), clustered(40, 32, seed=1)
    index = ivf({"ivf_refine": 10})
    index.add([f"v{i}" for i in range(len(x))], x)
    index.save(tmp_path / "ix")
    index = FaissIndex.load(tmp_path / "ix", use_gpu=False)
    index.delete([f"v{i}" for i in range(0, 3000, 3)])
    keep = np.array([i for i in range(3000) if i % 3])
    report = index.compact()
    assert report["after"]["count"] == len(keep) and len(index._originals) == len(keep)

    def kept_recall(ix: FaissIndex) -> float:
        found = ix.search(queries, k=10)
        truth = [{f"v{keep[j]}" for j in row} for row in np.argsort(-(queries @ x[keep].T), axis=1)[:, :10]]
        return float(np.mean([len(t & {h.id for h in hits}) / 10 for t, hits in zip(truth, found)]))

    assert kept_recall(index) >= 0.97
    index.save(tmp_path / "ix")
    loaded = FaissIndex.load(tmp_path / "ix", use_gpu=False)
    assert kept_recall(loaded) >= 0.97 and (tmp_path / "ix" / ORIGINALS_FILE).stat().st_size == len(keep) * 32 * 2


def test_small_ivfpq_index_gets_its_originals_when_it_turns_into_ivf(tmp_path):
    # Below ivf_min_train the index is exact flat and keeps no separate originals; the switch to
    # IVF takes every row's exact vector from the flat structure.
    x = clustered(1500, 32)
    index = ivf({"ivf_refine": 10})
    index.add([f"v{i}" for i in range(500)], x[:500])
    assert index.structure == "flat" and "originals_disk_bytes" not in index.stats()
    index.save(tmp_path / "ix")
    assert not (tmp_path / "ix" / ORIGINALS_FILE).exists()
    index = FaissIndex.load(tmp_path / "ix", use_gpu=False)
    index.add([f"v{i}" for i in range(500, 1500)], x[500:])
    assert index.structure == "ivfpq" and index.stats()["originals_disk_bytes"] == 1500 * 32 * 2
    assert recall(index, x, clustered(20, 32, seed=2)) >= 0.97
    index.save(tmp_path / "ix")
    assert recall(FaissIndex.load(tmp_path / "ix", use_gpu=False), x, clustered(20, 32, seed=2)) >= 0.97


def test_missing_or_truncated_originals_are_reported(tmp_path):
    x = clustered(1200, 32)
    index = ivf({"ivf_refine": 10})
    index.add([f"v{i}" for i in range(len(x))], x)
    index.save(tmp_path / "ix")
    path = tmp_path / "ix" / ORIGINALS_FILE
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(IndexCorrupt, match="float16"):
        FaissIndex.load(tmp_path / "ix")
    path.unlink()
    with pytest.raises(IndexCorrupt, match="missing"):
        FaissIndex.load(tmp_path / "ix")
    path.write_bytes(data)
    manifest = json.loads((tmp_path / "ix/manifest.json").read_text())
    (tmp_path / "ix/manifest.json").write_text(json.dumps({**manifest, "original_rows": 5}))
    with pytest.raises(IndexCorrupt, match="original_rows"):
        FaissIndex.load(tmp_path / "ix")


def test_indexes_saved_before_originals_load_without_them(tmp_path):
    x = clustered(1200, 32)
    index = ivf({"ivf_refine": 0})
    index.add([f"v{i}" for i in range(len(x))], x)
    index.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix/manifest.json").read_text())
    del manifest["params"]["ivf_refine"]
    (tmp_path / "ix/manifest.json").write_text(json.dumps(manifest))
    loaded = FaissIndex.load(tmp_path / "ix")
    assert loaded.params.ivf_refine == 0 and loaded._originals is None and not (tmp_path / "ix" / ORIGINALS_FILE).exists()
    assert loaded.search(x[3], k=1)[0][0].id == "v3"


def test_saved_inside_another_atomic_save_keeps_working(tmp_path):
    # TextIndex saves its dense index into a temporary folder that is then renamed: the mapped
    # originals must follow the file, so the next save (a checkpoint, a later add) still finds them.
    from medrag.storage import atomic_folder

    x = clustered(1600, 32)
    index = ivf({"ivf_refine": 10})
    index.add([f"v{i}" for i in range(1200)], x[:1200])
    for round_ in range(3):
        with atomic_folder(tmp_path / "text") as tmp:
            index.save(tmp / "dense")
            (tmp / "manifest.json").write_text("{}")  # what marks the outer folder as ours
        assert not list(tmp_path.glob(".text.tmp-*"))  # the folder the map was opened in is gone by name
        if round_ < 2:
            index.add([f"v{i}" for i in range(1200 + 200 * round_, 1400 + 200 * round_)], x[1200 + 200 * round_ : 1400 + 200 * round_])
    loaded = FaissIndex.load(tmp_path / "text" / "dense", use_gpu=False)
    assert len(loaded) == 1600 and loaded._originals.saved_rows == 1600
    for i in (0, 1300, 1599):
        assert loaded.search(x[i], k=1)[0][0].id == f"v{i}"
        np.testing.assert_allclose(loaded.reconstruct(f"v{i}"), x[i], atol=1e-3)
