"""Hybrid retrieval: dense + BM25 fused by reciprocal rank, then page-level aggregation.

Why both: MiniLM reads ~200 words of a chunk and matches paraphrases; BM25
matches rare exact terms ("diploë", "Volkmann"). Why pages: a page on which
several chunks match is more likely the right one than a page with a single
lucky chunk, so each chunk's fused score is raised by its page's total.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from medrag.config import RetrievalSettings
from medrag.embed.base import TextEmbedder
from medrag.errors import EmptyQueryError
from medrag.index.base import Where
from medrag.index.fusion import reciprocal_rank_fusion
from medrag.index.text_index import TextIndex
from medrag.types import Citation, Evidence


def check_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise EmptyQueryError("the question is empty: ask something, e.g. medrag ask \"What is compact bone?\" --index NAME")
    return query.strip()


class HybridRetriever:
    def __init__(self, index: TextIndex, embedder: TextEmbedder, settings: RetrievalSettings | None = None) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings or RetrievalSettings()

    def search(self, query: str, k: int | None = None, where: Where | None = None) -> list[Evidence]:
        return self.search_many([query], k, where)[0]

    def search_many(self, queries: Sequence[str], k: int | None = None, where: Where | None = None) -> list[list[Evidence]]:
        queries = [check_query(q) for q in queries]
        k = k or self.settings.top_k
        n = self.settings.candidates
        vectors = self.embedder.embed_queries(queries)
        dense_hits = self.index.dense.search(vectors, n, where=where)
        return [self._fuse(q, v, dense, k, where) for q, v, dense in zip(queries, vectors, dense_hits)]

    def _fuse(self, query: str, vector, dense_hits, k: int, where: Where | None) -> list[Evidence]:
        lexical_hits = self.index.lexical.search(query, self.settings.candidates, where=where)
        dense_score = {h.id: h.score for h in dense_hits}
        lexical_score = {h.id: h.score for h in lexical_hits}
        fused = dict(
            reciprocal_rank_fusion([[h.id for h in dense_hits], [h.id for h in lexical_hits]], k=self.settings.rrf_k)
        )
        page_total: dict[tuple, float] = defaultdict(float)
        for cid, score in fused.items():
            page_total[self._page_key(cid)] += score
        final = {
            cid: score + self.settings.page_weight * (page_total[self._page_key(cid)] - score)
            for cid, score in fused.items()
        }
        ranked = sorted(final.items(), key=lambda item: (-item[1], item[0]))[:k]
        best = ranked[0][1] if ranked else 1.0
        evidence = []
        for cid, score in ranked:
            chunk = self.index.chunks[cid]
            if cid not in dense_score:  # found by BM25 only: its cosine still tells how on-topic it is
                dense_score[cid] = float(self.index.dense.reconstruct(cid) @ vector)
            citation = Citation(
                source=chunk.source,
                chunk_id=cid,
                title=chunk.title,
                page=chunk.page,
                bbox=chunk.bbox,
                score=round(score / best, 4),
                locator={key: chunk.metadata[key] for key in ("section", "figure", "node_id") if chunk.metadata.get(key)},
            )
            evidence.append(
                Evidence(
                    evidence_id=cid,
                    text=chunk.text,
                    citation=citation,
                    score=score,
                    kind="figure" if chunk.metadata.get("kind") == "caption" else "text",
                    scores={
                        "fused": score,
                        "dense": float(dense_score.get(cid, 0.0)),
                        "lexical": float(lexical_score.get(cid, 0.0)),
                    },
                )
            )
        return evidence

    def _page_key(self, chunk_id: str) -> tuple:
        chunk = self.index.chunks[chunk_id]
        # Chunks without pages (ontology terms, reports) stand alone.
        return (chunk.doc_id, chunk.page) if chunk.page is not None else (chunk_id,)
