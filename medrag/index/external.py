"""What the external vector stores (Milvus, PostgreSQL + pgvector) share.

An external store keeps its vectors in a database, not in the index folder.
``save(path)`` writes only a manifest naming the store (URI without
credentials, collection/table, dim, embedder); ``load(path)`` reconnects to it.
Credentials always come from the environment, never from a manifest or a log.

Crash safety: every row carries the generation (``txn``) of the save that will
commit it. A save bumps the committed generation in the manifest; loading
first removes rows newer than it, so an ingest killed before its save leaves
nothing behind and a re-run starts clean (no duplicated, no lost chunks).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from medrag.embed.base import EmbedderInfo
from medrag.errors import IndexCorrupt, IndexMismatch, InputError
from medrag.index.base import Where, read_index_manifest
from medrag.storage import atomic_folder, json_object, utc_now, write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_TABLE_NAME = re.compile(r"[^A-Za-z0-9_]")


def check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise InputError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise InputError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    for id_ in ids:
        if not isinstance(id_, str) or not id_:
            raise InputError(f"ids must be non-empty strings, got {id_!r}")
    return ids


def as_matrix(vectors: Any, dim: int, *, what: str, allow_1d: bool) -> np.ndarray:
    """A C-contiguous finite float32 (n, dim) matrix, or InputError."""
    try:
        x = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be numeric arrays: {exc}") from exc
    if x.ndim == 1 and allow_1d:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise InputError(f"{what} must have shape (n, {dim}), got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(x)


def prepare_batch(
    ids: Sequence[str], vectors: Any, metadata: Sequence[Mapping[str, Any]] | None, dim: int
) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """Validate one add/upsert batch exactly as FaissIndex does (same errors, nothing written)."""
    ids = check_ids(ids)
    x = as_matrix(vectors, dim, what="vectors", allow_1d=False)
    if x.shape[0] != len(ids):
        raise InputError(f"Got {len(ids)} ids but {x.shape[0]} vectors")
    if len(set(ids)) != len(ids):
        dup = next(i for n, i in enumerate(ids) if i in ids[:n])
        raise InputError(f"Duplicate id in batch: {dup!r}")
    if metadata is None:
        metas: list[dict[str, Any]] = [{} for _ in ids]
    else:
        metadata = list(metadata)
        if len(metadata) != len(ids):
            raise InputError(f"Got {len(ids)} ids but {len(metadata)} metadata entries")
        metas = [json_object(m, what=f"metadata of {i!r}") for i, m in zip(ids, metadata)]
    return ids, x, metas


def check_where(where: Where | None) -> list[tuple[str, str, Any]]:
    """``where`` (validated, aliases resolved by medrag.index.filters) as (key, op, value) triples, op in eq/in/gte/lte."""
    from medrag.index.filters import check_where as validate

    out: list[tuple[str, str, Any]] = []
    for key, cond in validate(where).items():
        if isinstance(cond, Mapping):
            out.extend((key, op, cond[op]) for op in ("gte", "lte") if op in cond)
        elif isinstance(cond, (list, tuple, set, frozenset)):
            out.append((key, "in", list(cond)))
        else:
            out.append((key, "eq", cond))
    return out


def redact_uri(uri: str) -> str:
    """The URI without user name or password (those come from the environment)."""
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def table_name(prefix: str, name: str) -> str:
    """A collection/table name safe for Milvus and PostgreSQL from an index name."""
    cleaned = _TABLE_NAME.sub("_", name).lower()
    return f"{prefix}{cleaned}"[:63]


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    with atomic_folder(Path(path)) as tmp:
        write_json(tmp / MANIFEST, manifest)


def read_manifest(path: str | Path, fmt: str, kind: str) -> dict[str, Any]:
    folder = Path(path)
    manifest = read_index_manifest(folder, fmt, FORMAT_VERSION, kind)
    for field in ("dim", "uri", "table", "generation"):
        if field not in manifest:
            raise IndexCorrupt(f"{folder / MANIFEST}: missing field {field!r}")
    return manifest


def base_manifest(fmt: str, *, dim: int, uri: str, table: str, generation: int, count: int,
                  embedder: EmbedderInfo | None, created: str) -> dict[str, Any]:
    return {
        "format": fmt,
        "format_version": FORMAT_VERSION,
        "kind": "external",
        "dim": dim,
        "metric": "ip",
        "uri": redact_uri(uri),
        "table": table,
        "generation": generation,
        "count": count,
        "embedder": embedder.to_dict() if embedder else None,
        "created": created,
        "updated": utc_now(),
    }


def stored_embedder(folder: Path, manifest: dict[str, Any], given: EmbedderInfo | None) -> EmbedderInfo | None:
    """The embedder recorded in the manifest, refusing a different one given by the caller."""
    try:
        stored = EmbedderInfo.from_dict(manifest["embedder"]) if manifest.get("embedder") else None
        dim = int(manifest["dim"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexCorrupt(f"{folder / MANIFEST}: invalid field {exc}") from exc
    if given is not None:
        if (stored is not None and stored != given) or given.dim != dim:
            have = f"{stored.name} ({stored.fingerprint}, dim {stored.dim})" if stored else f"an unnamed {dim}-d embedder"
            raise IndexMismatch(
                f"Index {folder} was built with {have} but was opened with {given.name} "
                f"({given.fingerprint}, dim {given.dim}). Re-ingest with the new embedder, or pass the one that built it."
            )
    return stored
