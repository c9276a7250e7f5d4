"""KnowledgeGraph queries: lookup, neighbours, hierarchy, paths, disease ranking, cited evidence."""

from __future__ import annotations

import pytest

from kg_samples import build_tiny
from medrag.errors import InputError, MedragError
from medrag.kg.graph import UnknownNode, frequency_weight
from medrag.types import Evidence


@pytest.fixture(scope="module")
def kg(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("src"))


def assert_graph_evidence(ev: Evidence) -> None:
    assert ev.kind == "graph"
    assert ev.citation.chunk_id and ev.citation.source
    assert set(ev.citation.locator) >= {"node_id", "version", "relation"}


def test_node_lookup_and_resolution(kg):
    assert kg.node("HP:0001166")["name"] == "Arachnodactyly"
    assert kg.resolve("hp:0001166") == "HP:0001166"  # case of the prefix forgiven
    assert kg.resolve("HP:0000665") == "HP:0001083"  # alt id
    assert "HP:0001166" in kg and "HP:404" not in kg


@pytest.mark.parametrize("bad", ["HP:404", "", "Arachnodactyly"])
def test_unknown_ids_raise_a_medrag_error(kg, bad):
    with pytest.raises(UnknownNode, match="medrag kg link") as info:
        kg.node(bad)
    assert isinstance(info.value, MedragError)


def test_define_is_cited(kg):
    ev = kg.define("HP:0001166")
    assert_graph_evidence(ev)
    assert ev.text.startswith("Arachnodactyly (HP:0001166): Abnormally long")
    assert "Spider fingers" in ev.text and "Long fingers (HP:0100807)" in ev.text
    c = ev.citation
    assert (c.source, c.chunk_id, c.title) == ("hp.obo", "HP:0001166", "Human Phenotype Ontology")
    assert c.locator == {"node_id": "HP:0001166", "version": "hp/releases/2025-01-16", "relation": None}


def test_neighbours_by_relation_and_direction(kg):
    out = kg.neighbours("OMIM:154700", "has_phenotype")
    assert {e.citation.locator["target"] for e in out} == {"HP:0001519", "HP:0001166", "HP:0001083"}
    for ev in out:
        assert_graph_evidence(ev)
        assert ev.citation.source == "phenotype.hpoa" and ev.citation.locator["relation"] == "has_phenotype"
    arach = next(e for e in out if e.citation.locator["target"] == "HP:0001166")
    assert arach.citation.chunk_id == "OMIM:154700|has_phenotype|HP:0001166"
    assert "[frequency 124/197; evidence PCS]" in arach.text
    incoming = kg.neighbours("HP:0001166", "has_phenotype", direction="in")
    assert {e.citation.locator["node_id"] for e in incoming} == {"OMIM:154700", "OMIM:236200"}
    both = kg.neighbours("HP:0001166", direction="both")
    assert {e.citation.locator["relation"] for e in both} >= {"is_a", "has_phenotype", "lacks_phenotype", "seen_in"}
    with pytest.raises(InputError):
        kg.neighbours("HP:0001166", direction="sideways")


def test_ancestors_and_descendants(kg):
    assert kg.ancestors("HP:0001166") == {"HP:0100807", "HP:0000118", "HP:0000001"}
    assert kg.descendants("HP:0000098") == {"HP:0001519"}
    assert kg.descendants("HP:0000098", include_self=True) == {"HP:0000098", "HP:0001519"}
    assert kg.parents("HP:0001166") == ["HP:0100807"]


def test_path_is_explained_and_cited(kg):
    found = kg.path("DOID:14323", "HP:0001083")
    assert found.text == "Marfan syndrome (DOID:14323) —same_as→ Marfan syndrome (OMIM:154700) —has_phenotype→ Ectopia lentis (HP:0001083)"
    assert found.nodes == ["DOID:14323", "OMIM:154700", "HP:0001083"]
    assert [e.citation.source for e in found.evidence] == ["HumanDO.obo", "phenotype.hpoa"]


