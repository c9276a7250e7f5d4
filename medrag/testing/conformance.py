"""Conformance tests every VectorIndex implementation must pass.

Usage, in a test module::

    from medrag.testing.conformance import VectorIndexConformance

    class TestMyIndex(VectorIndexConformance):
        def make_index(self, dim):
            return MyIndex(dim)

        def load_index(self, path):
            return MyIndex.load(path)

The mixin's name does not start with "Test", so pytest only collects it
through subclasses. Vectors are random but seeded and L2-normalised, as the
protocol assumes (scores are cosines).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medrag.errors import InputError
from medrag.index.base import VectorIndex

DIM = 16
N = 30


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sample_metadata(i: int) -> dict[str, Any]:
    return {"group": i % 3, "kind": "odd" if i % 2 else "even", "page": i, "tags": [f"t{i % 5}"]}


class VectorIndexConformance:
    """Mixin of test_* methods; subclasses provide ``make_index`` and ``load_index``."""

    dim = DIM

    def make_index(self, dim: int) -> VectorIndex:
        raise NotImplementedError("subclasses return an empty index of this dimension")

    def load_index(self, path: Path) -> VectorIndex:
        raise NotImplementedError("subclasses load an index saved with index.save(path)")

    # -- helpers -------------------------------------------------------------------

    def filled(self, n: int = N) -> tuple[VectorIndex, list[str], np.ndarray]:
        index = self.make_index(self.dim)
        ids = [f"doc-{i}" for i in range(n)]
        vectors = unit_vectors(n, self.dim)
        index.add(ids, vectors, [sample_metadata(i) for i in range(n)])
        return index, ids, vectors

    # -- tests ---------------------------------------------------------------------

    def test_satisfies_protocol(self):
        index = self.make_index(self.dim)
        assert isinstance(index, VectorIndex)
        assert index.dim == self.dim
        assert len(index) == 0

    def test_add_len_contains(self):
        index, ids, _ = self.filled()
        assert len(index) == N
        assert all(i in index for i in ids)
        assert "missing" not in index

    def test_exact_neighbour_first(self):
        index, ids, vectors = self.filled()
        results = index.search(vectors, k=3)
        assert len(results) == N
        for expected, hits in zip(ids, results):
            assert hits[0].id == expected, f"query {expected} found {hits[0].id} first"
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)

    def test_scores_descending_and_k_respected(self):
        index, _, _ = self.filled()
        for hits in index.search(unit_vectors(5, self.dim, seed=1), k=10):
            assert len(hits) == 10
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True), scores
            assert len({h.id for h in hits}) == len(hits)

    def test_hits_carry_metadata(self):
        index, _, vectors = self.filled()
        hit = index.search(vectors[4:5], k=1)[0][0]
        assert hit.id == "doc-4"
        assert hit.metadata == sample_metadata(4)

    def test_hit_metadata_is_a_copy(self):
        index, _, vectors = self.filled()
        hit = index.search(vectors[4:5], k=1)[0][0]
        hit.metadata["group"] = "changed"
        hit.metadata["tags"].append("changed")
        assert index.search(vectors[4:5], k=1)[0][0].metadata == sample_metadata(4)

    def test_k_larger_than_count(self):
        index, _, vectors = self.filled(5)
        hits = index.search(vectors[:1], k=50)[0]
        assert len(hits) == 5
        assert sorted(h.id for h in hits) == [f"doc-{i}" for i in range(5)]

    def test_empty_index_search(self):
        index = self.make_index(self.dim)
        assert index.search(unit_vectors(2, self.dim), k=5) == [[], []]
        assert index.search(unit_vectors(1, self.dim), k=5, where={"group": 1}) == [[]]

    def test_filter_equality(self):
        index, _, vectors = self.filled()
        for hits in index.search(vectors[:5], k=4, where={"group": 1}):
            assert len(hits) == 4
            assert all(h.metadata["group"] == 1 for h in hits)

    def test_filter_equality_two_keys(self):
        index, _, vectors = self.filled()
        hits = index.search(vectors[:1], k=N, where={"group": 0, "kind": "odd"})[0]
        expected = {f"doc-{i}" for i in range(N) if i % 3 == 0 and i % 2 == 1}
        assert {h.id for h in hits} == expected

    def test_filter_membership(self):
        index, _, vectors = self.filled()
        hits = index.search(vectors[:1], k=N, where={"page": [2, 7, 11, 999]})[0]
        assert {h.id for h in hits} == {"doc-2", "doc-7", "doc-11"}

    def test_filter_range(self):
        index, _, vectors = self.filled()
        hits = index.search(vectors[:1], k=N, where={"page": {"gte": 10, "lte": 14}})[0]
        assert {h.id for h in hits} == {f"doc-{i}" for i in range(10, 15)}
        hits = index.search(vectors[:1], k=N, where={"page": {"gte": 27}})[0]
        assert {h.id for h in hits} == {"doc-27", "doc-28", "doc-29"}

    def test_filter_finds_rare_far_matches(self):
        # The only match is the vector least similar to the query: over-fetching must still reach it.
        index, _, vectors = self.filled()
        query = vectors[:1]
        farthest = int(np.argmin(vectors @ query[0]))
        hits = index.search(query, k=3, where={"page": farthest})[0]
        assert [h.id for h in hits] == [f"doc-{farthest}"]

    def test_filter_no_match(self):
        index, _, vectors = self.filled()
        assert index.search(vectors[:2], k=5, where={"group": 42}) == [[], []]

    def test_filtered_scores_descending(self):
        index, _, _ = self.filled()
        hits = index.search(unit_vectors(1, self.dim, seed=3), k=N, where={"kind": "odd"})[0]
        assert len(hits) == N // 2
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)

    def test_delete_then_search(self):
        index, ids, vectors = self.filled()
        assert index.delete(["doc-3", "doc-5", "nope"]) == 2
        assert len(index) == N - 2
        assert "doc-3" not in index and "doc-5" not in index
        found = {h.id for hits in index.search(vectors, k=N) for h in hits}
        assert found == set(ids) - {"doc-3", "doc-5"}
        assert index.search(vectors[3:4], k=1)[0][0].id != "doc-3"
        assert index.delete(["doc-3"]) == 0

    def test_delete_then_add_same_id(self):
        index, _, vectors = self.filled()
        index.delete(["doc-3"])
        index.add(["doc-3"], vectors[7:8], [{"page": 700}])
        hit = index.search(vectors[7:8], k=2, where={"page": 700})[0][0]
        assert hit.id == "doc-3"
        assert hit.metadata == {"page": 700}

    def test_delete_everything(self):
        index, ids, vectors = self.filled(4)
        assert index.delete(ids) == 4
        assert len(index) == 0
        assert index.search(vectors, k=2) == [[], [], [], []]

    def test_metadata_defaults_to_empty(self):
        index = self.make_index(self.dim)
        vectors = unit_vectors(2, self.dim)
        index.add(["a", "b"], vectors)
        assert index.search(vectors[:1], k=1)[0][0].metadata == {}

    def test_duplicate_id_refused(self):
        index, _, vectors = self.filled(3)
        with pytest.raises(InputError):
            index.add(["doc-1"], vectors[:1])
        with pytest.raises(InputError):
            index.add(["new", "new"], vectors[:2])
        assert len(index) == 3 and "new" not in index

    def test_wrong_dim_refused(self):
        index = self.make_index(self.dim)
        with pytest.raises(InputError):
            index.add(["a"], unit_vectors(1, self.dim + 1))
        index.add(["a"], unit_vectors(1, self.dim))
        with pytest.raises(InputError):
            index.search(unit_vectors(1, self.dim - 1), k=1)
        assert len(index) == 1

    def test_ids_vectors_count_mismatch_refused(self):
        index = self.make_index(self.dim)
        with pytest.raises(InputError):
            index.add(["a", "b", "c"], unit_vectors(2, self.dim))
        with pytest.raises(InputError):
            index.add(["a", "b"], unit_vectors(2, self.dim), [{"x": 1}])
        assert len(index) == 0

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_non_finite_refused(self, bad):
        index = self.make_index(self.dim)
        vectors = unit_vectors(2, self.dim)
        vectors[1, 3] = bad
        with pytest.raises(InputError):
            index.add(["a", "b"], vectors)
        assert len(index) == 0
        index.add(["a"], unit_vectors(1, self.dim))
        with pytest.raises(InputError):
            index.search(vectors[1:2], k=1)

    def test_save_load_round_trip(self, tmp_path):
        index, ids, vectors = self.filled()
        index.delete(["doc-0"])  # a gap in internal ids must survive too
        queries = unit_vectors(4, self.dim, seed=7)
        before = index.search(queries, k=5)
        before_filtered = index.search(queries, k=5, where={"group": 2})
        index.save(tmp_path / "idx")

        loaded = self.load_index(tmp_path / "idx")
        assert len(loaded) == len(index) == N - 1
        assert all(i in loaded for i in ids[1:]) and "doc-0" not in loaded
        after = loaded.search(queries, k=5)
        after_filtered = loaded.search(queries, k=5, where={"group": 2})
        for b, a in zip(before + before_filtered, after + after_filtered):
            assert [h.id for h in a] == [h.id for h in b]
            assert [h.metadata for h in a] == [h.metadata for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)

        # the loaded index keeps working: no id clash with what was there before
        loaded.add(["fresh"], vectors[:1], [{"page": -1}])
        assert loaded.search(vectors[:1], k=1, where={"page": -1})[0][0].id == "fresh"

    def test_save_twice_replaces(self, tmp_path):
        index, _, vectors = self.filled(5)
        index.save(tmp_path / "idx")
        index.delete(["doc-1"])
        index.save(tmp_path / "idx")
        loaded = self.load_index(tmp_path / "idx")
        assert len(loaded) == 4 and "doc-1" not in loaded
        # no temp or backup folders left beside it
        assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]

    def test_save_load_empty(self, tmp_path):
        index = self.make_index(self.dim)
        index.save(tmp_path / "empty")
        loaded = self.load_index(tmp_path / "empty")
        assert len(loaded) == 0
        assert loaded.search(unit_vectors(1, self.dim), k=3) == [[]]


class ManagedIndexConformance:
    """Mixin for indexes that also implement ManagedVectorIndex (upsert, compact, stats).

    Use beside VectorIndexConformance; it relies on the same ``make_index`` / ``load_index``.
    """

    dim = DIM

    def make_index(self, dim: int):
        raise NotImplementedError("subclasses return an empty index of this dimension")

    def load_index(self, path: Path):
        raise NotImplementedError("subclasses load an index saved with index.save(path)")

    def _filled(self, n: int = N):
        index = self.make_index(self.dim)
        ids = [f"doc-{i}" for i in range(n)]
        vectors = unit_vectors(n, self.dim)
        index.add(ids, vectors, [sample_metadata(i) for i in range(n)])
        return index, ids, vectors

    def test_satisfies_managed_protocol(self):
        from medrag.index.base import ManagedVectorIndex

        assert isinstance(self.make_index(self.dim), ManagedVectorIndex)

    def test_upsert_replaces_vector_and_metadata(self):
        index, _, vectors = self._filled()
        index.upsert(["doc-3", "new"], vectors[[9, 10]], [{"page": 900}, {"page": 1000}])
        assert len(index) == N + 1
        hits = index.search(vectors[9:10], k=2)[0]
        assert {h.id for h in hits} == {"doc-3", "doc-9"}
        assert index.search(vectors[3:4], k=1, where={"page": 900})[0][0].id == "doc-3"
        assert index.search(vectors[3:4], k=N + 1, where={"page": 3})[0] == []

    def test_upsert_validates_before_deleting(self):
        index, _, vectors = self._filled(3)
        with pytest.raises(InputError):
            index.upsert(["doc-1"], np.full((1, self.dim), np.nan, dtype=np.float32))
        assert "doc-1" in index and len(index) == 3

    def test_compact_keeps_results(self, tmp_path):
        index, ids, vectors = self._filled()
        index.delete(ids[:10])
        queries = unit_vectors(5, self.dim, seed=11)
        before = [[h.id for h in hits] for hits in index.search(queries, k=5)]
        report = index.compact()
        assert report["after"]["count"] == N - 10
        assert [[h.id for h in hits] for hits in index.search(queries, k=5)] == before
        assert index.stats()["deleted"] == 0
        index.save(tmp_path / "c")
        loaded = self.load_index(tmp_path / "c")
        assert [[h.id for h in hits] for hits in loaded.search(queries, k=5)] == before
        loaded.add(["fresh"], vectors[:1])  # renumbered ids must not collide with new ones
        assert loaded.search(vectors[:1], k=1)[0][0].id == "fresh"

    def test_compact_empty(self):
        index = self.make_index(self.dim)
        assert index.compact()["after"]["count"] == 0
        assert index.search(unit_vectors(1, self.dim), k=2) == [[]]

    def test_stats(self):
        index, ids, _ = self._filled()
        index.delete(ids[:2])
        stats = index.stats()
        assert stats["count"] == N - 2 and stats["dim"] == self.dim
        assert {"kind", "deleted", "memory_bytes"} <= set(stats)
