"""FaissIndex: the shared VectorIndex conformance suite plus FAISS-specific behaviour."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

import medrag.index.faiss_index as faiss_index_module
from medrag.embed.base import EmbedderInfo
from medrag.errors import ConfigError, IndexCorrupt, IndexMismatch, IndexNotFound, InputError, MedragError
from medrag.index.faiss_index import FaissIndex
from medrag.testing.conformance import VectorIndexConformance, unit_vectors

EMB = EmbedderInfo(name="test-embedder", fingerprint="fp-1", dim=16)


class TestFaissConformance(VectorIndexConformance):
    def make_index(self, dim):
        return FaissIndex(dim, use_gpu=False)

    def load_index(self, path):
        return FaissIndex.load(path, use_gpu=False)


def filled(n=10, embedder=EMB):
    index = FaissIndex(16, embedder=embedder)
    vectors = unit_vectors(n, 16)
    index.add([f"c{i}" for i in range(n)], vectors, [{"page": i} for i in range(n)])
    return index, vectors


@pytest.fixture
def saved(tmp_path):
    index, vectors = filled()
    path = tmp_path / "dense"
    index.save(path)
    return path, index, vectors


def test_manifest_contents(saved):
    path, index, _ = saved
    assert sorted(p.name for p in path.iterdir()) == ["ids.json", "index.faiss", "manifest.json", "metadata.jsonl"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "medrag.faiss"
    assert manifest["format_version"] == 1
    assert manifest["kind"] == "flat"
    assert manifest["dim"] == 16
    assert manifest["count"] == 10
    assert manifest["metric"] == "ip"
    assert manifest["embedder"] == EMB.to_dict()
    assert manifest["created"].endswith("Z") and manifest["updated"].endswith("Z")
    ids = json.loads((path / "ids.json").read_text())
    assert ids[:2] == [[0, "c0"], [1, "c1"]]
    lines = (path / "metadata.jsonl").read_text().splitlines()
    assert json.loads(lines[3]) == {"id": "c3", "metadata": {"page": 3}}


def test_manifest_embedder_null_and_restored(tmp_path):
    index, _ = filled(3, embedder=None)
    index.save(tmp_path / "x")
    assert json.loads((tmp_path / "x" / "manifest.json").read_text())["embedder"] is None
    assert FaissIndex.load(tmp_path / "x").embedder is None
    index2, _ = filled(3)
    index2.save(tmp_path / "y")
    assert FaissIndex.load(tmp_path / "y").embedder == EMB


def test_load_with_matching_embedder(saved):
    path, _, vectors = saved
    loaded = FaissIndex.load(path, embedder=EMB)
    assert loaded.search(vectors[2], k=1)[0][0].id == "c2"


@pytest.mark.parametrize(
    "other",
    [
        EmbedderInfo(name="other-model", fingerprint="fp-1", dim=16),
        EmbedderInfo(name="test-embedder", fingerprint="fp-2", dim=16),
        EmbedderInfo(name="test-embedder", fingerprint="fp-1", dim=32),
    ],
)
def test_embedder_mismatch_refused(saved, other):
    path, _, _ = saved
    with pytest.raises(IndexMismatch) as err:
        FaissIndex.load(path, embedder=other)
    message = str(err.value)
    assert "test-embedder" in message and other.name in message
    assert "re-ingest" in message.lower() and "pass the embedder" in message


def test_unrecorded_embedder_checks_dim(tmp_path):
    index, _ = filled(2, embedder=None)
    index.save(tmp_path / "x")
    FaissIndex.load(tmp_path / "x", embedder=EMB)  # dims agree: accepted
    with pytest.raises(IndexMismatch):
        FaissIndex.load(tmp_path / "x", embedder=EmbedderInfo("big", "fp", 32))


def test_missing_folder(tmp_path):
    with pytest.raises(IndexNotFound):
        FaissIndex.load(tmp_path / "nope")


@pytest.mark.parametrize("name", ["ids.json", "index.faiss", "metadata.jsonl", "manifest.json"])
def test_missing_file_is_corrupt(saved, name):
    path, _, _ = saved
    (path / name).unlink()
    with pytest.raises(IndexCorrupt, match=name.replace(".", r"\.")):
        FaissIndex.load(path)


def test_truncated_index_file_is_corrupt(saved):
    path, _, _ = saved
    data = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorrupt, match=r"index\.faiss"):
        FaissIndex.load(path)


def test_garbage_index_file_is_corrupt(saved):
    path, _, _ = saved
    (path / "index.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(IndexCorrupt, match=r"index\.faiss"):
        FaissIndex.load(path)


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_count_mismatch_is_corrupt(saved):
    path, _, _ = saved
    edit_json(path / "manifest.json", count=11)
    with pytest.raises(IndexCorrupt, match=r"index\.faiss.*11"):
        FaissIndex.load(path)


def test_ids_mismatch_is_corrupt(saved):
    path, _, _ = saved
    pairs = json.loads((path / "ids.json").read_text())
    (path / "ids.json").write_text(json.dumps(pairs[:-1]))
    with pytest.raises(IndexCorrupt, match=r"ids\.json"):
        FaissIndex.load(path)
    pairs[-1][0] = 999  # right count, but an id FAISS does not hold
    (path / "ids.json").write_text(json.dumps(pairs))
    with pytest.raises(IndexCorrupt, match=r"ids\.json"):
        FaissIndex.load(path)


def test_metadata_mismatch_is_corrupt(saved):
    path, _, _ = saved
    lines = (path / "metadata.jsonl").read_text().splitlines()
    (path / "metadata.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(IndexCorrupt, match=r"metadata\.jsonl"):
        FaissIndex.load(path)
    (path / "metadata.jsonl").write_text("\n".join(lines[:-1]) + "\n{broken\n")
    with pytest.raises(IndexCorrupt, match=r"metadata\.jsonl"):
        FaissIndex.load(path)


@pytest.mark.parametrize("change", [{"format": "other"}, {"format_version": 2}, {"kind": "hnsw"}, {"dim": "x"}])
def test_bad_manifest_is_corrupt(saved, change):
    path, _, _ = saved
    edit_json(path / "manifest.json", **change)
    with pytest.raises(IndexCorrupt, match=r"manifest\.json"):
        FaissIndex.load(path)


def test_failed_save_leaves_previous_folder(saved, monkeypatch):
    path, index, vectors = saved
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    index.add(["extra"], unit_vectors(1, 16, seed=9), [{"page": 99}])

    def broken_write(*args, **kwargs):
        raise OSError("disk full")

    # fails after index.faiss and ids.json were written into the temp folder
    monkeypatch.setattr(faiss_index_module, "write_jsonl", broken_write)
    with pytest.raises(OSError, match="disk full"):
        index.save(path)

    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["dense"]  # temp folder cleaned up
    loaded = FaissIndex.load(path, embedder=EMB)
    assert len(loaded) == 10 and "extra" not in loaded

    monkeypatch.undo()
    index.save(path)
    assert "extra" in FaissIndex.load(path)


def test_save_refuses_foreign_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"meow")
    index, _ = filled(2)
    with pytest.raises(InputError, match="manifest.json"):
        index.save(tmp_path / "photos")
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"meow"


def test_upsert_replaces_vector_and_metadata():
    index, vectors = filled(5)
    new_vec = unit_vectors(1, 16, seed=42)
    index.upsert(["c2", "c9"], np.vstack([new_vec, vectors[0:1]]), [{"page": 200}, {"page": 900}])
    assert len(index) == 6
    assert index.get("c2") == {"page": 200}
    np.testing.assert_allclose(index.reconstruct("c2"), new_vec[0], atol=1e-6)
    assert index.search(new_vec, k=1)[0][0].id == "c2"
    assert index.search(vectors[2], k=1)[0][0].id != "c2"


def test_upsert_validates_before_deleting():
    index, vectors = filled(3)
    with pytest.raises(InputError):
        index.upsert(["c1"], np.full((1, 16), np.nan, dtype=np.float32))
    assert "c1" in index and index.get("c1") == {"page": 1}


def test_one_dimensional_query():
    index, vectors = filled(5)
    results = index.search(vectors[3], k=2)
    assert len(results) == 1 and results[0][0].id == "c3"


def test_accepts_float64_and_non_contiguous():
    index = FaissIndex(16)
    vectors = unit_vectors(6, 32).astype(np.float64)[:, ::2]  # strided float64 view
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add([f"v{i}" for i in range(6)], vectors)
    assert index.search(vectors[4], k=1)[0][0].id == "v4"


def test_get_ids_reconstruct():
    index, vectors = filled(4)
    assert list(index.ids()) == ["c0", "c1", "c2", "c3"]
    assert index.get("c1") == {"page": 1}
    index.get("c1")["page"] = 5  # a copy
    assert index.get("c1") == {"page": 1}
    np.testing.assert_allclose(index.reconstruct("c3"), vectors[3], atol=1e-6)
    with pytest.raises(KeyError):
        index.get("nope")
    with pytest.raises(KeyError):
        index.reconstruct("nope")


@pytest.mark.parametrize(
    "call",
    [
        lambda ix: ix.add("abc", unit_vectors(3, 16)),
        lambda ix: ix.add([""], unit_vectors(1, 16)),
        lambda ix: ix.add([1], unit_vectors(1, 16)),
        lambda ix: ix.add(["a"], unit_vectors(1, 16)[0]),
        lambda ix: ix.add(["a"], [["x"] * 16]),
        lambda ix: ix.add(["a"], unit_vectors(1, 16), [{"bad": object()}]),
        lambda ix: ix.add(["a"], unit_vectors(1, 16), [{"bad": float("nan")}]),
        lambda ix: ix.search(unit_vectors(1, 16), k=0),
        lambda ix: ix.search(unit_vectors(1, 16), k=True),
    ],
)
def test_bad_input_refused(call):
    index, _ = filled(2)
    with pytest.raises(InputError):
        call(index)
    assert len(index) == 2


def test_constructor_validation():
    with pytest.raises(InputError, match="kind"):
        FaissIndex(16, kind="annoy")
    with pytest.raises(InputError):
        FaissIndex(0)
    with pytest.raises(InputError):
        FaissIndex(8, embedder=EMB)
    with pytest.raises(InputError):
        FaissIndex(16, use_gpu="yes")


@pytest.mark.skipif(faiss_index_module.gpu_count() > 0, reason="a GPU is present")
def test_use_gpu_true_without_gpu_is_a_clear_error(saved):
    with pytest.raises(ConfigError, match="no GPU") as err:
        FaissIndex(16, use_gpu=True)
    assert isinstance(err.value, MedragError)
    with pytest.raises(ConfigError):
        FaissIndex.load(saved[0], use_gpu=True)


def test_auto_uses_cpu_without_gpu():
    index, vectors = filled(3)
    assert index.use_gpu == "auto"
    index.search(vectors, k=1)
    assert index._gpu_index is None


def test_gpu_copy_is_made_lazily_and_invalidated(monkeypatch):
    # Simulate a GPU: the "GPU copy" is a CPU clone, counting how often it is made.
    clones = []

    def fake_to_gpus(index):
        clones.append(index)
        return faiss.clone_index(index)

    monkeypatch.setattr(faiss_index_module, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", fake_to_gpus, raising=False)
    index, vectors = filled(5)
    index.search(vectors, k=2)
    index.search(vectors, k=2)
    assert len(clones) == 1
    index.add(["new"], unit_vectors(1, 16, seed=5))
    assert index._gpu_index is None
    assert index.search(unit_vectors(1, 16, seed=5), k=1)[0][0].id == "new"  # the copy saw the add
    index.delete(["new"])
    assert index.search(unit_vectors(1, 16, seed=5), k=6)[0][-1].id != "new"
    assert len(clones) == 3


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_changing_returned_metadata_never_changes_the_index(tmp_path, kind):
    # Hits share nothing mutable with the index: flat metadata is shallow-copied, nested deep-copied.
    index = FaissIndex(16, kind=kind)
    vectors = unit_vectors(4, 16)
    metadata = [{"page": 0}, {"page": 1, "bbox": [1, 2], "doc": {"title": "t"}}, {"page": 2}, {"tags": []}]
    index.add([f"c{i}" for i in range(4)], vectors, metadata)
    metadata[1]["bbox"].append(3)  # the caller's own dicts are not aliased either
    expected = [{"page": 0}, {"page": 1, "bbox": [1, 2], "doc": {"title": "t"}}, {"page": 2}, {"tags": []}]

    def mutate_all_hits():
        for hit in index.search(vectors, k=4)[0] + index.search(vectors[1], k=1, where={"page": 1})[0]:
            hit.metadata["page"] = -1
            for value in hit.metadata.values():
                if isinstance(value, list):
                    value.append("x")
                elif isinstance(value, dict):
                    value["title"] = "changed"

    mutate_all_hits()
    assert [index.get(f"c{i}") for i in range(4)] == expected
    index.update_metadata("c0", {"page": 0, "refs": ["a"]})  # flat -> nested
    index.update_metadata("c3", {"tags": "none"})  # nested -> flat
    expected[0], expected[3] = {"page": 0, "refs": ["a"]}, {"tags": "none"}
    mutate_all_hits()
    assert [index.get(f"c{i}") for i in range(4)] == expected

    index.save(tmp_path / "i")
    loaded = FaissIndex.load(tmp_path / "i")
    hit = loaded.search(vectors[0], k=1)[0][0]
    hit.metadata["refs"].append("b")
    assert loaded.get("c0") == {"page": 0, "refs": ["a"]}
    assert [h.metadata for h in loaded.search(vectors[0], k=4)[0] if h.id == "c0"] == [{"page": 0, "refs": ["a"]}]


def test_hits_skip_padding_and_deleted_rows():
    index = FaissIndex(16, kind="hnsw")
    vectors = unit_vectors(5, 16)
    index.add([f"c{i}" for i in range(5)], vectors, [{"n": i} for i in range(5)])
    index.delete(["c1", "c3"])
    hits = index.search(vectors[1], k=10)[0]
    assert sorted(h.id for h in hits) == ["c0", "c2", "c4"]
    assert all(h.metadata == {"n": int(h.id[1:])} for h in hits)
    index.add(["c5"], unit_vectors(1, 16, seed=9), [{"n": 5}])  # the row arrays grow past their capacity
    assert index.search(unit_vectors(1, 16, seed=9), k=1)[0][0].metadata == {"n": 5}
