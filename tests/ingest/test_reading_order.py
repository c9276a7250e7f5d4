"""Reading order: two-column pages are read column by column, tables row by row, real pages as printed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pymupdf
import pytest

from medrag.ingest.chunking import chunk_document
from medrag.ingest.pdf import read_pdf, reading_order

LEFT = [
    "Alpha one: the left column opens the article.",
    "Alpha two: compact bone lies under the periosteum.",
    "Alpha three: spongy bone holds red marrow.",
]
RIGHT = [
    "Bravo one: the right column continues the story.",
    "Bravo two: osteoclasts resorb old matrix.",
    "Bravo three: osteoblasts lay down new bone.",
]
TITLE = "Two Column Article About Bone"
CLOSING = "Closing note: this paragraph spans both columns below them and is read last."


def two_column_pdf(path: Path) -> Path:
    """A title across the page, two columns of three paragraphs each (tops side by side), a closing paragraph."""
    doc = pymupdf.open()
    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 70), TITLE, fontsize=18, fontname="hebo")
    for x0, x1, sentences in ((72, 296, LEFT), (316, 540, RIGHT)):
        y = 100.0
        for sentence in sentences:
            # Each paragraph is the sentence repeated, so columns are several lines tall.
            left = page.insert_textbox(pymupdf.Rect(x0, y, x1, y + 80), " ".join([sentence] * 3), fontsize=10)
            assert left >= 0
            y += 80 - left + 10
    page.insert_textbox(pymupdf.Rect(72, 420, 540, 470), CLOSING, fontsize=10)
    doc.save(path)
    doc.close()
    return path


def order_of(text: str, needles: list[str]) -> list[int]:
    flat = " ".join(text.split())
    positions = [flat.find(n) for n in needles]
    assert all(p >= 0 for p in positions), (needles, flat)
    return positions


EXPECTED = [TITLE, *LEFT, *RIGHT, CLOSING]


def test_pymupdf_position_sort_alone_interleaves_the_columns(tmp_path: Path) -> None:
    """Why reading_order exists: sorting blocks by position mixes the two columns."""
    page = pymupdf.open(two_column_pdf(tmp_path / "two.pdf"))[0]
    text = " ".join(b[4] for b in page.get_text("blocks", sort=True))
    positions = order_of(text, EXPECTED)
    assert positions != sorted(positions)


def test_two_columns_are_read_column_by_column(tmp_path: Path) -> None:
    doc = read_pdf(two_column_pdf(tmp_path / "two.pdf"))
    text = doc.pages[0].text
    positions = order_of(text, EXPECTED)
    assert positions == sorted(positions)
    # Chunks follow the same order, so a chunk never glues the left column to the right one mid-story.
    chunk_text = " ".join(c.text for c in chunk_document(doc, max_words=1000))
    positions = order_of(chunk_text, EXPECTED)
    assert positions == sorted(positions)


def test_reading_order_on_boxes() -> None:
    title = (72, 50, 540, 70)
    left = [(72, 100, 296, 150), (72, 160, 296, 220)]
    right = [(316, 100, 540, 180), (316, 190, 540, 230)]
    footer = (72, 300, 540, 320)
    boxes = [right[1], footer, left[1], title, right[0], left[0]]
    order = [boxes[i] for i in reading_order(boxes)]
    assert order == [title, left[0], left[1], right[0], right[1], footer]
    # Three columns, paragraphs of different lengths.
    one = [(50, 100, 200, 160), (50, 170, 200, 190)]
    two = [(230, 100, 380, 130), (230, 140, 380, 200)]
    three = [(410, 100, 560, 180), (410, 190, 560, 200)]
    boxes = [one[1], three[0], two[1], one[0], three[1], two[0]]
    assert [boxes[i] for i in reading_order(boxes)] == [*one, *two, *three]


def test_table_cells_are_read_row_by_row() -> None:
    rows = [[(72, y, 200, y + 12), (220, y, 400, y + 12), (420, y, 540, y + 12)] for y in (100, 120, 140)]
    boxes = [b for row in rows for b in row]
    assert reading_order(boxes) == list(range(9))
    # Without table detection (OCR lines, whose columns share baselines) the same boxes read by columns.
    assert reading_order(boxes, tables=False) == [0, 3, 6, 1, 4, 7, 2, 5, 8]


def test_single_column_order_is_unchanged() -> None:
    boxes = [(72, 100 + 30 * i, 540, 120 + 30 * i) for i in range(6)] + [(300, 400, 320, 410)]
    assert reading_order(boxes) == list(range(7))


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("tesseract"), reason="tesseract-ocr is not installed")
def test_scanned_two_columns_are_read_column_by_column(tmp_path: Path) -> None:
    page = pymupdf.open(two_column_pdf(tmp_path / "two.pdf"))[0]
    scanned = pymupdf.open()
    scanned.new_page(width=612, height=792).insert_image(page.rect, pixmap=page.get_pixmap(dpi=150))
    scanned.save(tmp_path / "scanned.pdf")
    text = read_pdf(tmp_path / "scanned.pdf", ocr="tesseract").pages[0].text
    # OCR may misread a character; the labels that start each paragraph are enough to check the order.
    labels = re.findall(r"(Alpha|Bravo) (one|two|three)", text)
    first = list(dict.fromkeys(labels))
    assert first == [("Alpha", "one"), ("Alpha", "two"), ("Alpha", "three"), ("Bravo", "one"), ("Bravo", "two"), ("Bravo", "three")]


@pytest.mark.data
def test_real_single_column_pages_keep_their_printed_order(shared_data: Path) -> None:
    """Every page of a real chapter starts where the ground truth's text does (furniture removed)."""
    name = "openstax_ap2e_ch06_bone_tissue_and_the_skeletal_system.pdf"
    truth = json.loads((shared_data / "textbook" / "ground_truth.json").read_text())["pdfs"][name]
    doc = read_pdf(shared_data / "textbook" / name)

    def words(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    mismatched = []
    for expected, page in zip(truth["pages"], doc.pages):
        head = words(expected["text_first_200"])[:12]
        if words(page.text)[:12] != head:
            mismatched.append(page.number)
    assert mismatched == []
