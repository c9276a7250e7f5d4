"""PDF ingestion: blocks, kinds, furniture removal, thumbnails and bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path

import pymupdf
import pytest

from medrag.errors import SourceFileError
from medrag.ingest import chunk_document, read_pdf
from medrag.ingest.pdf import caption_label

BODY = (
    "The skeletal system supports the body. It stores minerals such as calcium, e.g. in the matrix. "
    "Bone marrow produces blood cells. Red marrow is found in flat bones."
)


def make_pdf(path: Path, pages: int = 3, *, title: str | None = "Test Book", blank: tuple[int, ...] = ()) -> Path:
    """A small book: running header/footer with page number, headings, body text, one caption."""
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=612, height=792)
        if n in blank:
            continue
        page.insert_text((72, 40), "Test Book | Chapter 1", fontsize=8)
        if n == 1:
            page.insert_text((72, 50), "Draft note", fontsize=8)  # in the margin, but only once
        if n <= 2:
            page.insert_text((72, 150), f"Section {n} Heading", fontsize=18, fontname="hebo")
        page.insert_textbox(pymupdf.Rect(72, 170, 540, 300), f"Page {n} text. " + BODY, fontsize=10)
        if n == 2:
            page.insert_textbox(
                pymupdf.Rect(72, 320, 540, 360), "Figure 1.2 Bone Anatomy A long bone with its parts labelled.", fontsize=9
            )
            page.insert_text((72, 400), "The infor-\nmation flows on.", fontsize=10)
        page.insert_text((300, 770), "Access for free at example.org", fontsize=7)
        page.insert_text((540, 770), str(n), fontsize=9)
    if title is not None:
        doc.set_metadata({"title": title, "author": "Ann Author"})
    doc.save(path)
    doc.close()
    return path


@pytest.fixture
def book(tmp_path: Path) -> Path:
    return make_pdf(tmp_path / "book.pdf")


def test_document_fields(book: Path) -> None:
    doc = read_pdf(book)
    digest = hashlib.sha256(book.read_bytes()).hexdigest()
    assert doc.doc_id == digest[:16]
    assert doc.content_hash == digest
    assert doc.source == "book.pdf"
    assert doc.title == "Test Book"
    assert doc.kind == "pdf"
    assert doc.metadata["page_count"] == 3
    assert doc.metadata["author"] == "Ann Author"
    assert doc.metadata["path"] == str(book.resolve())
    assert "pages_without_text" not in doc.metadata
    json.dumps(doc.metadata)
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert all((p.width, p.height) == (612, 792) for p in doc.pages)


def test_title_falls_back_to_file_stem(tmp_path: Path) -> None:
    doc = read_pdf(make_pdf(tmp_path / "my_notes.pdf", title=None))
    assert doc.title == "my_notes"


def test_blocks_kinds_and_reading_order(book: Path) -> None:
    doc = read_pdf(book)
    p1, p2, _ = doc.pages
    assert [(b.kind, b.text[:17]) for b in p1.blocks] == [
        ("text", "Draft note"),
        ("heading", "Section 1 Heading"),
        ("text", "Page 1 text. The "),
    ]
    assert p1.blocks[2].text.startswith("Page 1 text. The skeletal system supports the body.")
    kinds = {b.kind: b for b in p2.blocks}
    assert kinds["caption"].text == "Figure 1.2 Bone Anatomy A long bone with its parts labelled."
    assert p2.text.index("Section 2 Heading") < p2.text.index("Figure 1.2") < p2.text.index("information")
    for page in doc.pages:
        for block in page.blocks:
            x0, y0, x1, y1 = block.bbox
            assert 0 <= x0 <= x1 <= page.width and 0 <= y0 <= y1 <= page.height
            assert "  " not in block.text and "\n" not in block.text


def test_hyphenated_line_break_is_joined(book: Path) -> None:
    p2 = read_pdf(book).pages[1]
    assert "The information flows on." in p2.text


def test_running_header_footer_and_page_numbers_removed(book: Path) -> None:
    doc = read_pdf(book)
    for page in doc.pages:
        assert "Test Book | Chapter" not in page.text
        assert "Access for free" not in page.text
        assert not any(re.fullmatch(r"\d+", b.text) for b in page.blocks)
    # A margin line that does not repeat is content, not furniture.
    assert "Draft note" in doc.pages[0].text


def test_furniture_needs_three_pages(tmp_path: Path) -> None:
    doc = read_pdf(make_pdf(tmp_path / "two.pdf", pages=2))
    assert all("Test Book | Chapter 1" in p.text for p in doc.pages)
    assert all("Access for free" in p.text for p in doc.pages)


def test_thumbnails(book: Path, tmp_path: Path) -> None:
    thumbs = tmp_path / "thumbs"
    doc = read_pdf(book, thumbnails_dir=thumbs, thumbnail_width=120)
    for page in doc.pages:
        path = Path(page.thumbnail_path)
        assert path == thumbs / f"{doc.doc_id}_p{page.number:04d}.jpg"
        pix = pymupdf.Pixmap(str(path))
        assert pix.width == 120
    assert all(p.thumbnail_path is None for p in read_pdf(book).pages)


def test_page_without_text_layer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_pdf(tmp_path / "partial.pdf", pages=4, blank=(3,))
    with caplog.at_level(logging.WARNING, logger="medrag.ingest.pdf"):
        doc = read_pdf(path)
    assert len(doc.pages) == 4
    assert doc.pages[2].blocks == []
    assert doc.metadata["pages_without_text"] == 1
    assert "they yield no text" in caplog.text


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Figure 6.14 Bone Anatomy", "Figure 6.14"),
        ("Fig. 3 A cell", "Figure 3"),
        ("FIGURE 2.1: Heart", "Figure 2.1"),
        ("Table 19.2 Factors", "Table 19.2"),
        ("Figure 19.14a shows the valves", None),
        ("Figures 6.2 and 6.3", None),
        ("The figure 6.2", None),
    ],
)
def test_caption_label(text: str, label: str | None) -> None:
    assert caption_label(text) == label


# --- bad input -------------------------------------------------------------------------


def _missing(d: Path) -> Path:
    return d / "missing.pdf"


def _directory(d: Path) -> Path:
    return d


def _text_file(d: Path) -> Path:
    path = d / "notes.pdf"
    path.write_text("just some text, renamed to .pdf\n")
    return path


def _garbage(d: Path) -> Path:
    path = d / "garbage.pdf"
    path.write_bytes(b"%PDF-1.7\n" + random.Random(0).randbytes(4096))
    return path


def _encrypted(d: Path) -> Path:
    path = d / "locked.pdf"
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret")
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="x", owner_pw="y")
    doc.close()
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "file not found"),
        (_directory, "directory"),
        (_text_file, "not a PDF file"),
        (_garbage, "corrupt or unreadable PDF"),
        (_encrypted, "encrypted; decrypt it first"),
    ],
    ids=["missing", "directory", "text-file", "garbage", "encrypted"],
)
def test_bad_input_raises_source_file_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SourceFileError, match=message) as info:
        read_pdf(path)
    assert info.value.path == str(path)


def test_truncated_pdf(book: Path, tmp_path: Path) -> None:
    data = book.read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(SourceFileError, match="corrupt or unreadable PDF"):
        read_pdf(cut)


# --- the real textbook PDFs --------------------------------------------------------------

RUNNING_HEADER = re.compile(r"Chapter \d+ \|")
FOOTER = "Access for free at openstax.org"


@pytest.fixture(scope="module")
def textbook(shared_data: Path):
    folder = shared_data / "textbook"
    truth_file = folder / "ground_truth.json"
    if not truth_file.is_file():
        pytest.skip(f"textbook data not found at {folder}")
    truth = json.loads(truth_file.read_text(encoding="utf-8"))["pdfs"]
    docs = {name: read_pdf(folder / name) for name in truth}
    return truth, docs


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.data
def test_textbook_page_counts(textbook) -> None:
    truth, docs = textbook
    for name, info in truth.items():
        assert len(docs[name].pages) == info["n_pages"] == docs[name].metadata["page_count"], name


@pytest.mark.data
def test_textbook_no_furniture_in_chunks(textbook) -> None:
    truth, docs = textbook
    for name, info in truth.items():
        if not info["has_text_layer"]:
            continue
        chunks = chunk_document(docs[name])
        assert chunks
        for chunk in chunks:
            assert not RUNNING_HEADER.search(chunk.text), chunk.chunk_id
            assert FOOTER not in chunk.text, chunk.chunk_id


@pytest.mark.data
def test_textbook_page_text_starts_like_ground_truth(textbook) -> None:
    truth, docs = textbook
    total = matched = 0
    misses = []
    for name, info in truth.items():
        if not info["has_text_layer"]:
            continue
        for page_truth in info["pages"]:
            page = docs[name].pages[page_truth["page"] - 1]
            expected = _norm(page_truth["text_first_200"])
            total += 1
            if _norm(page.text).startswith(expected):
                matched += 1
            else:
                misses.append(f"{name} p{page.number}")
    rate = matched / total
    print(f"start-of-text match: {matched}/{total} = {rate:.3f}; misses: {misses}")
    assert rate >= 0.95, misses


@pytest.mark.data
def test_textbook_captions_are_caption_chunks_on_their_page(textbook) -> None:
    truth, docs = textbook
    total = matched = 0
    misses = []
    for name, info in truth.items():
        if not info["has_text_layer"]:
            continue
        found = {
            (c.page, c.metadata.get("figure") or c.metadata.get("table"))
            for c in chunk_document(docs[name])
            if c.metadata["kind"] == "caption"
        }
        for page_truth in info["pages"]:
            labels = [f["figure"] for f in page_truth["figures"]] + [t["table"] for t in page_truth["tables"]]
            for label in labels:
                total += 1
                if (page_truth["page"], label) in found:
                    matched += 1
                else:
                    misses.append(f"{name} p{page_truth['page']} {label}")
    rate = matched / total
    print(f"caption match: {matched}/{total} = {rate:.3f}; misses: {misses}")
    assert total > 100
    assert rate >= 0.95, misses


@pytest.mark.data
def test_textbook_headings_become_sections(textbook) -> None:
    truth, docs = textbook
    name = "openstax_ap2e_ch06_bone_tissue_and_the_skeletal_system.pdf"
    sections = {c.metadata["section"] for c in chunk_document(docs[name])}
    assert "6.3 Bone Structure" in sections
    assert "Gross Anatomy of Bone" in sections


@pytest.mark.data
def test_textbook_scanned_pdf_has_no_text(textbook) -> None:
    truth, docs = textbook
    for name, info in truth.items():
        if info["has_text_layer"]:
            continue
        doc = docs[name]
        assert all(p.blocks == [] for p in doc.pages)
        assert doc.metadata["pages_without_text"] == info["n_pages"] == len(doc.pages)
        assert chunk_document(doc) == []
