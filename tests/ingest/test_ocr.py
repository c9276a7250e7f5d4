"""OCR of PDF pages without a text layer: engines, blocks with confidence, chunks that say so."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pymupdf
import pytest

from medrag.errors import ConfigError
from medrag.ingest.chunking import chunk_document
from medrag.ingest.ocr import available_engines, make_ocr
from medrag.ingest.pdf import read_pdf

PARAGRAPH = (
    "Osteoclasts break down old bone tissue in a process called resorption. "
    "Osteoblasts build new bone matrix and become osteocytes when trapped inside it."
)
ENGINES = [
    "rapidocr",
    pytest.param("tesseract", marks=pytest.mark.skipif(not shutil.which("tesseract"), reason="tesseract-ocr is not installed (.ci/run installs it)")),
]


def letters(text: str) -> str:
    """Lower-case letters only: RapidOCR may drop spaces, so compare without them."""
    return re.sub(r"[^a-z]", "", text.lower())


def scanned_pdf(path: Path) -> Path:
    """A one-page PDF whose only content is a picture of a paragraph (no text layer)."""
    source = pymupdf.open()
    page = source.new_page(width=420, height=300)
    page.insert_textbox(pymupdf.Rect(30, 40, 390, 200), PARAGRAPH, fontsize=13)
    pixmap = page.get_pixmap(dpi=200)
    scanned = pymupdf.open()
    scanned.new_page(width=420, height=300).insert_image(pymupdf.Rect(0, 0, 420, 300), pixmap=pixmap)
    scanned.save(path)
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_scanned_page_is_read_by_ocr(tmp_path: Path, engine: str) -> None:
    pdf = scanned_pdf(tmp_path / "scan.pdf")
    assert read_pdf(pdf).pages[0].blocks == []  # no text layer without OCR
    doc = read_pdf(pdf, ocr=engine, ocr_dpi=200)
    assert doc.metadata["ocr"]["engine"] == engine and doc.metadata["ocr"]["pages"] == 1
    assert doc.metadata["pages_without_text"] == 1
    blocks = doc.pages[0].blocks
    assert blocks and all(0.0 < b.confidence <= 1.0 for b in blocks)
    text = " ".join(b.text for b in blocks)
    assert letters("Osteoclasts break down old bone tissue") in letters(text)
    assert letters("become osteocytes when trapped") in letters(text)
    # Boxes are in PDF points on the page where the paragraph was drawn.
    x0, y0, x1, y1 = blocks[0].bbox
    assert 20 <= x0 < x1 <= 400 and 30 <= y0 < y1 <= 220
    chunks = chunk_document(doc)
    assert chunks and all(0.0 < c.metadata["ocr_confidence"] <= 1.0 for c in chunks)


def test_engine_choice() -> None:
    assert make_ocr("off") is None
    with pytest.raises(ConfigError, match="unknown OCR engine"):
        make_ocr("abbyy")
    engine = make_ocr("auto")
    assert engine is not None and engine.name == available_engines()[0]
    assert "rapidocr" in available_engines()  # installed with medrag[dev]


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not shutil.which("tesseract"), reason="tesseract-ocr is not installed (.ci/run installs it)")
def test_scanned_textbook_pages_match_the_text_layer(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "textbook"
    name = "openstax_ap2e_ch06_bone_tissue_and_the_skeletal_system"
    pages = (2, 9)  # 1-based; p. 9 holds the diploë passage
    scanned, text = pymupdf.open(folder / f"{name}_SCANNED.pdf"), pymupdf.open(folder / f"{name}.pdf")
    for source, target in ((scanned, tmp_path / "scan.pdf"), (text, tmp_path / "text.pdf")):
        out = pymupdf.open()
        for number in pages:
            out.insert_pdf(source, from_page=number - 1, to_page=number - 1)
        out.save(target)
    ocr_doc = read_pdf(tmp_path / "scan.pdf", ocr="tesseract")
    text_doc = read_pdf(tmp_path / "text.pdf")
    for ocr_page, text_page in zip(ocr_doc.pages, text_doc.pages):
        truth = set(re.findall(r"[a-z]{4,}", text_page.text.lower()))
        read = set(re.findall(r"[a-z]{4,}", ocr_page.text.lower()))
        recall = len(truth & read) / len(truth)
        assert recall >= 0.9, (ocr_page.number, recall)
    assert "diplo" in ocr_doc.pages[1].text.lower()
