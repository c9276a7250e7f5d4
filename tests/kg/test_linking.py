"""Entity linking: exact names, synonyms, abbreviations, reordering, n-grams, fuzzy, embeddings."""

from __future__ import annotations

import pytest

from kg_samples import build_tiny
from medrag.errors import EmptyQueryError
from medrag.kg.linking import EntityLinker
from medrag.testing.fakes import HashingEmbedder


@pytest.fixture(scope="module")
def kg(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def linker(kg):
    return EntityLinker(kg)


def spans(links):
    return [(link.start, link.end, link.text, link.node_id, link.method) for link in links]


def test_a_list_of_phrases(linker):
    text = "tall stature, long fingers, lens dislocation"
    links = sorted(linker.link(text), key=lambda link: link.start)
    assert spans(links) == [
        (0, 12, "tall stature", "HP:0000098", "exact"),
        (14, 26, "long fingers", "HP:0100807", "exact"),
        (28, 44, "lens dislocation", "HP:0001083", "exact"),
    ]
    assert [link.score for link in links] == [1.0, 1.0, 0.95]  # names 1.0, an EXACT synonym 0.95
    assert all(text[link.start:link.end] == link.text for link in links)
    assert links[2].name == "Ectopia lentis" and links[2].matched == "Lens dislocation"


def test_word_order_and_stopwords_forgiven(linker):
    [link] = linker.link("dislocation of the lens")
    assert (link.node_id, link.method) == ("HP:0001083", "reordered")
    assert link.score == pytest.approx(0.95 * 0.95)


def test_inflections_meet_through_stemming(linker):
    assert linker.link("Spider finger")[0].node_id == "HP:0001166"


def test_abbreviation(linker):
    [link] = linker.link("ASD")
    assert link.node_id == "HP:0001631" and link.name == "Atrial septal defect"


def test_terms_inside_prose_are_found_with_a_lower_score(linker):
    text = "the patient has spider fingers and a slow heart rate"
    links = linker.link(text)
    assert {(link.text, link.node_id) for link in links} == {("spider fingers", "HP:0001166"), ("slow heart rate", "HP:0001662")}
    assert all(link.method == "ngram" and 0.6 < link.score < 0.95 for link in links)


def test_typo_is_matched_fuzzily(linker):
    [link] = linker.link("Arachnodactily")
    assert (link.node_id, link.method) == ("HP:0001166", "fuzzy")
    assert 0.7 < link.score < 0.9


def test_ambiguous_names_give_several_nodes_per_span(linker):
    ids = [link.node_id for link in linker.link("Marfan syndrome")]
    assert set(ids) == {"DOID:14323", "OMIM:154700"}
    assert len(linker.link("Marfan syndrome", per_span=1)) == 1


def test_kinds_filter(kg):
    phenotypes = EntityLinker(kg, kinds={"phenotype"})
    assert [link.node_id for link in phenotypes.link("Marfan syndrome, ASD")] == ["HP:0001631"]
    assert phenotypes.best_nodes("ASD; tall stature") == ["HP:0001631", "HP:0000098"]  # text order


def test_nothing_to_link(linker):
    assert linker.link("xyz qqq") == []
    assert linker.link("tall stature", min_score=1.1) == []


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_text_is_an_error(linker, text):
    with pytest.raises(EmptyQueryError):
        linker.link(text)


def test_excluded_forms_leave_the_dictionary(kg):
    held_out = EntityLinker(kg, exclude=[("HP:0001166", "Spider fingers")])
    assert all(link.method != "exact" for link in held_out.link("spider fingers"))


def test_embedding_fallback_is_lazy_and_used_when_words_fail(kg):
    embedder = HashingEmbedder(dim=64)
    calls = []
    original = embedder.embed_texts
    embedder.embed_texts = lambda texts: calls.append(len(texts)) or original(texts)
    linker = EntityLinker(kg, exclude=[("HP:0001662", "Bradycardia"), ("HP:0001662", "Slow heart rate")], embedder=embedder)
    assert calls == []  # nothing embedded at construction
    links = linker.link("bradycardia")
    assert links[0].node_id == "HP:0001662" and links[0].method == "embedding"
    assert links[0].score == pytest.approx(0.8)
    linker.link("bradycardia")
    assert calls[0] == kg.graph.number_of_nodes()  # names embedded once


def test_link_to_dict(linker):
    [link] = linker.link("ASD")
    assert link.to_dict() == {
        "span": {"start": 0, "end": 3, "text": "ASD"}, "node_id": "HP:0001631", "name": "Atrial septal defect",
        "score": 0.95, "method": "exact", "matched": "ASD",
    }
