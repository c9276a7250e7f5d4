"""Record files: JSONL and CSV of reports, abstracts, cases — one record per line or row.

A field mapping says which field holds the record's id, its title and its
text sections. Unless told otherwise the mapping is detected: the id from
``id``/``doc_id``/``report_id``/..., the text from ``text`` or, for radiology
reports, the sections ``indication``, ``comparison``, ``findings``,
``impression``. Each section becomes its own chunk(s), so a citation points at
*report id + section*; the record's own id is kept in the chunk metadata and is
what record-level search returns.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrag.config import Settings
from medrag.errors import SourceFileError
from medrag.registry import sources
from medrag.storage import iter_json_lines
from medrag.types import Chunk, Document

ID_FIELDS = ("id", "doc_id", "report_id", "record_id", "uid", "pmid", "case_id")
TEXT_FIELDS = ("text", "content", "body", "abstract")
REPORT_SECTIONS = ("indication", "comparison", "findings", "impression")
TITLE_FIELDS = ("title", "name", "case_title")
# Scalar fields copied into chunk metadata for filtering (when present).
META_FIELDS = ("source", "year", "modality", "date", "topic", "section_labels")


@dataclass
class RecordMapping:
    """Which fields of a record are its id, title and text sections (None = detect)."""

    id_field: str | None = None
    text_fields: Sequence[str] = field(default_factory=tuple)
    title_field: str | None = None

    def resolve(self, record: dict[str, Any], where: str) -> "RecordMapping":
        id_field = self.id_field or next((f for f in ID_FIELDS if record.get(f) not in (None, "")), None)
        if id_field is None:
            raise SourceFileError(where, f"no id field found (tried {', '.join(ID_FIELDS)}); pass --id-field")
        text_fields = list(self.text_fields) or [f for f in TEXT_FIELDS if f in record][:1] or [
            f for f in REPORT_SECTIONS if f in record
        ]
        if not text_fields:
            raise SourceFileError(where, f"no text field found (tried {', '.join(TEXT_FIELDS + REPORT_SECTIONS)}); pass --text-field")
        title_field = self.title_field or next((f for f in TITLE_FIELDS if f in record), None)
        return RecordMapping(id_field, tuple(text_fields), title_field)

    def describe(self) -> str:
        return f"id={self.id_field} text={','.join(self.text_fields)} title={self.title_field}"


def _read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SourceFileError(path, "file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceFileError(path, f"cannot read as UTF-8 text: {exc}") from exc
    rows: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise SourceFileError(path, "CSV has no header row")
        for line_no, row in enumerate(reader, start=2):
            if None in row:
                raise SourceFileError(f"{path}:{line_no}", "row has more cells than the header")
            rows.append((line_no, dict(row)))
    else:
        for line_no, row in iter_json_lines(text.splitlines(), path):
            if not isinstance(row, dict):
                raise SourceFileError(f"{path}:{line_no}", "each line must be a JSON object")
            rows.append((line_no, row))
    if not rows:
        raise SourceFileError(path, "no records")
    return rows


def read_records(path: str | Path, mapping: RecordMapping | None = None) -> Document:
    """Read a JSONL or CSV file of records into a Document (``metadata['records']``)."""
    path = Path(path)
    rows = _read_rows(path)
    resolved = (mapping or RecordMapping()).resolve(rows[0][1], f"{path}:{rows[0][0]}")
    for name in (resolved.id_field, *resolved.text_fields):
        if name not in rows[0][1]:
            raise SourceFileError(f"{path}:{rows[0][0]}", f"field '{name}' not in record (fields: {', '.join(rows[0][1])})")
    records, seen = [], set()
    for line_no, row in rows:
        record_id = row.get(resolved.id_field)
        if record_id in (None, ""):
            raise SourceFileError(f"{path}:{line_no}", f"record has no '{resolved.id_field}'")
        record_id = str(record_id)
        if record_id in seen:
            raise SourceFileError(f"{path}:{line_no}", f"duplicate id '{record_id}'")
        seen.add(record_id)
        sections = {f: str(row[f]).strip() for f in resolved.text_fields if row.get(f) not in (None, "")}
        title = row.get(resolved.title_field) if resolved.title_field else None
        meta = {k: row[k] for k in META_FIELDS if isinstance(row.get(k), (str, int, float))}
        records.append({"id": record_id, "title": str(title) if title else "", "sections": sections, "metadata": meta})
    raw = path.read_bytes()
    content_hash = hashlib.sha256(raw + resolved.describe().encode()).hexdigest()
    return records_document(path, records, content_hash, title=path.stem, mapping=resolved.describe())


def records_document(path: Path, records: list[dict[str, Any]], content_hash: str, *, title: str, **metadata: Any) -> Document:
    """A Document of kind ``records`` that :func:`chunk_records` splits into chunks.

    Each record is ``{"id", "title", "sections": {name: text}, "metadata": {...}}``;
    other readers (reports.py) build the same shape to reuse the chunking and citations.
    """
    return Document(
        doc_id=content_hash[:16],
        source=path.name,
        title=title,
        kind="records",
        content_hash=content_hash,
        metadata={"path": str(path.resolve()), "records": records, **metadata},
    )


def chunk_records(doc: Document, max_words: int = 120, overlap_sentences: int = 1) -> list[Chunk]:
    """One chunk per record section (long sections split), id ``RECORD#section[:i]``."""
    from medrag.ingest.chunking import pack_text

    chunks = []
    for record in doc.metadata["records"]:
        single = len(record["sections"]) == 1
        for section, text in record["sections"].items():
            pieces = pack_text(text, max_words, overlap_sentences) or [text]
            for i, piece in enumerate(pieces):
                base = record["id"] if single else f"{record['id']}#{section}"
                chunk_id = base if len(pieces) == 1 else f"{base}:{i}"
                title = record["title"]
                chunks.append(
                    Chunk(
                        chunk_id=chunk_id,
                        doc_id=doc.doc_id,
                        text=f"{section.capitalize()}: {piece}" if not single else piece,
                        source=doc.source,
                        title=title or doc.title,
                        page=None,
                        metadata={
                            **record["metadata"],
                            "kind": "record",
                            "record_id": record["id"],
                            "record_section": section,
                            **({"section": title} if title else {}),
                        },
                    )
                )
    return chunks


def _reader(path: Path, settings: Settings, mapping: RecordMapping | None = None, **_: Any) -> Document:
    return read_records(path, mapping)


sources.register(".jsonl", _reader)
sources.register(".csv", _reader)
