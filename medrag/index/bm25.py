"""A lexical Okapi BM25 index on numpy/scipy.sparse, plus its tokenizer.

Dense retrieval misses exact terms (drug names, gene symbols, "C5"); BM25
catches them and is fused with dense results (medrag.index.fusion).

Documents are stored as token lists; the weighted term matrix is rebuilt
lazily on the first search after a change, so many small adds stay cheap.
A saved index is a folder:

    manifest.json     format, tokenizer name/version, params, count, timestamps
    documents.jsonl   {"id": ..., "tokens": [...], "metadata": {...}} per line
"""

from __future__ import annotations

import copy
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from medrag.errors import EmptyQueryError, IndexCorrupt, IndexMismatch, InputError
from medrag.index.base import Where, check_where, matches, read_index_file, read_index_manifest
from medrag.storage import atomic_folder, json_object, read_jsonl, utc_now, write_json, write_jsonl
from medrag.types import Hit

FORMAT = "medrag.bm25"
FORMAT_VERSION = 1
TOKENIZER_NAME = "medrag-en"
TOKENIZER_VERSION = 1  # bump whenever tokenize() changes: saved token lists would no longer match queries
MANIFEST, DOCUMENTS_FILE = "manifest.json", "documents.jsonl"

# Compact list of English function words. "no"/"not" are included: BM25 ignores
# word order, so they cannot express negation and only add frequent-term noise.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not of off on once only or other our ours ourselves out over own
    same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up very via was we were what when where which while who
    whom why will with would you your yours yourself yourselves
    """.split()
)

_APOSTROPHES = re.compile(r"['\u2019\u2018`]")
_POSSESSIVE = re.compile(r"['\u2019]s\b")
_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits, any script
_VOWELS = set("aeiouy")


def tokenize(text: str) -> list[str]:
    """Lowercase, split on non-alphanumerics, drop stopwords, stem conservatively.

    Apostrophes never end up inside tokens: a possessive "'s" is dropped
    ("patient's" -> "patient") and other inner apostrophes are removed
    ("don't" -> "dont"). Digits are kept ("c5", "2cm", "12").
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", _POSSESSIVE.sub("", text))
    return [stem(word) for word in _WORD.findall(text) if word not in STOPWORDS]


def _has_vowel(s: str) -> bool:
    return any(c in _VOWELS for c in s)


def _undouble(s: str) -> str:
    # "stopp" -> "stop", "inflamm" -> "inflam"; "ll", "ss", "zz" stay ("swell", "mass")
    if len(s) >= 4 and s[-1] == s[-2] and s[-1] not in _VOWELS and s[-1] not in "lsz":
        return s[:-1]
    return s


