"""Prior radiology reports: IU-style XML files and plain-text reports, one report per file.

* ``.xml`` — the Indiana University chest X-ray collection format (Open-i
  ``<eCitation>``): the report id is ``<uId id>``, the sections are the
  ``<AbstractText Label="FINDINGS">`` elements; MeSH terms, image ids and the
  article date are kept as metadata.
* ``.txt`` — free text with section headings at the start of a line, such as
  ``FINDINGS:``, ``IMPRESSION:``, ``Indication:`` (known names in any case, or
  any ALL-CAPS heading); text before the first heading, or a file without
  headings, is the section ``text``. The report id is the file name without
  its suffix.

Both become a ``records`` Document holding one record, chunked by
:func:`medrag.ingest.records.chunk_records`: chunk ids are ``REPORT_ID#section``
and the metadata carries ``record_id`` and ``record_section``, so citations
point at report id + section.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from medrag.config import Settings
from medrag.errors import SourceFileError
from medrag.ingest.records import records_document
from medrag.registry import sources
from medrag.types import Document

# Heading names seen in radiology reports -> the section name used in citations.
SECTION_NAMES = {
    "indication": "indication",
    "indications": "indication",
    "clinical indication": "indication",
    "reason for exam": "indication",
    "reason for examination": "indication",
    "history": "indication",
    "clinical history": "indication",
    "comparison": "comparison",
    "comparisons": "comparison",
    "technique": "technique",
    "examination": "examination",
    "exam": "examination",
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "recommendation": "recommendation",
    "recommendations": "recommendation",
}
MAX_XML_BYTES = 5_000_000  # one report is a few kB; a bigger file is not a report
_HEADING_RE = re.compile(r"^\s*(?P<name>[A-Za-z][A-Za-z /&()-]{0,40}?)\s*:\s*(?P<rest>.*)$")
_WS_RE = re.compile(r"\s+")


def section_name(heading: str) -> str:
    """Canonical section name of a heading ("Clinical History" -> "indication", "WET READ" -> "wet_read")."""
    key = _WS_RE.sub(" ", heading).strip().lower()
    return SECTION_NAMES.get(key) or re.sub(r"[^a-z0-9]+", "_", key).strip("_")


def _is_heading(name: str) -> bool:
    words = name.split()
    return name.strip().lower() in SECTION_NAMES or (name.isupper() and 1 <= len(words) <= 4)


def split_sections(text: str) -> dict[str, str]:
    """Sections of a plain-text report, in order; repeated headings are joined."""
    sections: dict[str, list[str]] = {}
    current = "text"
    for line in text.splitlines():
        m = _HEADING_RE.match(line)
        if m and _is_heading(m.group("name")):
            current = section_name(m.group("name"))
            line = m.group("rest")
        if line.strip():
            sections.setdefault(current, []).append(line.strip())
    return {name: _WS_RE.sub(" ", " ".join(lines)).strip() for name, lines in sections.items()}


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise SourceFileError(path, "file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceFileError(path, f"cannot read file: {exc.strerror or exc}") from exc


def _report_document(path: Path, data: bytes, report_id: str, sections: dict[str, str], metadata: dict[str, Any]) -> Document:
    sections = {name: text for name, text in sections.items() if text}
    if not sections:
        raise SourceFileError(path, "report has no text in any section")
    record = {"id": report_id, "title": "", "sections": sections, "metadata": metadata}
    content_hash = hashlib.sha256(data).hexdigest()
    return records_document(path, [record], content_hash, title=f"Report {report_id}", report_format=path.suffix.lower().lstrip("."))


def _text_of(element: ET.Element | None) -> str:
    return _WS_RE.sub(" ", "".join(element.itertext())).strip() if element is not None else ""


def read_xml_report(path: str | Path) -> Document:
    """Read one IU-style XML report (``<eCitation>`` with ``<AbstractText Label=...>`` sections)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) > MAX_XML_BYTES:
        raise SourceFileError(path, f"XML file of {len(data):,} bytes is too large for one report")
    if b"<!ENTITY" in data:  # entity definitions are how XML bombs expand; reports have none
        raise SourceFileError(path, "XML declares entities; refusing to expand them")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SourceFileError(path, f"not well-formed XML: {exc}") from exc
    sections: dict[str, str] = {}
    for element in root.iter("AbstractText"):
        label = element.get("Label")
        if label:
            name = section_name(label)
            text = _text_of(element)
            sections[name] = f"{sections[name]} {text}".strip() if name in sections else text
    if not root.findall(".//AbstractText"):
        raise SourceFileError(path, "not an IU-style report: no <AbstractText Label=...> sections")
    uid = root.find("uId")
    report_id = (uid.get("id") if uid is not None else None) or path.stem
    metadata: dict[str, Any] = {"source_file": path.name}
    date = _text_of(root.find("articleDate"))
    if date:
        metadata["date"] = date
    mesh = [_text_of(e) for e in root.findall("MeSH/major")]
    if mesh:
        metadata["mesh"] = mesh
    images = [e.get("id") for e in root.findall("parentImage") if e.get("id")]
    if images:
        metadata["image_ids"] = images
    return _report_document(path, data, report_id, sections, metadata)


def read_text_report(path: str | Path) -> Document:
    """Read one plain-text report, its sections found by headings such as ``FINDINGS:``."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceFileError(path, f"cannot read as UTF-8 text: {exc}") from exc
    return _report_document(path, data, path.stem, split_sections(text), {"source_file": path.name})


@sources.register(".xml")
def _xml_reader(path: Path, settings: Settings, **_: Any) -> Document:
    return read_xml_report(path)


@sources.register(".txt")
def _text_reader(path: Path, settings: Settings, **_: Any) -> Document:
    return read_text_report(path)
