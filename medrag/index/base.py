"""The VectorIndex protocol shared by FAISS and (later) external stores.

Ids are stable strings chosen by the caller (chunk ids); metadata is a JSON
object per id. Scores are inner products of L2-normalised vectors (cosine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Filters live in medrag.index.filters; re-exported here because every index imports them from base.
from medrag.index.filters import Where, check_where, matches, parse_where
from medrag.types import Hit


@runtime_checkable
class VectorIndex(Protocol):
    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def __contains__(self, id: str) -> bool: ...

    def add(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add vectors under new ids; an id already present raises InputError (use upsert)."""
        ...

    def search(self, vectors: np.ndarray, k: int, where: Where | None = None) -> list[list[Hit]]:
        """For each query row, up to k hits by descending score, filtered by ``where``."""
        ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ids; returns how many were present."""
        ...

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash mid-save leaves the previous folder intact."""
        ...


@runtime_checkable
class ManagedVectorIndex(VectorIndex, Protocol):
    """A VectorIndex that can also be updated in place and maintained (FAISS; stores may opt in).

    Kept apart from VectorIndex so an external store satisfies the core protocol first and adds
    these when its engine supports them (Milvus upsert/compact, pgvector ON CONFLICT/REINDEX).
    """

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add vectors, replacing ids already present (vector and metadata)."""
        ...

    def compact(self) -> dict[str, Any]:
        """Drop deleted rows and rebuild search structures; returns what changed (counts before/after)."""
        ...

    def stats(self) -> dict[str, Any]:
        """Kind, count, deleted-but-not-compacted rows, approximate memory: what `medrag index info` shows."""
        ...


def read_index_file(folder: Path, name: str, reader: Any) -> Any:
    """Read one file of a saved index with ``reader``; any failure is IndexCorrupt naming the file."""
    from medrag.errors import IndexCorrupt

    path = folder / name
    if not path.is_file():
        raise IndexCorrupt(f"{path} is missing; the index folder is incomplete, re-ingest to rebuild it")
    try:
        return reader(path)
    except Exception as exc:  # faiss raises RuntimeError, json ValueError, the OS OSError
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise IndexCorrupt(f"{path} is unreadable ({reason}); re-ingest to rebuild it") from exc


def read_index_manifest(folder: Path, fmt: str, version: int, kind: str) -> dict[str, Any]:
    """The manifest of a saved index folder, checked for its format and version."""
    from medrag.errors import IndexCorrupt, IndexNotFound
    from medrag.storage import read_json

    if not folder.is_dir():
        raise IndexNotFound(f"No {kind} index at {folder}: build one first (ingest) or check the path")
    manifest = read_index_file(folder, "manifest.json", read_json)
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise IndexCorrupt(f"{folder / 'manifest.json'}: not a {fmt} manifest")
    if manifest.get("format_version") != version:
        raise IndexCorrupt(
            f"{folder / 'manifest.json'}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this medrag reads {version}); re-ingest or upgrade medrag"
        )
    return manifest
