"""Deterministic fakes of medrag's protocols, for fast tests without weights."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence

import numpy as np

from medrag.embed.base import EmbedderInfo, l2_normalise

_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """A TextEmbedder that hashes words (and word bigrams) into a fixed vector.

    Deterministic across processes (sha1, not Python's salted hash), so texts
    sharing words are close and identical texts are identical vectors. A real
    lexical embedder, not a canned answer: useful as a fast stand-in for
    MiniLM in tests.
    """

    def __init__(self, dim: int = 256, name: str | None = None) -> None:
        if dim < 8:
            raise ValueError("dim must be at least 8")
        self._dim = dim
        # The default name is a spec make_embedder() accepts, so an index built with it
        # can be reopened from its manifest (CLI ask/search/re-ingest read the stored name).
        self.name = name or f"hashing:{dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def setup(self) -> None:
        return None

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.sha1(token.encode()).digest()
        index = int.from_bytes(digest[:4], "little") % self._dim
        sign = 1.0 if digest[4] & 1 else -1.0
        return index, sign

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for token in words + [a + "_" + b for a, b in zip(words, words[1:])]:
                index, sign = self._bucket(token)
                out[row, index] += sign
        return l2_normalise(out)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_texts(texts)

    def info(self) -> EmbedderInfo:
        return EmbedderInfo(name=self.name, fingerprint=f"hashing-sha1-v1-{self._dim}", dim=self._dim)


class InMemoryVectorIndex:
    """A VectorIndex in plain numpy: exact search, no files but a JSON+npz save.

    The reference the FAISS index is checked against, and a stand-in where
    FAISS is not wanted. It passes the same conformance suite.
    """

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._ids: list[str] = []
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._metadata: dict[str, dict] = {}

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, id: object) -> bool:
        return id in self._metadata

    def _matrix(self, vectors, allow_1d: bool) -> np.ndarray:
        from medrag.errors import InputError

        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim == 1 and allow_1d:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self._dim:
            raise InputError(f"vectors must have shape (n, {self._dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise InputError("vectors contain NaN or infinite values")
        return x

    def add(self, ids: Sequence[str], vectors, metadata=None) -> None:
        from medrag.errors import InputError
        from medrag.index.faiss_index import _check_ids
        from medrag.storage import json_object

        ids = _check_ids(ids)
        x = self._matrix(vectors, allow_1d=False)
        metadata = list(metadata) if metadata is not None else [{} for _ in ids]
        if not (len(ids) == len(x) == len(metadata)):
            raise InputError(f"got {len(ids)} ids, {len(x)} vectors and {len(metadata)} metadata entries")
        if len(set(ids)) != len(ids) or any(i in self for i in ids):
            raise InputError("duplicate id: ids must be new and unique")
        self._ids.extend(ids)
        self._vectors = np.concatenate([self._vectors, x])
        for id_, meta in zip(ids, metadata):
            self._metadata[id_] = json_object(meta)

    def search(self, vectors, k: int, where=None):
        from medrag.index.base import matches
        from medrag.types import Hit

        queries = self._matrix(vectors, allow_1d=True)
        results = []
        for q in queries:
            scores = self._vectors @ q
            hits = []
            for row in np.argsort(-scores, kind="stable"):
                meta = self._metadata[self._ids[row]]
                if matches(meta, where):
                    hits.append(Hit(self._ids[row], float(scores[row]), copy.deepcopy(meta)))
                    if len(hits) == k:
                        break
            results.append(hits)
        return results

    def delete(self, ids: Sequence[str]) -> int:
        gone = {i for i in ids if i in self._metadata}
        keep = [row for row, id_ in enumerate(self._ids) if id_ not in gone]
        self._vectors = self._vectors[keep]
        self._ids = [self._ids[row] for row in keep]
        for id_ in gone:
            del self._metadata[id_]
        return len(gone)

    def save(self, path) -> None:
        from pathlib import Path

        from medrag.storage import atomic_folder, write_json

        with atomic_folder(Path(path)) as tmp:
            np.save(tmp / "vectors.npy", self._vectors)
            write_json(tmp / "manifest.json", {"format": "medrag.memory", "dim": self._dim, "ids": self._ids, "metadata": self._metadata})

    @classmethod
    def load(cls, path) -> "InMemoryVectorIndex":
        from pathlib import Path

        from medrag.storage import read_json

        manifest = read_json(Path(path) / "manifest.json")
        index = cls(int(manifest["dim"]))
        index._ids = list(manifest["ids"])
        index._metadata = manifest["metadata"]
        index._vectors = np.load(Path(path) / "vectors.npy")
        return index


class KeywordSearchTool:
    """A search Tool over a fixed list of passages, ranked by shared words.

    Deterministic and model-free, for testing the agent graph; passages are
    (source, page, text) triples and results cite them like real retrieval.
    """

    name = "search_text"
    description = "Keyword search over a fixed set of passages (test double)."
    modalities = frozenset({"text"})
    inputs = {"query": {"type": "string", "required": True}, "k": {"type": "integer"}, "where": {"type": "object"}}

    def __init__(self, passages: Sequence[tuple[str, int | None, str]], k: int = 5) -> None:
        self.passages = list(passages)
        self.k = k
        self.calls: list[dict] = []

    def setup(self) -> None:
        return None

    def __call__(self, **inputs):
        from medrag.types import Citation, Evidence, ToolResult

        self.calls.append(dict(inputs))
        words = set(_WORD.findall(inputs["query"].lower()))
        scored = []
        for n, (source, page, text) in enumerate(self.passages):
            overlap = len(words & set(_WORD.findall(text.lower())))
            if overlap:
                scored.append((overlap, n))
        scored.sort(key=lambda item: (-item[0], item[1]))
        evidence = []
        for overlap, n in scored[: inputs.get("k") or self.k]:
            source, page, text = self.passages[n]
            score = overlap / max(len(words), 1)
            cid = f"{source}:{page}:{n}"
            evidence.append(
                Evidence(cid, text, Citation(source=source, chunk_id=cid, page=page, score=score), score, scores={"dense": score})
            )
        return ToolResult(tool=self.name, ok=True, evidence=evidence, output={"hits": len(evidence)})