def test_path_against_edge_direction(kg):
    found = kg.path("HP:0100807", "HP:0001166")
    assert found.text == "Long fingers (HP:0100807) ←is_a— Arachnodactyly (HP:0001166)"
    assert found.relations == [("is_a", "<-")]


def test_no_path_within_the_limit(kg):
    with pytest.raises(InputError, match="no path"):
        kg.path("DRUG:1", "HP:0001631", max_hops=1)


def test_diseases_ranked_with_hierarchy_and_citations(kg):
    # Marfan is annotated with Disproportionate tall stature: a descendant of the query's Tall stature.
    matches = kg.rank_diseases(["HP:0000098", "HP:0001166", "HP:0001083"], k=3)
    assert [m.disease_id for m in matches][:2] == ["OMIM:154700", "OMIM:236200"]
    top = matches[0]
    assert top.name == "Marfan syndrome"
    tall = next(m for m in top.matched if m["query"] == "HP:0000098")
    assert tall["annotated"] == "HP:0001519" and tall["exact"] is True
    assert 0 < top.score <= 1 and top.score > matches[1].score
    for ev in top.evidence:
        assert_graph_evidence(ev)
    summary = top.evidence[0]
    assert summary.citation.chunk_id == "OMIM:154700"
    assert summary.citation.locator["phenotypes"] == ["HP:0001519", "HP:0001166", "HP:0001083"]
    assert "as Disproportionate tall stature (HP:0001519)" in summary.text
    assert {e.citation.chunk_id for e in top.evidence[1:]} == {
        "OMIM:154700|has_phenotype|HP:0001519", "OMIM:154700|has_phenotype|HP:0001166", "OMIM:154700|has_phenotype|HP:0001083",
    }


def test_partial_credit_through_a_common_ancestor(kg):
    # Long fingers is not annotated anywhere; diseases with Arachnodactyly (its child) match it fully.
    matches = kg.rank_diseases(["HP:0100807"], k=5)
    assert {m.disease_id for m in matches if m.score > 0.5} == {"OMIM:154700", "OMIM:236200"}


def test_lacks_phenotype_does_not_count(kg):
    ids = [m.disease_id for m in kg.rank_diseases(["HP:0001166"], k=10)]
    assert "ORPHA:1" not in ids


def test_rank_needs_phenotypes(kg):
    with pytest.raises(InputError):
        kg.rank_diseases([])
    with pytest.raises(UnknownNode):
        kg.rank_diseases(["HP:404"])


def test_information_content(kg):
    assert kg.information_content("HP:0000001") == 0.0
    assert kg.information_content("HP:0001631") > kg.information_content("HP:0001166") > 0


def test_frequency_weight():
    assert frequency_weight("0/27") < frequency_weight("119/251") < frequency_weight("") < frequency_weight("250/251")
    assert frequency_weight("1/1") < frequency_weight("100/100")  # small cohorts are weak evidence
    assert frequency_weight("HP:0040280") > frequency_weight("HP:0040284")


def test_subgraph_text(kg):
    text = kg.subgraph_text(["OMIM:154700"], max_edges=10)
    lines = text.splitlines()
    assert "Marfan syndrome (OMIM:154700) —has_phenotype→ Arachnodactyly (HP:0001166) [frequency 124/197; evidence PCS]" in lines
    assert "Losartan (DRUG:1) —treats→ Marfan syndrome (OMIM:154700)" in lines
    assert len(kg.subgraph_text(["OMIM:154700"], max_edges=2).splitlines()) == 2
    only_is_a = kg.subgraph_text(["HP:0001166"], depth=2, relations={"is_a"})
    assert only_is_a.splitlines() == [
        "Arachnodactyly (HP:0001166) —is_a→ Long fingers (HP:0100807)",
        "Long fingers (HP:0100807) —is_a→ Phenotypic abnormality (HP:0000118)",
    ]
    evidence = kg.subgraph_evidence(["HP:0001166"], relations={"is_a"})
    assert [e.citation.chunk_id for e in evidence] == ["HP:0001166|is_a|HP:0100807"]
