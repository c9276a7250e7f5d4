"""A FAISS-backed VectorIndex: flat (exact), HNSW or IVF-PQ search with string ids and metadata.

FAISS only knows int64 ids, so we assign them sequentially and keep the
str<->int maps and per-id metadata beside the index. A saved index is a folder:

    manifest.json    format, kind, structure, params, dim, count, deleted, metric, embedder, timestamps
    index.faiss      faiss.write_index of the CPU index
    ids.json         [[int_id, str_id], ...] of the live rows
    metadata.jsonl   {"id": str_id, "metadata": {...}} per line
    vectors.f16      (IVF with ``ivf_refine`` > 0 only) the original vectors as float16 rows, row = int id

Kinds (what the caller asks for) and structures (what is built now):

- ``flat``: exact inner product over all vectors. Recall 1.0; cost grows linearly with size.
- ``hnsw``: a graph (faiss IndexHNSWFlat). Vectors are kept exactly, the search is approximate.
  HNSW cannot remove nodes, so deleted rows stay in the graph as tombstones (excluded from
  results) until ``compact()`` rebuilds it.
- ``ivfpq``: inverted lists over compressed codes instead of float vectors. The codec is RaBitQ with
  ``ivf_bits`` bits per dimension, or product quantisation (``ivf_codec="pq"``, what indexes saved
  before the codec existed use). With ``ivf_refine`` > 0 (the default, 10) the original vectors are
  kept too, as float16 in a memory-mapped file beside the index (on disk, not in memory): the codes
  pick ``ivf_refine`` x k candidates and the originals re-score them. The default, 2-bit codes +
  refine, holds ~150 bytes per 384-d vector in memory instead of 1,544 at recall@10 ~0.99 on the 1M
  benchmark; docs/index.md has the measured trade-off. The inverted lists need training data, so
  below ``ivf_min_train`` vectors the index stays exact flat and turns into IVF the moment it grows
  past that size.
- ``auto``: flat, then HNSW, then IVF-PQ as the index grows (thresholds in AnnParams, reasons in
  docs/index.md). The structure is re-chosen when an add crosses a threshold and on compaction.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from medrag.embed.base import EmbedderInfo
from medrag.errors import ConfigError, IndexCorrupt, IndexMismatch, InputError
from medrag.index.base import (
    Where,
    check_where,
    matches,
    read_index_file,
    read_index_manifest,
)
from medrag.index.originals import OriginalVectors, rescore
from medrag.registry import indexes
from medrag.storage import (
    atomic_folder,
    fsync_file,
    json_object,
    read_json,
    read_jsonl,
    utc_now,
    write_json,
    write_jsonl,
)
from medrag.types import Hit

log = logging.getLogger(__name__)

FORMAT = "medrag.faiss"
FORMAT_VERSION = 1  # v1 folders written before kinds existed are flat with no "structure": still read
STRUCTURES = ("flat", "hnsw", "ivfpq")
KINDS = STRUCTURES + ("auto",)
MANIFEST, INDEX_FILE, IDS_FILE, METADATA_FILE = "manifest.json", "index.faiss", "ids.json", "metadata.jsonl"

IVF_CODECS = ("rabitq", "pq")
_FLOAT32 = np.dtype(np.float32)  # numpy's singleton: an identity test is the cheapest dtype check

# GPU flat search refuses k above this in most faiss-gpu builds; larger fetches run on the CPU copy.
_GPU_MAX_K = 2048


@dataclass(frozen=True)
class AnnParams:
    """Build and search parameters of the approximate structures, saved in the manifest.

    Defaults were measured with tools/bench_index.py on 384-d vectors (results/bench_index.json).
    """

    hnsw_m: int = 32  # graph degree: recall ~0.99 at 100k with ef_search 64
    hnsw_ef_construction: int = 80  # higher builds a better graph, slower (2 cores: ~1 min per 100k)
    hnsw_ef_search: int = 64  # raised to k when k is larger
    ivf_nlist: int | None = None  # None: 4 * sqrt(n), clamped to [16, 65536]
    ivf_nprobe: int = 32
    # The IVF codes. Alone, RaBitQ at 5 bits per dimension gives recall@10 ~0.94 on clustered 384-d
    # vectors at the 1M benchmark's density (~500 per centre), 3 bits ~0.81, 2 bits ~0.66; PQ with
    # 96 bytes only ~0.67 (docs/index.md has the table). Re-scored with the originals, 2 bits give
    # ~0.99 at 130 bytes per vector in memory, so that is the default.
    ivf_codec: str = "rabitq"  # "rabitq" or "pq"
    ivf_bits: int = 2  # RaBitQ bits per dimension (1-9)
    # Re-score ivf_refine x k candidates with the original vectors (float16, memory-mapped from
    # vectors.f16 beside the index, 768 bytes per 384-d vector on disk); 0 keeps no originals.
    ivf_refine: int = 10
    pq_m: int | None = None  # ivf_codec="pq": None is the largest divisor of dim leaving >= 4 dims per sub-quantizer (96 for 384)
    pq_bits: int = 8
    ivf_min_train: int = 10_000  # k-means wants ~39 training vectors per centroid (256 PQ centroids, the IVF lists)
    auto_hnsw_from: int = 20_000  # flat search over 20k x 384 is ~2 ms a query: exact is cheap enough below
    auto_ivfpq_from: int = 1_000_000  # above 1M the float vectors (1.5 GB) dominate memory: compress them
    exact_filter_max: int = 20_000  # filters matching up to this many rows are searched exactly among the matches

    def __post_init__(self) -> None:
        if self.ivf_codec not in IVF_CODECS:
            raise InputError(f"index parameter ivf_codec must be one of {', '.join(IVF_CODECS)}, got {self.ivf_codec!r}")
        if isinstance(self.ivf_bits, int) and not 1 <= self.ivf_bits <= 9:
            raise InputError(f"index parameter ivf_bits must be between 1 and 9, got {self.ivf_bits!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if (value is None and f.name in ("ivf_nlist", "pq_m")) or f.name == "ivf_codec":
                continue
            if f.name == "ivf_refine" and isinstance(value, int) and not isinstance(value, bool) and value == 0:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"index parameter {f.name} must be a positive integer, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "AnnParams":
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"unknown index parameter(s) {sorted(unknown)}; known: {', '.join(f.name for f in fields(cls))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_structure(kind: str, count: int, params: AnnParams) -> str:
    """The structure an index of ``kind`` holding ``count`` vectors should have."""
    if kind == "ivfpq":
        return "ivfpq" if count >= params.ivf_min_train else "flat"
    if kind != "auto":
        return kind
    if count >= max(params.auto_ivfpq_from, params.ivf_min_train):
        return "ivfpq"
    return "hnsw" if count >= params.auto_hnsw_from else "flat"


def gpu_count() -> int:
    """GPUs faiss can use: 0 with faiss-cpu (no get_num_gpus, or it returns 0)."""
    fn = getattr(faiss, "get_num_gpus", None)
    if fn is None:
        return 0
    try:
        return int(fn())
    except Exception:  # a broken CUDA setup means no GPU, not a crash
        return 0


def _check_finite(x: np.ndarray, what: str) -> None:
    if not math.isfinite(x.sum(dtype=np.float64)):  # NaN/inf propagate into the sum; float64 cannot overflow
        raise InputError(f"{what} contain NaN or infinite values")


def _search_unchecked(index: Any, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(q, k)`` minus the faiss wrapper's own checks and conversions: ``q`` is already a
    validated C-contiguous float32 matrix, and on the hot path each skipped numpy call counts."""
    n = q.shape[0]
    scores = np.empty((n, k), dtype=np.float32)
    labels = np.empty((n, k), dtype=np.int64)
    index.search_c(n, faiss.swig_ptr(q), k, faiss.swig_ptr(scores), faiss.swig_ptr(labels))
    return scores, labels


