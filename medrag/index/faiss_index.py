"""A FAISS-backed VectorIndex: exact inner-product search with string ids and metadata.

FAISS only knows int64 ids, so we assign them sequentially and keep the
str<->int maps and per-id metadata beside the index. A saved index is a folder:

    manifest.json    format, kind, dim, count, metric, embedder, timestamps
    index.faiss      faiss.write_index of the CPU index
    ids.json         [[int_id, str_id], ...]
    metadata.jsonl   {"id": str_id, "metadata": {...}} per line
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from medrag.embed.base import EmbedderInfo
from medrag.errors import ConfigError, IndexCorrupt, IndexMismatch, InputError
from medrag.index.base import Where, matches, read_index_file, read_index_manifest
from medrag.storage import atomic_folder, fsync_file, json_object, read_json, read_jsonl, utc_now, write_json, write_jsonl
from medrag.types import Hit

FORMAT = "medrag.faiss"
FORMAT_VERSION = 1
KINDS = ("flat",)
MANIFEST, INDEX_FILE, IDS_FILE, METADATA_FILE = "manifest.json", "index.faiss", "ids.json", "metadata.jsonl"

# GPU flat search refuses k above this in most faiss-gpu builds; larger fetches run on the CPU copy.
_GPU_MAX_K = 2048


def gpu_count() -> int:
    """GPUs faiss can use: 0 with faiss-cpu (no get_num_gpus, or it returns 0)."""
    fn = getattr(faiss, "get_num_gpus", None)
    if fn is None:
        return 0
    try:
        return int(fn())
    except Exception:  # a broken CUDA setup means no GPU, not a crash
        return 0


def _check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise InputError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    for id_ in ids:
        if not isinstance(id_, str) or not id_:
            raise InputError(f"ids must be non-empty strings, got {id_!r}")
    return ids


class FaissIndex:
    """Exact cosine (inner product) search over L2-normalised vectors; see medrag.index.base.VectorIndex."""

    def __init__(
        self,
        dim: int,
        *,
        embedder: EmbedderInfo | None = None,
        kind: str = "flat",
        use_gpu: bool | str = "auto",
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise InputError(f"dim must be a positive integer, got {dim!r}")
        if kind not in KINDS:
            raise InputError(f"Unknown FAISS index kind {kind!r}; supported: {', '.join(KINDS)}")
        if embedder is not None and embedder.dim != dim:
            raise InputError(f"Embedder {embedder.name} produces {embedder.dim}-d vectors but the index has dim {dim}")
        if use_gpu not in (True, False, "auto"):
            raise InputError(f"use_gpu must be True, False or 'auto', got {use_gpu!r}")
        if use_gpu is True and gpu_count() == 0:
            raise ConfigError(
                "use_gpu=True but faiss sees no GPU (faiss-cpu is installed or CUDA is unavailable). "
                "Install faiss-gpu, or pass use_gpu='auto' or False."
            )
        self._dim = int(dim)
        self._kind = kind
        self.embedder = embedder
        self.use_gpu = use_gpu
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))
        self._str_to_int: dict[str, int] = {}
        self._int_to_str: dict[int, str] = {}
        self._metadata: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._gpu_index: Any = None  # lazy GPU copy; None whenever the CPU index changed
        self.created = utc_now()
        self.updated = self.created

    # -- introspection -------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def metric(self) -> str:
        return "ip"

    def __len__(self) -> int:
        return len(self._str_to_int)

    def __contains__(self, id: object) -> bool:
        return id in self._str_to_int

    def __repr__(self) -> str:
        emb = self.embedder.name if self.embedder else None
        return f"FaissIndex(dim={self._dim}, kind={self._kind!r}, count={len(self)}, embedder={emb!r})"

    def ids(self) -> Iterator[str]:
        """String ids in insertion order (an upserted id moves to the end)."""
        return iter(list(self._str_to_int))

    def get(self, id: str) -> dict[str, Any]:
        """A copy of the metadata stored for ``id``; KeyError if absent."""
        return copy.deepcopy(self._metadata[self._str_to_int[id]])

    def reconstruct(self, id: str) -> np.ndarray:
        """The stored vector for ``id`` (float32, shape (dim,)); KeyError if absent."""
        return np.array(self._index.reconstruct(self._str_to_int[id]), dtype=np.float32)

    # -- writing -------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add vectors under new ids; an id already present raises InputError (use upsert)."""
        ids, x, metas = self._prepare(ids, vectors, metadata)
        present = [i for i in ids if i in self._str_to_int]
        if present:
            raise InputError(f"{len(present)} id(s) already in the index, e.g. {present[0]!r}; use upsert to replace")
        self._insert(ids, x, metas)

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add vectors, replacing any ids already present (vector and metadata)."""
        ids, x, metas = self._prepare(ids, vectors, metadata)  # validate before deleting anything
        self.delete([i for i in ids if i in self._str_to_int])
        self._insert(ids, x, metas)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ids; returns how many were present (absent ids are ignored)."""
        ids = _check_ids(ids)
        int_ids = sorted({self._str_to_int[i] for i in ids if i in self._str_to_int})
        if not int_ids:
            return 0
        removed = self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(int_ids, dtype=np.int64)))
        if removed != len(int_ids):  # the maps and FAISS disagree: a bug, not user error
            raise RuntimeError(f"FAISS removed {removed} vectors, expected {len(int_ids)}")
        for n in int_ids:
            del self._str_to_int[self._int_to_str.pop(n)]
            del self._metadata[n]
        self._changed()
        return len(int_ids)

    def _prepare(
        self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None
    ) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        ids = _check_ids(ids)
        x = self._as_matrix(vectors, what="vectors", allow_1d=False)
        if x.shape[0] != len(ids):
            raise InputError(f"Got {len(ids)} ids but {x.shape[0]} vectors")
        seen: set[str] = set()
        for id_ in ids:
            if id_ in seen:
                raise InputError(f"Duplicate id in batch: {id_!r}")
            seen.add(id_)
        if metadata is None:
            metas = [{} for _ in ids]
        else:
            metadata = list(metadata)
            if len(metadata) != len(ids):
                raise InputError(f"Got {len(ids)} ids but {len(metadata)} metadata entries")
            metas = [json_object(m, what=f"metadata of {i!r}") for i, m in zip(ids, metadata)]
        return ids, x, metas

    def _insert(self, ids: list[str], x: np.ndarray, metas: list[dict[str, Any]]) -> None:
        if not ids:
            return
        int_ids = np.arange(self._next_id, self._next_id + len(ids), dtype=np.int64)
        self._index.add_with_ids(x, int_ids)
        for s, n, m in zip(ids, int_ids.tolist(), metas):
            self._str_to_int[s] = n
            self._int_to_str[n] = s
            self._metadata[n] = m
        self._next_id += len(ids)
        self._changed()

    def _changed(self) -> None:
        self._gpu_index = None
        self.updated = utc_now()

    def _as_matrix(self, vectors: np.ndarray, *, what: str, allow_1d: bool) -> np.ndarray:
        """Validate and convert to a C-contiguous float32 (n, dim) matrix, as FAISS requires."""
        try:
            x = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{what} must be numeric arrays: {exc}") from exc
        if x.ndim == 1 and allow_1d:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self._dim:
            raise InputError(f"{what} must have shape (n, {self._dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise InputError(f"{what} contain NaN or infinite values")
        return np.ascontiguousarray(x)

    # -- search --------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int, where: Where | None = None) -> list[list[Hit]]:
        """For each query row (a 1-D query is one row), up to k hits by descending score.

        With ``where``, fetch k*4 candidates and grow the fetch until k pass the
        filter or the whole index has been scanned, so rare matches are still found.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        q = self._as_matrix(vectors, what="query vectors", allow_1d=True)
        total = len(self)
        if total == 0:
            return [[] for _ in range(q.shape[0])]
        if not where:
            scores, labels = self._raw_search(q, min(int(k), total))
            return [self._hits(s, l, int(k), None) for s, l in zip(scores, labels)]

        results: list[list[Hit] | None] = [None] * q.shape[0]
        pending = list(range(q.shape[0]))
        fetch = min(total, int(k) * 4)
        while pending:
            scores, labels = self._raw_search(q[pending], fetch)
            still = []
            for row, s, l in zip(pending, scores, labels):
                hits = self._hits(s, l, int(k), where)
                if len(hits) >= k or fetch >= total:
                    results[row] = hits
                else:
                    still.append(row)
            pending = still
            fetch = min(total, fetch * 4)
        return results  # type: ignore[return-value]

    def _hits(self, scores: np.ndarray, labels: np.ndarray, k: int, where: Where | None) -> list[Hit]:
        hits = []
        for score, label in zip(scores.tolist(), labels.tolist()):
            if label < 0:  # FAISS pads with -1 when fewer than k vectors exist
                continue
            meta = self._metadata[label]
            if where and not matches(meta, where):
                continue
            hits.append(Hit(id=self._int_to_str[label], score=float(score), metadata=copy.deepcopy(meta)))
            if len(hits) == k:
                break
        return hits

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._search_index(k).search(q, k)

    def _search_index(self, k: int) -> Any:
        """The CPU index, or a lazily made GPU copy when GPUs are wanted and k fits."""
        want_gpu = self.use_gpu is True or (self.use_gpu == "auto" and gpu_count() > 0)
        if not want_gpu or k > _GPU_MAX_K:
            return self._index
        if self._gpu_index is None:
            self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
        return self._gpu_index

    # -- persistence ---------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self._kind,
            "dim": self._dim,
            "count": len(self),
            "metric": self.metric,
            "embedder": self.embedder.to_dict() if self.embedder else None,
            "created": self.created,
            "updated": self.updated,
        }

    def save(self, path: str | Path) -> None:
        """Write the folder atomically: a failure mid-save leaves the previous folder intact."""
        with atomic_folder(path) as tmp:
            faiss.write_index(self._index, str(tmp / INDEX_FILE))  # always the CPU index
            fsync_file(tmp / INDEX_FILE)
            pairs = sorted(self._int_to_str.items())
            write_json(tmp / IDS_FILE, [[n, s] for n, s in pairs], indent=None)
            write_jsonl(tmp / METADATA_FILE, ({"id": s, "metadata": self._metadata[n]} for n, s in pairs))
            write_json(tmp / MANIFEST, self.manifest())  # last: its presence means the rest is written

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        embedder: EmbedderInfo | None = None,
        use_gpu: bool | str = "auto",
    ) -> "FaissIndex":
        """Open a saved index; ``embedder`` (when given) must be the one that built it."""
        folder = Path(path)
        manifest = read_index_manifest(folder, FORMAT, FORMAT_VERSION, "FAISS")

        try:
            kind, dim, count = str(manifest["kind"]), int(manifest["dim"]), int(manifest["count"])
            stored = EmbedderInfo.from_dict(manifest["embedder"]) if manifest.get("embedder") else None
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorrupt(f"{folder / MANIFEST}: missing or invalid field {exc}") from exc
        if stored is not None and stored.dim != dim:
            raise IndexCorrupt(f"{folder / MANIFEST}: embedder dim {stored.dim} differs from index dim {dim}")
        if kind not in KINDS or manifest.get("metric") != "ip":
            raise IndexCorrupt(f"{folder / MANIFEST}: unsupported kind {kind!r} / metric {manifest.get('metric')!r}")

        if embedder is not None:
            _check_embedder(folder, stored, dim, embedder)

        index = read_index_file(folder, INDEX_FILE, lambda p: faiss.read_index(str(p)))
        if not isinstance(index, faiss.IndexIDMap2) or index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexCorrupt(f"{folder / INDEX_FILE}: expected an inner-product IndexIDMap2 of dim {dim}")
        if index.ntotal != count:
            raise IndexCorrupt(f"{folder / INDEX_FILE} holds {index.ntotal} vectors but {MANIFEST} says {count}")

        pairs = read_index_file(folder, IDS_FILE, read_json)
        try:
            int_to_str = {int(n): str(s) for n, s in pairs}
        except (TypeError, ValueError) as exc:
            raise IndexCorrupt(f"{folder / IDS_FILE}: expected a list of [int_id, str_id] pairs") from exc
        str_to_int = {s: n for n, s in int_to_str.items()}
        if not (len(pairs) == len(int_to_str) == len(str_to_int) == count):
            raise IndexCorrupt(f"{folder / IDS_FILE} lists {len(pairs)} ids (unique: {len(str_to_int)}) but {MANIFEST} says {count}")
        if set(faiss.vector_to_array(index.id_map).tolist()) != set(int_to_str):
            raise IndexCorrupt(f"{folder / IDS_FILE} does not match the ids stored in {INDEX_FILE}")

        rows = read_index_file(folder, METADATA_FILE, read_jsonl)
        metadata: dict[int, dict[str, Any]] = {}
        for row in rows:
            if not isinstance(row, dict) or row.get("id") not in str_to_int or not isinstance(row.get("metadata"), dict):
                raise IndexCorrupt(f"{folder / METADATA_FILE}: bad or unknown entry {str(row)[:80]}")
            metadata[str_to_int[row["id"]]] = row["metadata"]
        if len(rows) != count or len(metadata) != count:
            raise IndexCorrupt(f"{folder / METADATA_FILE} has {len(rows)} entries but {MANIFEST} says {count}")

        self = cls(dim, embedder=stored, kind=kind, use_gpu=use_gpu)
        self._index = index
        self._int_to_str = dict(sorted(int_to_str.items()))  # insertion order = int id order
        self._str_to_int = {s: n for n, s in self._int_to_str.items()}
        self._metadata = metadata
        self._next_id = max(int_to_str, default=-1) + 1
        self.created = str(manifest.get("created") or self.created)
        self.updated = str(manifest.get("updated") or self.created)
        return self


def _check_embedder(folder: Path, stored: EmbedderInfo | None, dim: int, given: EmbedderInfo) -> None:
    """Refuse to search an index with vectors from another embedder: scores would be meaningless."""
    if stored is None:
        if given.dim != dim:  # nothing recorded, but the dimension can still be checked
            raise IndexMismatch(
                f"Index {folder} holds {dim}-d vectors but embedder {given.name} ({given.fingerprint}) "
                f"produces {given.dim}-d vectors. Re-ingest with this embedder or pass the one that built the index."
            )
        return
    same = stored.name == given.name and stored.fingerprint == given.fingerprint and stored.dim == given.dim == dim
    if not same:
        raise IndexMismatch(
            f"Index {folder} was built with embedder {stored.name} (fingerprint {stored.fingerprint}, "
            f"dim {stored.dim}) but was opened with {given.name} (fingerprint {given.fingerprint}, dim {given.dim}). "
            "Re-ingest with the new embedder, or pass the embedder that built the index."
        )
