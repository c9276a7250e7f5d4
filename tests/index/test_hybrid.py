"""HybridRetriever: dense + BM25 + page ranks fused into cited evidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import build_text_index, write_medical_pdf
from medrag.config import RetrievalSettings
from medrag.errors import EmptyQueryError, InputError
from medrag.index.hybrid import FIGURE_INTENT, HybridRetriever, check_query
from medrag.index.text_index import embedding_text


@pytest.fixture
def retriever(anatomy_index, hashing_embedder) -> HybridRetriever:
    return HybridRetriever(anatomy_index, hashing_embedder)


@pytest.fixture
def two_sources(tmp_path: Path, hashing_embedder) -> HybridRetriever:
    pdfs = [
        write_medical_pdf(tmp_path / "anatomy.pdf", ("bone", "heart")),
        write_medical_pdf(tmp_path / "marrow.pdf", ("marrow",), title="Marrow"),
    ]
    return HybridRetriever(build_text_index("two", pdfs, hashing_embedder), hashing_embedder)


def test_results_carry_citations(retriever: HybridRetriever, anatomy_index) -> None:
    evidence = retriever.search("Which cells break down old bone?")
    assert 1 <= len(evidence) <= retriever.settings.top_k
    for ev in evidence:
        chunk = anatomy_index.chunks[ev.evidence_id]
        cite = ev.citation
        assert cite.chunk_id == ev.evidence_id
        assert cite.source == "anatomy.pdf"
        assert cite.title == "Notes on Anatomy"
        assert cite.page == chunk.page and cite.page in (1, 2, 3)
        assert cite.bbox == chunk.bbox
        x0, y0, x1, y1 = cite.bbox
        assert 0 <= x0 < x1 <= 612 and 0 <= y0 < y1 <= 792
        assert cite.locator["section"] == chunk.metadata["section"]
        assert ev.text == chunk.text
        d = ev.to_dict()
        assert d["citation"]["bbox"] == list(cite.bbox) and d["citation"]["page"] == cite.page
    # Citation scores are relative to the best hit.
    assert evidence[0].citation.score == 1.0
    assert all(0 < ev.citation.score <= 1.0 for ev in evidence)


def test_scores_have_dense_lexical_and_fused(retriever: HybridRetriever, anatomy_index, hashing_embedder) -> None:
    query = "osteoclasts break down old bone"
    evidence = retriever.search(query)
    fused = [ev.scores["fused"] for ev in evidence]
    assert fused == sorted(fused, reverse=True)
    q = hashing_embedder.embed_queries([query])[0]
    for ev in evidence:
        assert set(ev.scores) == {"dense", "lexical", "fused"}
        assert ev.scores["fused"] == ev.score > 0
        assert ev.scores["lexical"] >= 0
        # The dense score is the cosine between the query and the chunk's embedded text,
        # also for chunks that only BM25 found.
        chunk = anatomy_index.chunks[ev.evidence_id]
        expected = float(hashing_embedder.embed_texts([embedding_text(chunk)])[0] @ q)
        assert ev.scores["dense"] == pytest.approx(expected, abs=1e-5)
    lexical_hits = [ev for ev in evidence if ev.scores["lexical"] > 0]
    assert lexical_hits and all("bone" in ev.text.lower() for ev in lexical_hits)


@pytest.mark.parametrize(
    ("query", "suffix", "needle"),
    [
        ("triglycerides", ":p0003:c000", "triglycerides"),
        ("Which cells break down old bone?", ":p0001:c001", "Osteoclasts"),
        ("What is the pacemaker of the heart?", ":p0002:c000", "pacemaker"),
        ("mitral valve backflow", ":p0002:c000", "mitral valve"),
    ],
)
def test_exact_term_query_finds_its_chunk_first(retriever: HybridRetriever, query: str, suffix: str, needle: str) -> None:
    top = retriever.search(query)[0]
    assert top.evidence_id.endswith(suffix)
    assert needle in top.text


def test_k_limits_results(retriever: HybridRetriever) -> None:
    assert len(retriever.search("bone", k=2)) == 2
    assert len(retriever.search("bone", k=50)) == 6  # every chunk of the index
    narrow = HybridRetriever(retriever.index, retriever.embedder, RetrievalSettings(top_k=3))
    assert len(narrow.search("bone")) == 3


def test_where_filter_is_respected(two_sources: HybridRetriever) -> None:
    query = "red marrow in flat bones and adipose tissue"
    unfiltered = two_sources.search(query, k=10)
    assert {ev.citation.source for ev in unfiltered} == {"anatomy.pdf", "marrow.pdf"}
    assert unfiltered[0].citation.source == "marrow.pdf"

    only_anatomy = two_sources.search(query, k=10, where={"source": "anatomy.pdf"})
    assert only_anatomy and {ev.citation.source for ev in only_anatomy} == {"anatomy.pdf"}
    assert len(only_anatomy) == sum(1 for c in two_sources.index.chunks.values() if c.source == "anatomy.pdf")

    page_two = two_sources.search("heart", k=10, where={"source": "anatomy.pdf", "page": 2})
    assert page_two and all(ev.citation.page == 2 and ev.citation.source == "anatomy.pdf" for ev in page_two)

    assert two_sources.search(query, where={"source": "unknown.pdf"}) == []


def test_empty_query_is_an_error(retriever: HybridRetriever) -> None:
    for query in ("", "   ", "\n\t"):
        with pytest.raises(EmptyQueryError) as caught:
            retriever.search(query)
        assert isinstance(caught.value, InputError)
        assert "empty" in str(caught.value)
    with pytest.raises(EmptyQueryError):
        retriever.search_many(["compact bone", " "])
    assert check_query("  compact bone \n") == "compact bone"


def test_search_many_matches_single_searches(retriever: HybridRetriever) -> None:
    queries = ["pacemaker of the heart", "triglycerides energy reserve"]
    many = retriever.search_many(queries)
    for query, results in zip(queries, many):
        assert [ev.evidence_id for ev in results] == [ev.evidence_id for ev in retriever.search(query)]


def test_figure_intent_ranks_the_caption_first(retriever: HybridRetriever, anatomy_index, hashing_embedder) -> None:
    question = "Show the image of the sinoatrial node in the right atrium"
    assert FIGURE_INTENT.search(question)
    top = retriever.search(question)[0]
    assert top.kind == "figure"
    assert top.citation.locator["figure"] == "Figure 1.2"
    assert top.text.startswith("Figure 1.2 Conduction system of the heart")
    assert top.citation.page == 2

    # Without the figure boost (or without a figure word) the body text about the node wins.
    no_boost = HybridRetriever(anatomy_index, hashing_embedder, RetrievalSettings(figure_weight=0.0))
    assert no_boost.search(question)[0].kind == "text"
    plain = retriever.search("sinoatrial node in the right atrium")[0]
    assert plain.kind == "text" and "pacemaker" in plain.text


def test_page_index_covers_every_page(retriever: HybridRetriever) -> None:
    assert len(retriever.pages) == 3
    doc_id = next(iter(retriever.index.sources))
    assert retriever.pages.search("triglycerides adipocytes", 1)[0].id == f"{doc_id}#3"


def test_retrieval_is_deterministic(retriever: HybridRetriever, anatomy_index, hashing_embedder) -> None:
    again = HybridRetriever(anatomy_index, hashing_embedder)
    query = "compact bone and spongy bone"
    first = [(ev.evidence_id, ev.score) for ev in retriever.search(query)]
    assert first == [(ev.evidence_id, ev.score) for ev in again.search(query)]
    assert np.isfinite([s for _, s in first]).all()


def test_near_duplicate_passages_are_dropped_and_adaptive_k_cuts_the_tail(tmp_path) -> None:
    from medrag.config import RetrievalSettings
    from medrag.index.hybrid import HybridRetriever
    from medrag.index.text_index import SourceRecord, TextIndex
    from medrag.testing import HashingEmbedder
    from medrag.types import Chunk

    embedder = HashingEmbedder(128)
    texts = [
        "Osteoclasts break down old bone tissue in a process called resorption.",
        "Osteoclasts break down old bone tissue in a process called resorption!",  # a near copy
        "Osteoblasts build new bone matrix.",
        "The heart has four chambers.",
    ]
    chunks = [Chunk(f"c{i}", "d", t, "book.pdf", "Book", page=i + 1) for i, t in enumerate(texts)]
    index = TextIndex("t", embedder.info())
    index.add_document_chunks(SourceRecord("book.pdf", "d", "h", "Book", "pdf", 4), chunks, embedder.embed_texts(texts))
    hits = HybridRetriever(index, embedder).search("osteoclasts resorption of bone", k=4)
    ids = [h.evidence_id for h in hits]
    assert ids[0] in {"c0", "c1"} and not {"c0", "c1"} <= set(ids)
    fixed = HybridRetriever(index, embedder, RetrievalSettings(page_weight=0)).search("osteoclasts resorption", k=3)
    adaptive = HybridRetriever(index, embedder, RetrievalSettings(page_weight=0, adaptive_ratio=0.99)).search(
        "osteoclasts resorption", k=3
    )
    assert len(fixed) == 3 and 1 <= len(adaptive) < 3
    assert all(h.score >= 0.99 * adaptive[0].score for h in adaptive)


def test_identical_text_in_two_documents_is_two_pieces_of_evidence() -> None:
    from medrag.index.hybrid import HybridRetriever
    from medrag.index.text_index import SourceRecord, TextIndex
    from medrag.testing import HashingEmbedder
    from medrag.types import Chunk

    embedder = HashingEmbedder(128)
    text = "Metformin lowers hepatic glucose production."
    index = TextIndex("t", embedder.info())
    for doc in ("d1", "d2"):
        chunk = Chunk(f"{doc}:c0", doc, text, f"{doc}.jsonl", doc, metadata={"record_id": doc})
        index.add_document_chunks(SourceRecord(f"{doc}.jsonl", doc, doc, doc, "records", 0), [chunk], embedder.embed_texts([text]))
    hits = HybridRetriever(index, embedder).search("metformin glucose", k=5)
    assert {h.citation.locator["record_id"] for h in hits} == {"d1", "d2"}


@pytest.mark.parametrize("fusion", ["score", "rrf"])
def test_both_fusions_find_exact_terms_and_cite(anatomy_index, hashing_embedder, fusion) -> None:
    retriever = HybridRetriever(anatomy_index, hashing_embedder, RetrievalSettings(fusion=fusion))
    evidence = retriever.search("osteoclasts resorb bone", k=3)
    assert evidence and evidence[0].citation.score == 1.0
    assert all(0 < ev.citation.score <= 1.0 for ev in evidence)


def test_single_retriever_modes_carry_the_whole_score(retriever: HybridRetriever) -> None:
    for mode, signal in (("dense", "dense"), ("bm25", "lexical")):
        evidence = retriever.search("compact bone osteon", k=5, mode=mode)
        signals = [ev.scores[signal] for ev in evidence]
        assert signals == sorted(signals, reverse=True), (mode, signals)


def test_source_weights_prefer_a_source(two_sources: HybridRetriever) -> None:
    query = "bone marrow"
    plain = two_sources.search(query, k=10)
    assert {ev.citation.source for ev in plain} == {"anatomy.pdf", "marrow.pdf"}
    for preferred in ("anatomy.pdf", "marrow.pdf"):
        weighted = HybridRetriever(two_sources.index, two_sources.embedder, RetrievalSettings(source_weights={preferred: 5.0}))
        assert weighted.search(query, k=1)[0].citation.source == preferred


def test_book_alias_filters_both_retrievers(two_sources: HybridRetriever) -> None:
    for mode in ("hybrid", "dense", "bm25"):
        evidence = two_sources.search("bone marrow", k=10, where={"book": "marrow.pdf"}, mode=mode)
        assert evidence and {ev.citation.source for ev in evidence} == {"marrow.pdf"}, mode
