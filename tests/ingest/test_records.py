"""JSONL/CSV records: field mapping, one chunk set per section, citations by record id + section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tree_digest
from medrag.config import load_settings
from medrag.errors import SourceFileError
from medrag.index.hybrid import HybridRetriever, record_hits
from medrag.index.text_index import IndexStore
from medrag.ingest.pipeline import ingest
from medrag.ingest.records import RecordMapping, chunk_records, read_records
from medrag.testing import HashingEmbedder

REPORTS = [
    {"report_id": "R1", "indication": "Cough and fever.", "findings": "Right lower lobe consolidation. No pleural effusion.", "impression": "Right lower lobe pneumonia."},
    {"report_id": "R2", "indication": "Chest pain.", "findings": "The heart is enlarged. Pulmonary vascular congestion.", "impression": "Cardiomegaly with mild edema."},
    {"report_id": "R3", "indication": "Trauma.", "findings": "Displaced fracture of the left seventh rib. Small left pneumothorax.", "impression": "Rib fracture and pneumothorax."},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reports_detect_id_and_sections(tmp_path: Path) -> None:
    doc = read_records(write_jsonl(tmp_path / "reports.jsonl", REPORTS))
    assert doc.kind == "records"
    assert doc.metadata["mapping"] == "id=report_id text=indication,findings,impression title=None"
    chunks = chunk_records(doc)
    assert [c.chunk_id for c in chunks[:3]] == ["R1#indication", "R1#findings", "R1#impression"]
    findings = chunks[1]
    assert findings.text == "Findings: Right lower lobe consolidation. No pleural effusion."
    assert findings.metadata["record_id"] == "R1" and findings.metadata["record_section"] == "findings"
    assert findings.page is None


def test_csv_with_explicit_mapping_and_long_text_split(tmp_path: Path) -> None:
    long_text = " ".join(f"Sentence number {i} describes the abstract in detail." for i in range(40))
    path = tmp_path / "abstracts.csv"
    path.write_text("pmid,heading,body\n111,Asthma trial,Inhaled steroids reduced exacerbations.\n222,Long one," + f'"{long_text}"\n')
    doc = read_records(path, RecordMapping(id_field="pmid", text_fields=("body",), title_field="heading"))
    chunks = chunk_records(doc, max_words=60, overlap_sentences=0)
    assert chunks[0].chunk_id == "111" and chunks[0].title == "Asthma trial"
    long_chunks = [c for c in chunks if c.metadata["record_id"] == "222"]
    assert len(long_chunks) > 3
    assert [c.chunk_id for c in long_chunks[:2]] == ["222:0", "222:1"]
    assert all(len(c.text.split()) <= 60 for c in long_chunks)


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"report_id": "R1", "findings": "ok"}\nnot json\n', ":2"),
        ('{"report_id": "R1", "findings": "a"}\n{"report_id": "R1", "findings": "b"}\n', "duplicate id 'R1'"),
        ('{"findings": "no id here"}\n', "no id field"),
        ('{"report_id": "R1", "colour": "blue"}\n', "no text field"),
        ('[1, 2]\n', "JSON object"),
        ("\n\n", "no records"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(SourceFileError, match="bad.jsonl") as info:
        read_records(path)
    assert needle in str(info.value)


def test_missing_mapped_field_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "reports.jsonl", REPORTS)
    with pytest.raises(SourceFileError, match="field 'text' not in record"):
        read_records(path, RecordMapping(text_fields=("text",)))


def test_ingest_and_search_returns_record_ids(tmp_path: Path) -> None:
    settings = load_settings(home=str(tmp_path / "home"), progress=False)
    embedder = HashingEmbedder(256)
    path = write_jsonl(tmp_path / "reports.jsonl", REPORTS)
    report = ingest([path], index_name="reports", embedder=embedder, settings=settings)
    assert report.chunks_added == 9
    index = IndexStore(settings.indexes_dir).open("reports", embedder.info())
    retriever = HybridRetriever(index, embedder, settings.retrieval)
    for mode in ("hybrid", "dense", "bm25"):
        evidence = retriever.search("rib fracture pneumothorax", k=6, mode=mode)
        hits = record_hits(evidence, 2)
        assert hits[0]["id"] == "R3", (mode, hits)
        assert len({h["id"] for h in hits}) == len(hits)
    top = retriever.search("rib fracture pneumothorax", k=1)[0]
    assert top.citation.locator["record_id"] == "R3"
    assert top.citation.locator["record_section"] in {"findings", "impression"}
    # Same file again: unchanged; same file with another mapping: re-read and replaced.
    assert ingest([path], index_name="reports", embedder=embedder, settings=settings).unchanged == ["reports.jsonl"]
    again = ingest([path], index_name="reports", embedder=embedder, settings=settings,
                   mapping=RecordMapping(text_fields=("impression",)))
    assert again.replaced == ["reports.jsonl"] and again.total_chunks == 3


def test_bad_record_file_leaves_index_untouched(tmp_path: Path) -> None:
    settings = load_settings(home=str(tmp_path / "home"), progress=False)
    embedder = HashingEmbedder(256)
    ingest([write_jsonl(tmp_path / "reports.jsonl", REPORTS)], index_name="reports", embedder=embedder, settings=settings)
    folder = settings.indexes_dir / "reports"
    before = tree_digest(folder)
    bad = tmp_path / "more.jsonl"
    bad.write_text('{"report_id": "R9", "findings": "ok"}\n{broken\n')
    with pytest.raises(SourceFileError, match="more.jsonl:2"):
        ingest([bad], index_name="reports", embedder=embedder, settings=settings)
    assert tree_digest(folder) == before


def test_unknown_search_mode(tmp_path: Path) -> None:
    from medrag.errors import InputError

    settings = load_settings(home=str(tmp_path / "home"), progress=False)
    embedder = HashingEmbedder(64)
    ingest([write_jsonl(tmp_path / "r.jsonl", REPORTS)], index_name="r", embedder=embedder, settings=settings)
    retriever = HybridRetriever(IndexStore(settings.indexes_dir).open("r"), embedder)
    with pytest.raises(InputError, match="unknown search mode"):
        retriever.search("heart", mode="fuzzy")


@pytest.mark.data
def test_iu_reports_ingest_with_detected_mapping(shared_data: Path) -> None:
    doc = read_records(shared_data / "reports" / "reports.jsonl")
    assert len(doc.metadata["records"]) == 3164
    assert doc.metadata["mapping"].startswith("id=report_id text=indication,comparison,findings,impression")
    first = doc.metadata["records"][0]
    assert first["id"] == "CXR1" and "pulmonary edema" in first["sections"]["findings"]
