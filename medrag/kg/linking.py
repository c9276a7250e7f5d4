"""Entity linking: free text -> knowledge-graph nodes, with character spans and scores.

Signals, cheapest first:

1. exact: the normalised phrase (lowercased, stemmed as BM25 does, stopwords
   dropped) equals a node's name, synonym or abbreviation; word order is also
   forgiven ("lens dislocation" = "dislocation of the lens").
2. n-grams: inside a longer phrase, the longest dictionary n-grams, left to right.
3. fuzzy: a phrase left unexplained is compared (rapidfuzz) only with surface
   forms sharing its rarer words, after typo-correcting unknown words against
   the dictionary's vocabulary. Never a scan of the whole dictionary.
4. embedding (optional): with an embedder passed in, a phrase still unlinked
   is compared with embedded node names; the names are embedded on first use.

Text is cut into phrases at punctuation (``,;.()`` and new lines): a list
such as "tall, long fingers, lens dislocation" is three phrases.

Scores (0..1): name 1.0, abbreviation 0.9, EXACT synonym 0.95, other synonym
0.85; reordered words x0.95; fuzzy 0.85 * ratio; embedding 0.8 * cosine. A match
covering only part of its phrase is scaled by 0.4 + 0.6 * covered share: one
explaining the whole phrase should beat one explaining a word of it.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from medrag.errors import EmptyQueryError
from medrag.index.bm25 import STOPWORDS, stem

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
_PHRASE_BREAK = re.compile(r"[,;.()\[\]\n:!?]+")
FORM_WEIGHTS = {"name": 1.0, "abbreviation": 0.9, "EXACT": 0.95}
OTHER_SYNONYM_WEIGHT = 0.85
REORDERED_FACTOR = 0.95
FUZZY_FACTOR = 0.85
EMBEDDING_FACTOR = 0.8
MAX_FUZZY_WORDS = 8  # a longer phrase is prose, not a term: fuzzy matching it would only add noise
COMMON_TOKEN_POSTINGS = 1500  # words in more surface forms than this do not select fuzzy candidates
FUZZY_CANDIDATES = 300
PARTIAL_BASE = 0.4  # a match explaining part of a phrase: score x (PARTIAL_BASE + (1 - PARTIAL_BASE) * share)
FUZZY_SCORER = fuzz.token_sort_ratio


@dataclass
class Link:
    start: int
    end: int
    text: str
    node_id: str
    name: str
    score: float
    method: str  # exact | reordered | ngram | fuzzy | embedding
    matched: str  # the surface form that matched

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        span = {"start": out.pop("start"), "end": out.pop("end"), "text": out.pop("text")}
        return {"span": span, **out}


def _normalise_word(word: str) -> str:
    word = word.lower()
    if word.endswith(("'s", "\u2019s")):
        word = word[:-2]
    return word.replace("'", "").replace("\u2019", "")


class EntityLinker:
    """A dictionary of every node's names built once; ``link(text)`` is then a few milliseconds.

    ``kinds`` keeps only nodes of those kinds (e.g. {"phenotype"}); ``exclude``
    holds (node_id, surface form) pairs left out of the dictionary (evaluation
    on held-out synonyms); ``embedder`` enables the embedding fallback.
    """

    def __init__(
        self,
        kg,
        *,
        kinds: Iterable[str] | None = None,
        exclude: Iterable[tuple[str, str]] = (),
        embedder=None,
        fuzzy_cutoff: float = 80.0,
        embedding_cutoff: float = 0.55,
    ) -> None:
        self.kg = kg
        self.kinds = frozenset(kinds) if kinds else None
        self.embedder = embedder
        self.fuzzy_cutoff = fuzzy_cutoff
        self.embedding_cutoff = embedding_cutoff
        self._stems: dict[str, str] = {}
        excluded = {(node_id, self.key(text)) for node_id, text in exclude}
        self.exact: dict[str, list[tuple[str, float, str]]] = defaultdict(list)  # key -> (node, weight, form)
        self.reordered: dict[str, list[tuple[str, float, str]]] = defaultdict(list)
        for node_id, data in kg.graph.nodes(data=True):
            if self.kinds and data.get("kind") not in self.kinds:
                continue
            forms = [(data.get("name", ""), FORM_WEIGHTS["name"])]
            forms += [(text, FORM_WEIGHTS.get(scope, OTHER_SYNONYM_WEIGHT)) for text, scope in data.get("synonyms", ())]
            forms += [(text, FORM_WEIGHTS["abbreviation"]) for text in data.get("abbreviations", ())]
            for text, weight in forms:
                key = self.key(text)
                if len(key) < 2 or (node_id, key) in excluded:
                    continue
                self._add(self.exact, key, (node_id, weight, text))
                self._add(self.reordered, " ".join(sorted(key.split())), (node_id, weight, text))
        self.max_ngram = max((k.count(" ") + 1 for k in self.exact), default=1)
        # Fuzzy candidate selection: word -> surface forms holding it.
        self.form_keys = list(self.exact)
        postings: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(self.form_keys):
            for word in set(key.split()):
                postings[word].append(i)
        self.postings = dict(postings)
        self.vocabulary = list(self.postings)
        self._name_vectors: np.ndarray | None = None
        self._name_nodes: list[str] = []
        self._lock = threading.Lock()

    @staticmethod
    def _add(table: dict, key: str, entry: tuple[str, float, str]) -> None:
        # Keep the best weight per node for a key (a name beats a synonym of the same node).
        entries = table[key]
        for i, (node_id, weight, _) in enumerate(entries):
            if node_id == entry[0]:
                if entry[1] > weight:
                    entries[i] = entry
                return
        entries.append(entry)

    # --- normalisation -----------------------------------------------------

    def _stem(self, word: str) -> str:
        stemmed = self._stems.get(word)
        if stemmed is None:
            stemmed = self._stems[word] = stem(word)
        return stemmed

    def words(self, text: str) -> list[tuple[str, int, int]]:
        """Content words of ``text`` as (stem, start, end); stopwords dropped."""
        out = []
        for m in _WORD.finditer(text):
            word = _normalise_word(m.group())
            if word and word not in STOPWORDS:
                out.append((self._stem(word), m.start(), m.end()))
        return out

    def key(self, text: str) -> str:
        return " ".join(w for w, _, _ in self.words(text))

    # --- linking -----------------------------------------------------------

    def link(self, text: str, *, per_span: int = 3, min_score: float = 0.0) -> list[Link]:
        """Links found in ``text``, best first; up to ``per_span`` nodes per span (ambiguous names)."""
        if not text or not text.strip():
            raise EmptyQueryError("entity linking needs some text, e.g. 'tall stature, long fingers'")
        links: list[Link] = []
        start = 0
        for m in list(_PHRASE_BREAK.finditer(text)) + [None]:
            end = m.start() if m else len(text)
            links += self._link_phrase(text, start, end, per_span)
            start = m.end() if m else len(text)
        links = [link for link in links if link.score >= min_score]
        links.sort(key=lambda link: (-link.score, link.start, link.node_id))
        return links

    def _link_phrase(self, text: str, start: int, end: int, per_span: int) -> list[Link]:
        words = self.words(text[start:end])
        if not words:
            return []
        words = [(w, s + start, e + start) for w, s, e in words]
        whole = self._lookup([w for w, _, _ in words], text, words[0][1], words[-1][2], per_span)
        if whole:
            return whole
        # Longest dictionary n-grams, left to right, without overlaps.
        out, i, covered = [], 0, 0
        while i < len(words):
            for n in range(min(self.max_ngram, len(words) - i), 0, -1):
                found = self._lookup([w for w, _, _ in words[i:i + n]], text, words[i][1], words[i + n - 1][2], per_span)
                if found:
                    out += found
                    covered += n
                    i += n
                    break
            else:
                i += 1
        share = covered / len(words)
        for link in out:
            link.score = round(link.score * (PARTIAL_BASE + (1 - PARTIAL_BASE) * share), 4)
            link.method = "ngram"
        if share < 1.0 and len(words) <= MAX_FUZZY_WORDS:
            out += self._fuzzy(words, text, per_span)
        if self.embedder is not None and not any(link.score >= 0.7 for link in out):
            out += self._embedding(text[words[0][1]:words[-1][2]], words[0][1], words[-1][2], per_span)
        return out

    def _lookup(self, stems: list[str], text: str, s: int, e: int, per_span: int) -> list[Link]:
        key = " ".join(stems)
        entries, factor, method = self.exact.get(key), 1.0, "exact"
        if not entries:
            entries, factor, method = self.reordered.get(" ".join(sorted(stems))), REORDERED_FACTOR, "reordered"
        if not entries:
            return []
        best = sorted(entries, key=lambda x: (-x[1], x[0]))[:per_span]
        return [self._make_link(text, s, e, node_id, weight * factor, method, form) for node_id, weight, form in best]

    def _make_link(self, text: str, s: int, e: int, node_id: str, score: float, method: str, form: str) -> Link:
        return Link(s, e, text[s:e], node_id, self.kg.graph.nodes[node_id].get("name", node_id), round(score, 4), method, form)

    def _fuzzy(self, words: list[tuple[str, int, int]], text: str, per_span: int) -> list[Link]:
        stems = []
        for w, _, _ in words:
            if w not in self.postings and len(w) > 3:  # a typo: use the closest dictionary word
                match = process.extractOne(w, self.vocabulary, scorer=fuzz.ratio, score_cutoff=80)
                w = match[0] if match else w
            stems.append(w)
        scores: dict[int, float] = defaultdict(float)
        rare = sorted((w for w in set(stems) if w in self.postings), key=lambda w: len(self.postings[w]))
        for n, w in enumerate(rare):
            if n and len(self.postings[w]) > COMMON_TOKEN_POSTINGS:
                break
            weight = 1.0 / np.log1p(len(self.postings[w]))
            for i in self.postings[w]:
                scores[i] += weight
        if not scores:
            return []
        candidates = sorted(scores, key=lambda i: -scores[i])[:FUZZY_CANDIDATES]
        query = " ".join(stems)
        choices = {i: self.form_keys[i] for i in candidates}
        hits = process.extract(query, choices, scorer=FUZZY_SCORER, limit=per_span, score_cutoff=self.fuzzy_cutoff)
        s, e = words[0][1], words[-1][2]
        out = []
        for key, ratio, _ in hits:
            for node_id, weight, form in sorted(self.exact[key], key=lambda x: (-x[1], x[0]))[:per_span]:
                out.append(self._make_link(text, s, e, node_id, FUZZY_FACTOR * ratio / 100 * weight, "fuzzy", form))
        return out[:per_span]

    def _embedding(self, phrase: str, s: int, e: int, per_span: int) -> list[Link]:
        vectors, nodes = self._embedded_names()
        if not nodes:
            return []
        embed_query = getattr(self.embedder, "embed_queries", self.embedder.embed_texts)
        query = np.asarray(embed_query([phrase]), dtype=np.float32)[0]
        sims = vectors @ query
        return [
            Link(s, e, phrase, nodes[i], self.kg.graph.nodes[nodes[i]].get("name", nodes[i]),
                 round(EMBEDDING_FACTOR * float(sims[i]), 4), "embedding", self.kg.graph.nodes[nodes[i]].get("name", nodes[i]))
            for i in sorted(np.argpartition(-sims, min(per_span, len(sims) - 1))[:per_span], key=lambda i: -sims[i])
            if sims[i] >= self.embedding_cutoff
        ]

    def _embedded_names(self) -> tuple[np.ndarray, list[str]]:
        # Lazy: embedding ~40k names takes minutes on a CPU, so only linkers that need it pay.
        with self._lock:
            if self._name_vectors is None:
                nodes = [n for n, d in self.kg.graph.nodes(data=True) if not self.kinds or d.get("kind") in self.kinds]
                names = [self.kg.graph.nodes[n].get("name", n) for n in nodes]
                vectors = np.asarray(self.embedder.embed_texts(names), dtype=np.float32) if names else np.zeros((0, 1), np.float32)
                self._name_vectors, self._name_nodes = vectors, nodes
        return self._name_vectors, self._name_nodes

    def best_nodes(self, text: str, *, kinds: Iterable[str] | None = None, min_score: float = 0.5) -> list[str]:
        """The best node per linked span (optionally only of ``kinds``), in text order."""
        kinds = frozenset(kinds) if kinds else None
        best: dict[tuple[int, int], tuple[float, str]] = {}
        for link in self.link(text, per_span=5, min_score=min_score):
            if kinds and self.kg.graph.nodes[link.node_id].get("kind") not in kinds:
                continue
            span = (link.start, link.end)
            if span not in best or link.score > best[span][0]:
                best[span] = (link.score, link.node_id)
        return list(dict.fromkeys(best[span][1] for span in sorted(best)))


__all__ = ["EntityLinker", "Link"]
