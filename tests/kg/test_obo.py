"""The OBO 1.2 reader: header, terms, synonyms, is_a, xrefs, obsolete terms, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrag.errors import SourceFileError
from medrag.kg.obo import Ontology, OboTerm, read_obo

OBO_TEXT = """\
format-version: 1.2
data-version: tp/releases/2024-06-01
ontology: tp
property_value: dc:creator "Someone" xsd:string
property_value: dc:title "Tiny Phenotype Ontology" xsd:string
remark: a header remark
! a comment line

[Term]
id: TP:0000001
name: All
comment: Root of all terms.

[Term]
id: TP:0000002
name: Abnormality of the heart
def: "Any abnormality of the \\"heart\\" or its parts." [ORCID:0000]
synonym: "Cardiac abnormality" EXACT []
synonym: "Heart defect" RELATED layperson [ORCID:0000]
xref: UMLS:C0000001 ! some UMLS label
is_a: TP:0000001 ! All

[Term]
id: TP:0000003
name: Bradycardia
def: "A slower than normal heart rate." [PMID:1]
synonym: "Slow heartbeat" EXACT layperson []
synonym: "Brachycardia" NARROW []
synonym: "Heart too slow" []
is_a: TP:0000002 ! Abnormality of the heart
is_a: TP:0000005 {source="x"} ! Abnormal rhythm
xref: SNOMEDCT_US:48867003
xref: UMLS:C0428977 "label in quotes"

[Term]
id: TP:0000004
name: Sinus bradycardia
is_a: TP:0000003 ! Bradycardia

[Term]
id: TP:0000005
name: Abnormal rhythm
def: "An irregular heartbeat."
is_a: TP:0000001

[Term]
id: TP:0000006
name: obsolete Slow pulse
def: "Old term." []
is_obsolete: true
is_a: TP:0000003

[Term]
id: TP:0000007
name: Child of obsolete
is_a: TP:0000006

[Typedef]
id: part_of
name: part of
is_transitive: true
"""


@pytest.fixture
def obo_path(tmp_path: Path) -> Path:
    path = tmp_path / "tp.obo"
    path.write_text(OBO_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def onto(obo_path: Path) -> Ontology:
    return read_obo(obo_path)


def test_header(onto):
    assert onto.version == "tp/releases/2024-06-01"
    assert onto.header["format-version"] == "1.2"
    assert onto.header["ontology"] == "tp"
    assert onto.header["title"] == "Tiny Phenotype Ontology"
    assert onto.header["remark"] == "a header remark"
    assert onto.source == "tp.obo"


def test_terms_are_read_in_order_and_typedefs_skipped(onto):
    assert list(onto.terms) == [f"TP:000000{i}" for i in range(1, 8)]
    assert "part_of" not in onto.terms


def test_term_fields(onto):
    heart = onto.terms["TP:0000002"]
    assert isinstance(heart, OboTerm)
    assert heart.name == "Abnormality of the heart"
    assert heart.definition == 'Any abnormality of the "heart" or its parts.'  # escaped quotes unescaped, refs dropped
    assert heart.synonyms == [("Cardiac abnormality", "EXACT"), ("Heart defect", "RELATED")]
    assert heart.xrefs == ["UMLS:C0000001"]  # trailing "! comment" removed
    assert heart.is_a == ["TP:0000001"]
    assert heart.obsolete is False
    assert onto.terms["TP:0000001"].comment == "Root of all terms."


def test_synonym_scopes_and_missing_scope(onto):
    brady = onto.terms["TP:0000003"]
    assert brady.synonyms == [
        ("Slow heartbeat", "EXACT"),
        ("Brachycardia", "NARROW"),
        ("Heart too slow", "RELATED"),  # OBO 1.2: no scope means RELATED
    ]


def test_is_a_with_comment_and_qualifiers(onto):
    assert onto.terms["TP:0000003"].is_a == ["TP:0000002", "TP:0000005"]


def test_xrefs_keep_only_the_id(onto):
    assert onto.terms["TP:0000003"].xrefs == ["SNOMEDCT_US:48867003", "UMLS:C0428977"]


def test_term_without_definition(onto):
    term = onto.terms["TP:0000004"]
    assert term.definition == ""
    assert term.synonyms == [] and term.xrefs == []


def test_obsolete_term_is_kept_but_not_live(onto):
    assert onto.terms["TP:0000006"].obsolete is True
    live = [t.id for t in onto.live_terms()]
    assert "TP:0000006" not in live
    assert len(live) == 6


def test_descendants(onto):
    assert onto.descendants("TP:0000003") == {"TP:0000003", "TP:0000004"}  # obsolete child excluded
    assert onto.descendants("TP:0000002") == {"TP:0000002", "TP:0000003", "TP:0000004"}
    # two parents: Bradycardia is under both the heart branch and the rhythm branch
    assert onto.descendants("TP:0000005") == {"TP:0000005", "TP:0000003", "TP:0000004"}
    assert onto.descendants("TP:0000001") == {f"TP:000000{i}" for i in (1, 2, 3, 4, 5)}
    assert onto.descendants("TP:0000004") == {"TP:0000004"}  # a leaf
    assert onto.descendants("TP:9999999") == {"TP:9999999"}  # unknown root: just itself


def test_descendants_survive_cycles(tmp_path):
    path = tmp_path / "cycle.obo"
    path.write_text("[Term]\nid: X:1\nis_a: X:2\n\n[Term]\nid: X:2\nis_a: X:1\n")
    assert read_obo(path).descendants("X:1") == {"X:1", "X:2"}


def test_header_only_from_before_the_first_stanza(tmp_path):
    path = tmp_path / "typedef_first.obo"
    path.write_text(
        "format-version: 1.2\n\n[Typedef]\nid: part_of\nname: part of\n"
        'property_value: dc:title "Not the title" xsd:string\n\n[Term]\nid: X:1\nname: one\n'
    )
    onto = read_obo(path)
    assert onto.header == {"format-version": "1.2"}
    assert list(onto.terms) == ["X:1"]


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "crlf.obo"
    path.write_bytes(OBO_TEXT.replace("\n", "\r\n").encode())
    onto = read_obo(path)
    assert onto.terms["TP:0000003"].name == "Bradycardia"
    assert onto.version == "tp/releases/2024-06-01"


def test_accepts_str_path(obo_path):
    assert len(read_obo(str(obo_path)).terms) == 7


def test_missing_file_raises_source_file_error(tmp_path):
    missing = tmp_path / "nope.obo"
    with pytest.raises(SourceFileError) as info:
        read_obo(missing)
    assert info.value.path == str(missing)
    assert "not found" in info.value.reason


@pytest.mark.parametrize(
    "content",
    [
        "just some notes: about things\nand: more\n",
        "format-version: 1.2\ndata-version: x\n",  # a header but no terms
        "[Typedef]\nid: part_of\n",
        "",
    ],
)
def test_non_obo_text_raises_source_file_error(tmp_path, content):
    path = tmp_path / "notes.obo"
    path.write_text(content)
    with pytest.raises(SourceFileError, match="no \\[Term\\] stanzas"):
        read_obo(path)


def test_binary_file_raises_source_file_error(tmp_path):
    path = tmp_path / "image.obo"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x80" * 10)
    with pytest.raises(SourceFileError, match="cannot read OBO file"):
        read_obo(path)


def test_directory_raises_source_file_error(tmp_path):
    with pytest.raises(SourceFileError):
        read_obo(tmp_path)