def stem(word: str) -> str:
    """A small, conservative English suffix stemmer (a few Porter-like rules).

    Words of 3 characters or fewer and tokens containing digits are left
    alone. Each rule keeps a stem of at least 3 characters, so short words
    are not mangled. The goal is that inflections and common derivations
    meet ("bones"/"bone", "fractured"/"fracture", "ossification"/"ossified"),
    not linguistic accuracy: both queries and documents go through it.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    w = word

    # 1. plurals
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"  # studies -> study, arteries -> artery
    elif w.endswith("sses"):
        w = w[:-2]  # masses -> mass
    elif w.endswith(("ches", "shes", "xes", "zes")):
        w = w[:-2]  # reaches -> reach, boxes -> box
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]  # bones -> bone; keep "mass", "virus", "fibrosis"

    # 2. -ed / -ing / -ly
    stripped = ""
    if w.endswith("ied") and len(w) > 4:
        w = w[:-3] + "y"  # ossified -> ossify
    elif w.endswith("eed"):
        pass  # bleed, need
    elif w.endswith("ed") and len(w) - 2 >= 3 and _has_vowel(w[:-2]):
        w, stripped = w[:-2], "ed"
    elif w.endswith("ing") and len(w) - 3 >= 3 and _has_vowel(w[:-3]):
        w, stripped = w[:-3], "ing"
    elif w.endswith("ly") and len(w) - 2 >= 5:
        w = w[:-2]  # rapidly -> rapid; "early", "family" are too short to touch
    if stripped:
        if w.endswith(("at", "bl", "iz")):
            w += "e"  # dislocated -> dislocate, so it meets "dislocation" below
        else:
            w = _undouble(w)

    # 3. derivational suffixes, longest first
    for suffix, repl, min_stem in (
        ("ification", "if", 3),  # ossification -> ossif
        ("atory", "", 4),  # inflammatory -> inflamm
        ("ation", "", 3),  # dislocation -> disloc
        ("ness", "", 3),  # tenderness -> tender
        ("ment", "", 4),  # treatment -> treat ("segment" is left alone)
        ("ify", "if", 3),  # ossify -> ossif
        ("ate", "", 4),  # dislocate -> disloc ("plate", "palate" are left alone)
    ):
        if w.endswith(suffix) and len(w) - len(suffix) >= min_stem:
            w = _undouble(w[: -len(suffix)] + repl)
            break

    # 4. silent final e, so "fracture" meets "fractured"/"fracturing" -> "fractur" ("knee" keeps it)
    if w.endswith("e") and not w.endswith("ee") and len(w) >= 4:
        w = w[:-1]
    return w


class BM25Index:
    """Okapi BM25 over token lists with string ids and per-id metadata."""

    def __init__(self, *, k1: float = 1.5, b: float = 0.75) -> None:
        if not (k1 >= 0 and 0 <= b <= 1):
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        self.k1 = float(k1)
        self.b = float(b)
        self._docs: dict[str, tuple[list[str], dict[str, Any]]] = {}  # id -> (tokens, metadata)
        self._built: tuple[list[str], dict[str, int], sparse.csc_matrix] | None = None
        self.created = utc_now()
        self.updated = self.created

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, id: object) -> bool:
        return id in self._docs

    def __repr__(self) -> str:
        return f"BM25Index(count={len(self)}, k1={self.k1}, b={self.b})"

    def ids(self) -> Iterator[str]:
        return iter(list(self._docs))

    def get(self, id: str) -> dict[str, Any]:
        """A copy of the metadata stored for ``id``; KeyError if absent."""
        return copy.deepcopy(self._docs[id][1])

    def tokens(self, id: str) -> list[str]:
        return list(self._docs[id][0])

    # -- writing -------------------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Index texts under new ids; an id already present raises InputError (use upsert)."""
        docs = self._prepare(ids, texts, metadata)
        present = [i for i in docs if i in self._docs]
        if present:
            raise InputError(f"{len(present)} id(s) already in the BM25 index, e.g. {present[0]!r}; use upsert")
        self._insert(docs)

    def upsert(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Index texts, replacing ids already present."""
        docs = self._prepare(ids, texts, metadata)
        self.delete([i for i in docs if i in self._docs])
        self._insert(docs)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ids; returns how many were present."""
        if isinstance(ids, str):
            raise InputError("ids must be a sequence of strings, not a single string")
        removed = 0
        for id_ in set(ids):
            if id_ in self._docs:
                del self._docs[id_]
                removed += 1
        if removed:
            self._changed()
        return removed

    def _prepare(
        self, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None
    ) -> dict[str, tuple[list[str], dict[str, Any]]]:
        if isinstance(ids, str) or isinstance(texts, str):
            raise InputError("ids and texts must be sequences of strings, not single strings")
        ids, texts = list(ids), list(texts)
        metas = [None] * len(ids) if metadata is None else list(metadata)
        if not (len(ids) == len(texts) == len(metas)):
            raise InputError(f"Got {len(ids)} ids, {len(texts)} texts and {len(metas)} metadata entries")
        docs: dict[str, tuple[list[str], dict[str, Any]]] = {}
        for id_, text, meta in zip(ids, texts, metas):
            if not isinstance(id_, str) or not id_:
                raise InputError(f"ids must be non-empty strings, got {id_!r}")
            if not isinstance(text, str):
                raise InputError(f"text of {id_!r} must be a string, got {type(text).__name__}")
            if id_ in docs:
                raise InputError(f"Duplicate id in batch: {id_!r}")
            docs[id_] = (tokenize(text), json_object(meta, what=f"metadata of {id_!r}"))
        return docs

    def _insert(self, docs: dict[str, tuple[list[str], dict[str, Any]]]) -> None:
        if docs:
            self._docs.update(docs)
            self._changed()

    def _changed(self) -> None:
        self._built = None  # rebuilt on the next search
        self.updated = utc_now()

    # -- search --------------------------------------------------------------------

    def _build(self) -> tuple[list[str], dict[str, int], sparse.csc_matrix]:
        """Doc order, vocabulary and the (docs x terms) matrix of per-term BM25 weights.

        Precomputing idf * tf*(k1+1) / (tf + k1*(1-b+b*dl/avgdl)) per nonzero
        makes a query a sum of a few matrix columns.
        """
        if self._built is not None:
            return self._built
        doc_ids = list(self._docs)
        vocab: dict[str, int] = {}
        rows, cols, tfs = [], [], []
        lengths = np.zeros(len(doc_ids), dtype=np.float64)
        for r, id_ in enumerate(doc_ids):
            tokens = self._docs[id_][0]
            lengths[r] = len(tokens)
            for term, tf in Counter(tokens).items():
                rows.append(r)
                cols.append(vocab.setdefault(term, len(vocab)))
                tfs.append(tf)
        n_docs = len(doc_ids)
        tf = np.asarray(tfs, dtype=np.float64)
        rows_a = np.asarray(rows, dtype=np.int64)
        cols_a = np.asarray(cols, dtype=np.int64)
        avgdl = lengths.mean() if n_docs and lengths.sum() > 0 else 1.0
        df = np.bincount(cols_a, minlength=len(vocab)).astype(np.float64)
        # Lucene's idf: always > 0, so scores are >= 0 even for terms in most documents
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        norm = self.k1 * (1.0 - self.b + self.b * lengths[rows_a] / avgdl)
        weights = idf[cols_a] * tf * (self.k1 + 1.0) / (tf + norm)
        matrix = sparse.csc_matrix((weights, (rows_a, cols_a)), shape=(n_docs, len(vocab)))
        self._built = (doc_ids, vocab, matrix)
        return self._built

    def idf(self, terms: Iterable[str]) -> dict[str, float]:
        """Idf of each token over the indexed documents; a token never seen gets the largest value."""
        doc_ids, vocab, matrix = self._build()
        n_docs = len(doc_ids)
        df = matrix.getnnz(axis=0)
        return {t: float(np.log1p((n_docs - (d := df[vocab[t]] if t in vocab else 0) + 0.5) / (d + 0.5))) for t in terms}

    def scores(self, query: str) -> dict[str, float]:
        """BM25 score of every document sharing a term with ``query`` (all > 0)."""
        doc_ids, vocab, matrix = self._build()
        cols = sorted({vocab[t] for t in tokenize(query) if t in vocab})
        if not cols:
            return {}
        total = np.asarray(matrix[:, cols].sum(axis=1)).ravel()
        return {doc_ids[r]: float(total[r]) for r in np.flatnonzero(total > 0)}

    def search(self, query: str, k: int, where: Where | None = None) -> list[Hit]:
        """Up to k hits by descending score (ties by id); documents scoring 0 are never returned."""
        if not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        if not query.strip():
            raise EmptyQueryError("The search query is empty")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        where = check_where(where)
        if not self._docs:
            return []
        ranked = sorted(self.scores(query).items(), key=lambda item: (-item[1], item[0]))
        hits = []
        for id_, score in ranked:
            meta = self._docs[id_][1]
            if where and not matches(meta, where):
                continue
            hits.append(Hit(id=id_, score=score, metadata=copy.deepcopy(meta)))
            if len(hits) == k:
                break
        return hits

    # -- persistence ---------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tokenizer": {"name": TOKENIZER_NAME, "version": TOKENIZER_VERSION},
            "params": {"k1": self.k1, "b": self.b},
            "count": len(self),
            "created": self.created,
            "updated": self.updated,
        }

    def save(self, path: str | Path) -> None:
        """Write the folder atomically: a failure mid-save leaves the previous folder intact."""
        with atomic_folder(path) as tmp:
            write_jsonl(
                tmp / DOCUMENTS_FILE,
                ({"id": i, "tokens": toks, "metadata": meta} for i, (toks, meta) in self._docs.items()),
            )
            write_json(tmp / MANIFEST, self.manifest())  # last: its presence means the rest is written

    @classmethod
    def load(cls, path: str | Path) -> "BM25Index":
        folder = Path(path)
        manifest = read_index_manifest(folder, FORMAT, FORMAT_VERSION, "BM25")
        try:
            tok = manifest["tokenizer"]
            tok_name, tok_version = str(tok["name"]), int(tok["version"])
            k1, b = float(manifest["params"]["k1"]), float(manifest["params"]["b"])
            count = int(manifest["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexCorrupt(f"{folder / MANIFEST}: missing or invalid field {exc}") from exc
        if (tok_name, tok_version) != (TOKENIZER_NAME, TOKENIZER_VERSION):
            raise IndexMismatch(
                f"BM25 index {folder} was built with tokenizer {tok_name} v{tok_version} but this medrag "
                f"uses {TOKENIZER_NAME} v{TOKENIZER_VERSION}; queries would not match its terms. Re-ingest to rebuild it."
            )

        rows = read_index_file(folder, DOCUMENTS_FILE, read_jsonl)
        self = cls(k1=k1, b=b)
        for row in rows:
            ok = (
                isinstance(row, dict)
                and isinstance(row.get("id"), str)
                and isinstance(row.get("tokens"), list)
                and all(isinstance(t, str) for t in row["tokens"])
                and isinstance(row.get("metadata"), dict)
            )
            if not ok or row["id"] in self._docs:
                raise IndexCorrupt(f"{folder / DOCUMENTS_FILE}: bad or duplicate entry {str(row)[:80]}")
            self._docs[row["id"]] = (row["tokens"], row["metadata"])
        if len(self._docs) != count:
            raise IndexCorrupt(f"{folder / DOCUMENTS_FILE} has {len(self._docs)} documents but {MANIFEST} says {count}")
        self.created = str(manifest.get("created") or self.created)
        self.updated = str(manifest.get("updated") or self.created)
        return self