def _copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars): ~10x faster than copy.deepcopy, which
    dominated the cost of a search on small or graph indexes."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


def _is_nested(meta: Mapping[str, Any]) -> bool:
    """True when a metadata dict holds lists or dicts, which a shallow copy would share with the caller."""
    return any(isinstance(value, (dict, list)) for value in meta.values())


def _check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise InputError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    for id_ in ids:
        if not isinstance(id_, str) or not id_:
            raise InputError(f"ids must be non-empty strings, got {id_!r}")
    return ids


# -- structures: name -> builder of an empty faiss index for (dim, params, training vectors) ----------


def _pq_m(dim: int, params: AnnParams) -> int:
    if params.pq_m is not None:
        if dim % params.pq_m:
            raise InputError(f"pq_m={params.pq_m} must divide the dimension {dim}")
        return params.pq_m
    return max(m for m in range(1, dim + 1) if dim % m == 0 and dim // m >= 4) if dim >= 4 else 1


def _build_flat(dim: int, params: AnnParams, train: np.ndarray) -> Any:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _build_hnsw(dim: int, params: AnnParams, train: np.ndarray) -> Any:
    graph = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = params.hnsw_ef_construction
    graph.hnsw.efSearch = params.hnsw_ef_search
    return faiss.IndexIDMap2(graph)


def _build_ivfpq(dim: int, params: AnnParams, train: np.ndarray) -> Any:
    n = len(train)
    nlist = params.ivf_nlist or int(min(65536, max(16, 4 * math.sqrt(n))))
    nlist = max(1, min(nlist, n // 39 or 1))  # k-means needs a few dozen points per list
    if params.ivf_codec == "rabitq":
        index = faiss.IndexIVFRaBitQ(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT, True, params.ivf_bits)
        per_list = 64  # only the coarse k-means trains: 64 points per list is plenty and bounds 1M builds
    else:
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, _pq_m(dim, params), params.pq_bits, faiss.METRIC_INNER_PRODUCT)
        per_list = 256
    sample = train
    if n > per_list * nlist:  # faiss samples anyway; doing it here keeps training time bounded and seeded
        sample = train[np.random.default_rng(0).choice(n, per_list * nlist, replace=False)]
    index.train(np.ascontiguousarray(sample))
    index.nprobe = min(params.ivf_nprobe, nlist)
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct and remove by arbitrary id
    return index


def _ivf_codec_of(index: Any) -> str | None:
    if isinstance(index, faiss.IndexIVFRaBitQ):
        return "rabitq"
    if isinstance(index, faiss.IndexIVFPQ):
        return "pq"
    return None


# Structures each kind passes through as it grows (auto: all of them).
_POSSIBLE_STRUCTURES = {"flat": ("flat",), "hnsw": ("hnsw",), "ivfpq": ("flat", "ivfpq"), "auto": STRUCTURES}

BUILDERS: dict[str, Callable[[int, AnnParams, np.ndarray], Any]] = {"flat": _build_flat, "hnsw": _build_hnsw, "ivfpq": _build_ivfpq}


def _structure_of(index: Any) -> str | None:
    """Which of our structures a faiss index read from disk is (None: not one of ours)."""
    if _ivf_codec_of(index) is not None:
        return "ivfpq"
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            return "hnsw"
        if isinstance(inner, faiss.IndexFlat):
            return "flat"
    return None


def _stored_ids(index: Any) -> np.ndarray:
    """Every int id the faiss structure holds (live rows and tombstones)."""
    if isinstance(index, faiss.IndexIVF):
        lists = index.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(index.nlist) if lists.list_size(i)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return faiss.vector_to_array(index.id_map)


class FaissIndex:
    """Cosine (inner product) search over L2-normalised vectors; see medrag.index.base.ManagedVectorIndex."""

    def __init__(
        self,
        dim: int,
        *,
        embedder: EmbedderInfo | None = None,
        kind: str = "flat",
        params: AnnParams | Mapping[str, Any] | None = None,
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
        self.params = params if isinstance(params, AnnParams) else AnnParams.from_dict(params)
        self.embedder = embedder
        self.use_gpu = use_gpu
        self._structure = choose_structure(kind, 0, self.params)
        self._index = BUILDERS[self._structure](self._dim, self.params, np.zeros((0, self._dim), np.float32))
        self._str_to_int: dict[str, int] = {}
        self._int_to_str: dict[int, str] = {}
        self._metadata: dict[int, dict[str, Any]] = {}
        # Rows whose metadata holds lists/dicts: hits deep-copy those, and only a shallow dict.copy()
        # of the rest (strings and numbers are immutable), which keeps hit building cheap.
        self._nested: set[int] = set()
        # Each row's str id and metadata again, in lists indexed by int id (None where deleted or
        # unused): a search maps FAISS labels by list indexing, the cheapest lookup Python has.
        self._row_names: list[str | None] = []
        self._row_metas: list[dict[str, Any] | None] = []
        self._tombstones: set[int] = set()  # deleted from the maps but still inside an HNSW graph
        self._next_id = 0
        self._gpu_index: Any = None  # lazy GPU copy; None whenever the CPU index changed
        self._filter_cache: tuple[str, np.ndarray] | None = None  # (where as JSON, matching int ids)
        # The original vectors while the structure is IVF and ivf_refine > 0 (flat and HNSW hold
        # exact vectors themselves, and hand them over when the index turns into IVF).
        self._originals: OriginalVectors | None = None
        self.created = utc_now()
        self.updated = self.created

    # -- introspection -------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        """What was asked for: flat, hnsw, ivfpq or auto."""
        return self._kind

    @property
    def structure(self) -> str:
        """What is built now: flat, hnsw or ivfpq (auto and small ivfpq indexes change with size)."""
        return self._structure

    @property
    def metric(self) -> str:
        return "ip"

    @property
    def deleted(self) -> int:
        """Deleted rows still taking space in the structure (HNSW tombstones) until compact()."""
        return len(self._tombstones)

    def __len__(self) -> int:
        return len(self._str_to_int)

    def __contains__(self, id: object) -> bool:
        return id in self._str_to_int

    def __repr__(self) -> str:
        emb = self.embedder.name if self.embedder else None
        return f"FaissIndex(dim={self._dim}, kind={self._kind!r}, structure={self._structure!r}, count={len(self)}, embedder={emb!r})"

    def ids(self) -> Iterator[str]:
        """String ids in insertion order (an upserted id moves to the end)."""
        return iter(list(self._str_to_int))

    def get(self, id: str) -> dict[str, Any]:
        """A copy of the metadata stored for ``id``; KeyError if absent."""
        return _copy_json(self._metadata[self._str_to_int[id]])

    def reconstruct(self, id: str) -> np.ndarray:
        """The stored vector for ``id`` (float32, shape (dim,); KeyError if absent).

        Under IVF it is decoded from the codes (approximate), or read from the originals with ``ivf_refine``
        (float16 precision).
        """
        return self._vectors([self._str_to_int[id]])[0]

    def stats(self) -> dict[str, Any]:
        """Kind, structure, counts and the approximate memory of the vectors and search structure."""
        n = int(self._index.ntotal)
        if self._structure == "ivfpq":
            nlist, codec = self._index.nlist, _ivf_codec_of(self._index)
            # codes + list ids (8) + direct-map entry (16) per vector, plus the coarse centroids
            memory = n * (self._index.code_size + 8 + 16) + nlist * self._dim * 4
            extra = {"nlist": nlist, "nprobe": self._index.nprobe, "ivf_codec": codec, "code_bytes": self._index.code_size}
            if codec == "pq":
                memory += self._index.pq.M * self._index.pq.ksub * self._index.pq.dsub * 4
                extra["pq_m"] = self._index.pq.M
            else:
                extra["ivf_bits"] = self.params.ivf_bits
            extra["ivf_refine"] = self.params.ivf_refine
        elif self._structure == "hnsw":
            memory = n * (self._dim * 4 + 8 + self.params.hnsw_m * 2 * 4 * 1.1)  # level-0 links dominate the graph
            extra = {"hnsw_m": self.params.hnsw_m, "ef_search": self.params.hnsw_ef_search}
        else:
            memory = n * (self._dim * 4 + 8)
            extra = {}
        return {
            "kind": self._kind,
            "structure": self._structure,
            "dim": self._dim,
            "count": len(self),
            "deleted": self.deleted,
            "memory_bytes": int(memory),
            **extra,
            **({"originals_disk_bytes": self._originals.disk_bytes()} if self._originals is not None else {}),
        }

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

    def update_metadata(self, id: str, metadata: Mapping[str, Any]) -> None:
        """Replace the metadata of ``id`` without touching its vector; KeyError if absent."""
        n = self._str_to_int[id]
        self._metadata[n] = json_object(metadata, what=f"metadata of {id!r}")
        self._row_metas[n] = self._metadata[n]
        self._nested.discard(n)
        if _is_nested(self._metadata[n]):
            self._nested.add(n)
        self._changed(structure=False)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ids; returns how many were present (absent ids are ignored)."""
        ids = _check_ids(ids)
        int_ids = np.asarray(sorted({self._str_to_int[i] for i in ids if i in self._str_to_int}), dtype=np.int64)
        if not len(int_ids):
            return 0
        if self._structure == "hnsw":
            self._tombstones.update(int_ids.tolist())  # HNSW cannot unlink nodes; compact() rebuilds without them
        else:
            # IVF's hashtable direct map only removes through an IDSelectorArray; the flat map takes either.
            removed = self._index.remove_ids(faiss.IDSelectorArray(int_ids))
            if removed != len(int_ids):  # the maps and FAISS disagree: a bug, not user error
                raise RuntimeError(f"FAISS removed {removed} vectors, expected {len(int_ids)}")
        for n in int_ids.tolist():
            del self._str_to_int[self._int_to_str.pop(n)]
            del self._metadata[n]
            self._nested.discard(n)
            self._row_names[n] = self._row_metas[n] = None
        self._changed()
        return len(int_ids)

    def compact(self) -> dict[str, Any]:
        """Drop deleted rows, renumber ids densely and rebuild the structure for the current size.

        The new structure is built aside and swapped in only when complete, so a failure
        leaves the index as it was. Under IVF-PQ the quantizers are retrained on the original
        vectors when ``ivf_refine`` keeps them, else on the decoded ones (a little less accurate).
        """
        before = {"count": len(self), "stored": int(self._index.ntotal), "structure": self._structure}
        pairs = list(self._int_to_str.items())
        x = self._vectors([n for n, _ in pairs])
        new_ids = np.arange(len(pairs), dtype=np.int64)
        structure = choose_structure(self._kind, len(pairs), self.params)
        index = BUILDERS[structure](self._dim, self.params, x)
        if len(pairs):
            index.add_with_ids(x, new_ids)
        self._index, self._structure = index, structure
        self._originals = self._new_originals(structure, new_ids, x, len(pairs))
        self._int_to_str = {int(n): s for n, (_, s) in zip(new_ids, pairs)}
        self._str_to_int = {s: n for n, s in self._int_to_str.items()}
        self._metadata = {int(n): self._metadata[old] for n, (old, _) in zip(new_ids, pairs)}
        self._next_id = len(pairs)
        self._index_rows()
        self._tombstones = set()
        self._changed()
        after = {"count": len(self), "stored": int(self._index.ntotal), "structure": self._structure}
        return {"before": before, "after": after, "dropped": before["stored"] - after["stored"]}

    def _vectors(self, int_ids: Sequence[int]) -> np.ndarray:
        if not len(int_ids):
            return np.zeros((0, self._dim), dtype=np.float32)
        if self._originals is not None:
            return self._originals.get(np.asarray(int_ids, dtype=np.int64))
        return np.ascontiguousarray(self._index.reconstruct_batch(np.asarray(int_ids, dtype=np.int64)), dtype=np.float32)

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
        target = choose_structure(self._kind, len(self) + len(ids), self.params)
        if target != self._structure:
            # Crossing a size threshold (auto, or ivfpq reaching its training size): rebuild with the new rows.
            self._rebuild(target, extra=(int_ids, x))
        else:
            self._index.add_with_ids(x, int_ids)
            if self._originals is not None:
                self._originals.append(self._next_id, x)
        self._next_id += len(ids)
        more = self._next_id - len(self._row_names)
        self._row_names.extend([None] * more)
        self._row_metas.extend([None] * more)
        for s, n, m in zip(ids, int_ids.tolist(), metas):
            self._str_to_int[s] = n
            self._int_to_str[n] = s
            self._metadata[n] = m
            self._row_names[n], self._row_metas[n] = s, m
            if _is_nested(m):
                self._nested.add(n)
        self._changed()

    def _index_rows(self) -> None:
        """Rebuild the row arrays and the nested-metadata set from the id and metadata maps."""
        self._row_names = [None] * self._next_id
        self._row_metas = [None] * self._next_id
        for n, name in self._int_to_str.items():
            self._row_names[n], self._row_metas[n] = name, self._metadata[n]
        self._nested = {n for n, meta in self._metadata.items() if _is_nested(meta)}

    def _rebuild(self, structure: str, extra: tuple[np.ndarray, np.ndarray]) -> None:
        """Build ``structure`` over the live rows plus ``extra`` (ids, vectors), keeping int ids."""
        live = list(self._int_to_str)
        all_ids = np.concatenate([np.asarray(live, dtype=np.int64), extra[0]])
        x = np.concatenate([self._vectors(live), extra[1]])
        log.info("restructuring a %s index of %d vectors as %s", self._kind, len(all_ids), structure)
        index = BUILDERS[structure](self._dim, self.params, x)
        index.add_with_ids(x, all_ids)
        self._index, self._structure, self._tombstones = index, structure, set()
        self._originals = self._new_originals(structure, all_ids, x, self._next_id + len(extra[0]))

    def _new_originals(self, structure: str, int_ids: np.ndarray, x: np.ndarray, rows: int) -> OriginalVectors | None:
        """Originals for a structure just built from ``x`` (row = int id; rows of deleted ids zero), or None."""
        if structure != "ivfpq" or self.params.ivf_refine == 0:
            return None
        table = np.zeros((rows, self._dim), dtype=np.float16)
        table[int_ids] = x
        originals = OriginalVectors(self._dim)
        originals.replace(table)
        return originals

    def _changed(self, structure: bool = True) -> None:
        if structure:
            self._gpu_index = None
        self._filter_cache = None
        self.updated = utc_now()

    def _as_matrix(self, vectors: np.ndarray, *, what: str, allow_1d: bool, check_finite: bool = True) -> np.ndarray:
        """Validate and convert to a C-contiguous float32 (n, dim) matrix, as FAISS requires."""
        try:
            x = vectors if type(vectors) is np.ndarray and vectors.dtype is _FLOAT32 else np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{what} must be numeric arrays: {exc}") from exc
        if x.ndim == 1 and allow_1d:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self._dim:
            raise InputError(f"{what} must have shape (n, {self._dim}), got {x.shape}")
        if check_finite:
            _check_finite(x, what)
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)

    # -- search --------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int, where: Where | None = None) -> list[list[Hit]]:
        """For each query row (a 1-D query is one row), up to k hits by descending score, filtered by ``where``.

        A filter is resolved to the set of matching rows first. Few matches (up to
        ``exact_filter_max``) are scored exactly among themselves, so rare matches are always
        found; many matches are searched through the structure restricted to them.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        if where:
            return self._filtered_search(self._as_matrix(vectors, what="query vectors", allow_1d=True), k, check_where(where))
        # The unfiltered search is the hot path: the query is checked for NaN/inf from FAISS's answer
        # rather than by a pass before it (a cold numpy call after the last search cost ~10% of an
        # HNSW search). Non-finite queries show in the answer: NaN finds nothing, inf scores infinite.
        q = self._as_matrix(vectors, what="query vectors", allow_1d=True, check_finite=False)
        count = len(self._str_to_int)
        if count == 0:
            _check_finite(q, "query vectors")
            return [[] for _ in range(q.shape[0])]
        scores, labels = self._ann_search(q, min(k, count), None)
        scores, labels = scores.tolist(), labels.tolist()
        for row_scores, row_labels in zip(scores, labels):
            if row_labels[0] < 0 or not math.isfinite(row_scores[0]):
                _check_finite(q, "query vectors")
                break
        return [self._hits(s, l, k) for s, l in zip(scores, labels)]

    def _filtered_search(self, q: np.ndarray, k: int, where: dict[str, Any]) -> list[list[Hit]]:
        allowed = self._matching(where)
        k = min(k, len(allowed))
        if k == 0:
            return [[] for _ in range(q.shape[0])]
        if len(allowed) <= self.params.exact_filter_max:
            scores, labels = self._exact_search(q, k, allowed)
        else:
            scores, labels = self._ann_search(q, k, allowed)
            short = [row for row in range(q.shape[0]) if (labels[row] >= 0).sum() < k]
            if short:  # the graph or the probed lists held too few matches: score all matches exactly
                scores[short], labels[short] = self._exact_search(q[short], k, allowed)
        return [self._hits(s, l, k) for s, l in zip(scores.tolist(), labels.tolist())]

    def _matching(self, where: dict[str, Any]) -> np.ndarray:
        """Int ids of the live rows whose metadata satisfies ``where`` (cached until the next change)."""
        key = json.dumps(where, sort_keys=True, default=sorted)
        if self._filter_cache is None or self._filter_cache[0] != key:
            found = [n for n, meta in self._metadata.items() if matches(meta, where)]
            self._filter_cache = (key, np.asarray(found, dtype=np.int64))
        return self._filter_cache[1]

    def _exact_search(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self._vectors(allowed)
        scores = q @ x.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, top, axis=1), allowed[top]

    def _ann_search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self._originals is not None:  # IVF codes re-scored with the originals
            fetch = min(k * self.params.ivf_refine, int(self._index.ntotal))
            return rescore(q, self._structure_search(q, fetch, allowed)[1], self._originals, k)
        return self._structure_search(q, k, allowed)

    def _structure_search(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None and not self._tombstones:
            # The common case: no selector, and the index already carries efSearch / nprobe (set
            # when built and on load), so skip building SearchParameters (~10 us of SWIG per call).
            if self._structure == "flat":
                return _search_unchecked(self._search_index(k), q, k)
            if self._structure == "ivfpq" or k <= self.params.hnsw_ef_search:
                return _search_unchecked(self._index, q, k)
        if allowed is not None:
            selector = faiss.IDSelectorBatch(allowed)
        elif self._tombstones:
            excluded = np.asarray(sorted(self._tombstones), dtype=np.int64)
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(excluded))
        else:
            selector = None
        if self._structure == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.params.hnsw_ef_search, k))
        elif self._structure == "ivfpq":
            params = faiss.SearchParametersIVF(nprobe=self._index.nprobe)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        scores, labels = self._index.search(q, k, params=params)
        return scores, labels

    def _hits(self, scores: list[float], labels: list[int], k: int) -> list[Hit]:
        # The hot path of every search, in plain Python on lists: after a FAISS search the caches
        # are cold, and each numpy call here cost more than the whole loop. Flat metadata (immutable
        # values) gets a shallow copy, so callers can change what they got without touching the index.
        names, metas, nested = self._row_names, self._row_metas, self._nested
        hits = []
        for score, label in zip(scores, labels):
            name = names[label] if label >= 0 else None  # FAISS pads with -1 when fewer than k rows qualify
            if name is None:  # padding, or an HNSW tombstone
                continue
            meta = metas[label]
            hits.append(Hit(name, score, _copy_json(meta) if nested and label in nested else meta.copy()))
            if len(hits) == k:
                break
        return hits

    def _search_index(self, k: int) -> Any:
        """The CPU index, or a lazily made GPU copy when GPUs are wanted and k fits (flat only)."""
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
            "structure": self._structure,
            "params": self.params.to_dict(),
            "dim": self._dim,
            "count": len(self),
            "deleted": self.deleted,
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
            manifest = self.manifest()
            if self._originals is not None:
                self._originals.write(tmp)
                manifest["original_rows"] = len(self._originals)
                # Map the file just written (the rows held in memory go). The map follows the file
                # through this folder's rename, and through a caller's, e.g. TextIndex saving us inside its own.
                self._originals.open(tmp, len(self._originals))
            write_json(tmp / MANIFEST, manifest)  # last: its presence means the rest is written

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
            structure = str(manifest.get("structure", kind))
            deleted = int(manifest.get("deleted", 0))
            saved_params = dict(manifest.get("params") or {})
            saved_params.setdefault("ivf_codec", "pq")  # saved before the codec was a parameter: PQ was the only one
            saved_params.setdefault("ivf_refine", 0)  # saved before originals were kept: there are none
            params = AnnParams.from_dict(saved_params)
            stored = EmbedderInfo.from_dict(manifest["embedder"]) if manifest.get("embedder") else None
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise IndexCorrupt(f"{folder / MANIFEST}: missing or invalid field {exc}") from exc
        if stored is not None and stored.dim != dim:
            raise IndexCorrupt(f"{folder / MANIFEST}: embedder dim {stored.dim} differs from index dim {dim}")
        if kind not in KINDS or structure not in STRUCTURES or manifest.get("metric") != "ip":
            raise IndexCorrupt(
                f"{folder / MANIFEST}: unsupported kind {kind!r} / structure {structure!r} / metric {manifest.get('metric')!r}"
            )

        if structure not in _POSSIBLE_STRUCTURES[kind]:
            raise IndexCorrupt(f"{folder / MANIFEST}: a {kind!r} index cannot have a {structure!r} structure")
        if embedder is not None:
            _check_embedder(folder, stored, dim, embedder)

        index = read_index_file(folder, INDEX_FILE, lambda p: faiss.read_index(str(p)))
        if _structure_of(index) != structure or index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexCorrupt(f"{folder / INDEX_FILE}: expected an inner-product {structure} index of dim {dim}")
        if structure == "hnsw":  # searches without a filter use the graph's own efSearch
            faiss.downcast_index(index.index).hnsw.efSearch = params.hnsw_ef_search
        if structure == "ivfpq" and _ivf_codec_of(index) != params.ivf_codec:
            raise IndexCorrupt(
                f"{folder / INDEX_FILE} holds {_ivf_codec_of(index)} codes but {MANIFEST} records ivf_codec={params.ivf_codec!r}; "
                "re-ingest to rebuild the index"
            )
        if index.ntotal != count + deleted:
            raise IndexCorrupt(f"{folder / INDEX_FILE} holds {index.ntotal} vectors but {MANIFEST} says {count} (+{deleted} deleted)")

        pairs = read_index_file(folder, IDS_FILE, read_json)
        try:
            int_to_str = {int(n): str(s) for n, s in pairs}
        except (TypeError, ValueError) as exc:
            raise IndexCorrupt(f"{folder / IDS_FILE}: expected a list of [int_id, str_id] pairs") from exc
        str_to_int = {s: n for n, s in int_to_str.items()}
        if not (len(pairs) == len(int_to_str) == len(str_to_int) == count):
            raise IndexCorrupt(f"{folder / IDS_FILE} lists {len(pairs)} ids (unique: {len(str_to_int)}) but {MANIFEST} says {count}")
        in_faiss = set(_stored_ids(index).tolist())
        tombstones = in_faiss - set(int_to_str)
        if not set(int_to_str) <= in_faiss or len(tombstones) != deleted or (tombstones and structure != "hnsw"):
            raise IndexCorrupt(f"{folder / IDS_FILE} does not match the ids stored in {INDEX_FILE}")

        rows = read_index_file(folder, METADATA_FILE, read_jsonl)
        metadata: dict[int, dict[str, Any]] = {}
        for row in rows:
            if not isinstance(row, dict) or row.get("id") not in str_to_int or not isinstance(row.get("metadata"), dict):
                raise IndexCorrupt(f"{folder / METADATA_FILE}: bad or unknown entry {str(row)[:80]}")
            metadata[str_to_int[row["id"]]] = row["metadata"]
        if len(rows) != count or len(metadata) != count:
            raise IndexCorrupt(f"{folder / METADATA_FILE} has {len(rows)} entries but {MANIFEST} says {count}")

        self = cls(dim, embedder=stored, kind=kind, params=params, use_gpu=use_gpu)
        self._index, self._structure = index, structure
        self._int_to_str = dict(sorted(int_to_str.items()))  # insertion order = int id order
        self._str_to_int = {s: n for n, s in self._int_to_str.items()}
        self._metadata = metadata
        self._tombstones = tombstones
        self._next_id = max(in_faiss | set(int_to_str), default=-1) + 1
        if structure == "ivfpq" and params.ivf_refine > 0:
            self._originals = OriginalVectors(dim)
            rows = manifest.get("original_rows")
            if isinstance(rows, bool) or not isinstance(rows, int) or rows < self._next_id:
                raise IndexCorrupt(f"{folder / MANIFEST}: original_rows {rows!r} does not cover the {self._next_id} int ids the index uses")
            self._originals.open(folder, rows)  # checks that vectors.f16 holds exactly these rows
            self._next_id = rows  # rows of deleted ids at the end still hold their place
        self._index_rows()
        self.created = str(manifest.get("created") or self.created)
        self.updated = str(manifest.get("updated") or self.created)
        return self


def _make(kind: str) -> Callable[..., FaissIndex]:
    def factory(dim: int, **options: Any) -> FaissIndex:
        return FaissIndex(dim, kind=kind, **options)

    factory.__doc__ = f"A FaissIndex of kind {kind!r}."
    return factory


for _kind in KINDS:
    indexes.register(_kind, _make(_kind), replace=True)


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
