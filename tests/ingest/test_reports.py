"""Prior reports: IU-style XML and plain-text files, one report each, cited by report id + section."""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from medrag.config import load_settings
from medrag.errors import SourceFileError
from medrag.index.hybrid import HybridRetriever
from medrag.index.text_index import IndexStore
from medrag.ingest.pipeline import chunk_for, ingest, read_source
from medrag.ingest.reports import read_text_report, read_xml_report, section_name, split_sections
from medrag.testing.fakes import HashingEmbedder


def iu_xml(report_id: str, sections: dict[str, str | None], *, mesh=("normal",), images=("IM-1",), number: int = 1) -> str:
    """A report in the layout of the Indiana University collection's ecgen-radiology/<n>.xml files."""
    abstract = "\n".join(
        f'        <AbstractText Label="{label.upper()}">{escape(text)}</AbstractText>' if text else
        f'        <AbstractText Label="{label.upper()}"/>'
        for label, text in sections.items()
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
  <meta type="rr"/>
  <uId id="{report_id}"/>
  <pmcId id="{number}"/>
  <docSource>CXR</docSource>
  <IUXRId id="{number}"/>
  <licenseType>open-access</licenseType>
  <articleDate>2013-08-01</articleDate>
  <publisher>Indiana University</publisher>
  <title>Indiana University Chest X-ray Collection</title>
  <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
    <Article PubModel="Electronic">
      <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
      <Abstract>
{abstract}
      </Abstract>
    </Article>
  </MedlineCitation>
  <MeSH>
{"".join(f"    <major>{escape(m)}</major>" for m in mesh)}
  </MeSH>
{"".join(f'  <parentImage id="{i}"><figureId>F1</figureId><caption>Xray Chest PA and Lateral</caption></parentImage>' for i in images)}
</eCitation>
"""


PNEUMOTHORAX = {
    "comparison": "None.",
    "indication": "Chest pain after a fall.",
    "findings": "There is a small right apical pneumothorax. Displaced fracture of the right sixth rib.",
    "impression": "Small right pneumothorax and right rib fracture.",
}
NORMAL = {
    "comparison": None,
    "indication": "Positive TB test",
    "findings": "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema.",
    "impression": "Normal chest x-XXXX.",
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_xml_report_keeps_its_id_sections_and_metadata(tmp_path: Path) -> None:
    path = write(tmp_path / "1.xml", iu_xml("CXR1", NORMAL, mesh=("normal",), images=("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001")))
    doc = read_xml_report(path)
    assert doc.kind == "records" and doc.source == "1.xml" and doc.title == "Report CXR1"
    (record,) = doc.metadata["records"]
    assert record["id"] == "CXR1"
    assert record["sections"] == {k: v for k, v in NORMAL.items() if v}  # the empty COMPARISON is left out
    assert record["metadata"]["date"] == "2013-08-01"
    assert record["metadata"]["mesh"] == ["normal"]
    assert record["metadata"]["image_ids"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]


def test_report_chunks_are_cited_by_report_id_and_section(tmp_path: Path) -> None:
    settings = load_settings(home=str(tmp_path / "home"), progress=False)
    doc = read_source(write(tmp_path / "r.xml", iu_xml("CXR7", PNEUMOTHORAX)), settings)
    chunks = chunk_for(doc, settings)
    assert [c.chunk_id for c in chunks] == ["CXR7#comparison", "CXR7#indication", "CXR7#findings", "CXR7#impression"]
    findings = chunks[2]
    assert findings.text == "Findings: " + PNEUMOTHORAX["findings"]
    assert findings.metadata["record_id"] == "CXR7" and findings.metadata["record_section"] == "findings"
    assert findings.page is None


def test_plain_text_sections_by_headings() -> None:
    text = """EXAMINATION: CHEST PA AND LATERAL
Clinical history: cough for two weeks.

FINDINGS:
The lungs are clear.
No pleural effusion.
Impression: No acute cardiopulmonary process.
WET READ: discussed with the team.
Note: follow up in six weeks.
"""
    sections = split_sections(text)
    assert list(sections) == ["examination", "indication", "findings", "impression", "wet_read"]
    assert sections["findings"] == "The lungs are clear. No pleural effusion."
    assert sections["indication"] == "cough for two weeks."
    assert sections["wet_read"] == "discussed with the team. Note: follow up in six weeks."  # "Note" is no heading
    assert section_name("Clinical History") == "indication" and section_name("CONCLUSIONS") == "impression"


def test_plain_text_report_id_is_the_file_name(tmp_path: Path) -> None:
    doc = read_text_report(write(tmp_path / "case-042.txt", "INDICATION: fever\nIMPRESSION: right lower lobe pneumonia\n"))
    (record,) = doc.metadata["records"]
    assert record["id"] == "case-042"
    assert record["sections"] == {"indication": "fever", "impression": "right lower lobe pneumonia"}
    # Without headings the whole file is one section.
    doc = read_text_report(write(tmp_path / "note.txt", "Heart size normal.\nLungs clear.\n"))
    assert doc.metadata["records"][0]["sections"] == {"text": "Heart size normal. Lungs clear."}


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("broken.xml", "<eCitation><uId id='X'/>", "not well-formed XML"),
        ("other.xml", "<catalog><book id='1'/></catalog>", "not an IU-style report"),
        ("empty.xml", iu_xml("CXR9", {"findings": None, "impression": None}), "no text in any section"),
        ("empty.txt", "\n\n", "no text in any section"),
        ("bomb.xml", '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><eCitation>&b;</eCitation>', "entities"),
    ],
)
def test_bad_reports_are_clear_errors(tmp_path: Path, name: str, content: str, needle: str) -> None:
    path = write(tmp_path / name, content)
    reader = read_xml_report if name.endswith(".xml") else read_text_report
    with pytest.raises(SourceFileError, match=needle):
        reader(path)


def test_latin1_text_report_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes("IMPRESSION: épanchement".encode("latin-1"))
    with pytest.raises(SourceFileError, match="UTF-8"):
        read_text_report(path)


def test_folder_of_xml_and_text_reports_ingests_and_searches_by_report(tmp_path: Path, clean_env) -> None:
    folder = tmp_path / "reports"
    write(folder / "1.xml", iu_xml("CXR1", NORMAL, number=1))
    write(folder / "2.xml", iu_xml("CXR2", PNEUMOTHORAX, number=2))
    write(folder / "extra" / "case-3.txt", "INDICATION: dyspnea\nFINDINGS: Large left pleural effusion.\nIMPRESSION: Left effusion.\n")
    settings = load_settings(home=str(tmp_path / "home"), progress=False)
    embedder = HashingEmbedder(256)
    report = ingest([folder], index_name="reports", embedder=embedder, settings=settings)
    assert sorted(report.added) == ["1.xml", "2.xml", "case-3.txt"]
    assert report.total_chunks == 3 + 4 + 3
    index = IndexStore(settings.indexes_dir).open("reports", embedder.info())
    top = HybridRetriever(index, embedder, settings.retrieval).search("rib fracture pneumothorax", k=3)[0]
    assert top.citation.locator["record_id"] == "CXR2"
    assert top.citation.locator["record_section"] in {"findings", "impression"}
    # Incremental: nothing changed, nothing re-read.
    again = ingest([folder], index_name="reports", embedder=embedder, settings=settings)
    assert sorted(again.unchanged) == ["1.xml", "2.xml", "case-3.txt"] and again.chunks_added == 0


def test_cli_ingests_a_folder_of_xml_reports(tmp_path: Path, cli) -> None:
    folder = tmp_path / "xml"
    write(folder / "1.xml", iu_xml("CXR1", NORMAL))
    write(folder / "2.xml", iu_xml("CXR2", PNEUMOTHORAX, number=2))
    code, out, err = cli("ingest", folder, "--index", "reports", "--embedder", "hashing:64", "--no-progress")
    assert code == 0, err
    assert "2 added" in out


@pytest.mark.data
def test_real_iu_reports_as_xml_round_trip(shared_data: Path, tmp_path: Path) -> None:
    """The first 50 real reports written back in the IU XML layout read to the same ids and sections."""
    rows = [json.loads(line) for line in (shared_data / "reports" / "reports.jsonl").read_text().splitlines()[:50]]
    for row in rows:
        sections = {k: row[k] for k in ("comparison", "indication", "findings", "impression")}
        write(tmp_path / row["source_file"], iu_xml(row["report_id"], sections, mesh=row["mesh_major"], images=row["image_ids"], number=row["iu_xr_id"]))
    for row in rows:
        (record,) = read_xml_report(tmp_path / row["source_file"]).metadata["records"]
        assert record["id"] == row["report_id"]
        assert record["sections"] == {k: row[k] for k in ("comparison", "indication", "findings", "impression") if row[k]}
        assert record["metadata"].get("image_ids", []) == row["image_ids"]


def test_duplicate_report_ids_are_refused_or_skipped(tmp_path: Path, clean_env) -> None:
    settings = load_settings(home=str(tmp_path / "home"), progress=False)
    embedder = HashingEmbedder(64)
    first = write(tmp_path / "a" / "1.xml", iu_xml("CXR1", NORMAL))
    ingest([first], index_name="reports", embedder=embedder, settings=settings)
    # The same report id in another file, in a later run and within one batch.
    copy = write(tmp_path / "b" / "copy-of-1.xml", iu_xml("CXR1", PNEUMOTHORAX))
    with pytest.raises(SourceFileError, match="duplicate id 'CXR1#.*' .*from 1.xml"):
        ingest([copy], index_name="reports", embedder=embedder, settings=settings)
    twin = write(tmp_path / "b" / "twin.xml", iu_xml("CXR5", PNEUMOTHORAX))
    write(tmp_path / "b" / "twin2.xml", iu_xml("CXR5", NORMAL))
    report = ingest([tmp_path / "b"], index_name="reports", embedder=embedder, settings=settings, skip_bad=True)
    assert report.added == [twin.name]
    assert sorted(Path(p).name for p, _ in report.failed) == ["copy-of-1.xml", "twin2.xml"]
    index = IndexStore(settings.indexes_dir).open("reports", embedder.info())
    assert index.chunks["CXR1#findings"].text.endswith(NORMAL["findings"])  # the first version is intact
