"""Chunking: sentences, packing, overlap, sections, captions, ids and boxes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pymupdf
import pytest

from medrag.ingest import chunk_document, read_pdf, split_sentences
from medrag.types import Document, Page, TextBlock

ID_RE = re.compile(r"^[0-9a-f]{16}:p\d{4}:c\d{3}$")


def make_pdf(path: Path) -> Path:
    """Three pages: headings on pages 1 and 2 only, a caption on page 2, long text on page 1."""
    doc = pymupdf.open()
    long_text = " ".join(f"Sentence number {i} talks about bone tissue and its cells." for i in range(40))
    for n in range(1, 4):
        page = doc.new_page(width=612, height=792)
        page.insert_text((72, 40), "Running Header", fontsize=8)
        if n <= 2:
            page.insert_text((72, 100), f"Part {n} Title", fontsize=18, fontname="hebo")
        body = long_text if n == 1 else f"Page {n} is short. It has two sentences."
        page.insert_textbox(pymupdf.Rect(72, 120, 540, 600), body, fontsize=10)
        if n == 2:
            page.insert_textbox(pymupdf.Rect(72, 620, 540, 660), "Figure 1.2 Femur A long bone.", fontsize=9)
        page.insert_text((540, 770), str(n), fontsize=9)
    doc.save(path)
    doc.close()
    return path


@pytest.fixture
def doc(tmp_path: Path) -> Document:
    return read_pdf(make_pdf(tmp_path / "book.pdf"))


def _doc(pages: list[Page]) -> Document:
    return Document(doc_id="0123456789abcdef", source="x.txt", title="X", kind="text", pages=pages)


def _page(number: int, *blocks: tuple[str, str]) -> Page:
    return Page(
        number=number,
        blocks=[TextBlock(text, (0, 10.0 * i, 100, 10.0 * i + 8), kind) for i, (kind, text) in enumerate(blocks)],
        width=100,
        height=100,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One here. Two there.", ["One here.", "Two there."]),
        ("Use e.g. Bone and i.e. Cartilage. Next.", ["Use e.g. Bone and i.e. Cartilage.", "Next."]),
        ("See Fig. 3 for the femur. Next one.", ["See Fig. 3 for the femur.", "Next one."]),
        ("Smith et al. Reported it. Then more.", ["Smith et al. Reported it.", "Then more."]),
        ("It grew 1.5 mm per day. Then stopped.", ["It grew 1.5 mm per day.", "Then stopped."]),
        ("Dr. J. R. Smith wrote it. Done.", ["Dr. J. R. Smith wrote it.", "Done."]),
        ("Is it? Yes! (Figure 6.2). Unless not", ["Is it?", "Yes!", "(Figure 6.2).", "Unless not"]),
        ("lower. case start", ["lower. case start"]),
        ("   ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_chunk_fields_and_ids(doc: Document) -> None:
    chunks = chunk_document(doc, max_words=40)
    assert chunks
    for chunk in chunks:
        assert ID_RE.match(chunk.chunk_id)
        assert chunk.chunk_id.startswith(f"{doc.doc_id}:p{chunk.page:04d}:")
        assert chunk.doc_id == doc.doc_id and chunk.source == "book.pdf" and chunk.title == doc.title
        json.dumps(chunk.to_record())
    # ids count from 0 within each page
    for number in (1, 2, 3):
        ids = [c.chunk_id for c in chunks if c.page == number]
        assert ids == [f"{doc.doc_id}:p{number:04d}:c{i:03d}" for i in range(len(ids))]
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_ids_are_stable_across_runs(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "a.pdf")
    copy = tmp_path / "copy.pdf"
    copy.write_bytes(path.read_bytes())
    a = chunk_document(read_pdf(path))
    b = chunk_document(read_pdf(copy))  # same bytes, same ids, wherever the file lives
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    assert [c.text for c in a] == [c.text for c in b]


def test_chunks_stay_on_their_page(doc: Document) -> None:
    pages = {p.number: p for p in doc.pages}
    for chunk in chunk_document(doc, max_words=40):
        page = pages[chunk.page]
        assert chunk.text.replace("\n", " ") in page.text.replace("\n", " ") or all(
            s in page.text for s in split_sentences(chunk.text.replace("\n", " "))
        )
        x0, y0, x1, y1 = chunk.bbox
        assert 0 <= x0 <= x1 <= page.width and 0 <= y0 <= y1 <= page.height


def test_packing_and_overlap(doc: Document) -> None:
    page1 = [c for c in chunk_document(doc, max_words=40, overlap_sentences=1) if c.page == 1]
    assert len(page1) > 5
    assert all(len(c.text.split()) <= 40 for c in page1)
    assert page1[0].text.startswith("Part 1 Title\nSentence number 0 ")
    for prev, nxt in zip(page1, page1[1:]):
        assert split_sentences(prev.text)[-1] == split_sentences(nxt.text)[0]
    no_overlap = [c for c in chunk_document(doc, max_words=40, overlap_sentences=0) if c.page == 1]
    assert len(no_overlap) < len(page1)
    assert sum(len(c.text.split()) for c in no_overlap) == len(doc.pages[0].text.split())


def test_long_sentence_is_split_by_words() -> None:
    words = " ".join(f"w{i}" for i in range(50))
    chunks = chunk_document(_doc([_page(1, ("text", words + "."))]), max_words=20)
    assert [len(c.text.split()) for c in chunks] == [20, 20, 10]
    assert " ".join(c.text for c in chunks) == words + "."


def test_sections_carry_across_pages(doc: Document) -> None:
    chunks = chunk_document(doc)
    by_page = {c.page: c.metadata["section"] for c in chunks if c.metadata["kind"] == "text"}
    assert by_page == {1: "Part 1 Title", 2: "Part 2 Title", 3: "Part 2 Title"}


def test_caption_is_its_own_chunk(doc: Document) -> None:
    captions = [c for c in chunk_document(doc) if c.metadata["kind"] == "caption"]
    assert len(captions) == 1
    caption = captions[0]
    assert caption.page == 2
    assert caption.text == "Figure 1.2 Femur A long bone."
    assert caption.metadata == {"section": "Part 2 Title", "kind": "caption", "figure": "Figure 1.2"}


def test_table_caption_and_heading_only_page() -> None:
    doc = _doc(
        [
            _page(1, ("heading", "Only A Heading")),
            _page(2, ("caption", "Table 3.1 Bone Types"), ("text", "Body text.")),
        ]
    )
    chunks = chunk_document(doc)
    assert [(c.chunk_id[-10:], c.text, c.metadata) for c in chunks] == [
        ("p0001:c000", "Only A Heading", {"section": "Only A Heading", "kind": "text"}),
        ("p0002:c000", "Table 3.1 Bone Types", {"section": "Only A Heading", "kind": "caption", "table": "Table 3.1"}),
        ("p0002:c001", "Body text.", {"section": "Only A Heading", "kind": "text"}),
    ]


def test_short_label_joins_following_heading() -> None:
    doc = _doc([_page(1, ("text", "CAREER CONNECTION"), ("heading", "Orthopedist"), ("text", "A doctor."))])
    (chunk,) = chunk_document(doc)
    assert chunk.text == "CAREER CONNECTION Orthopedist\nA doctor."
    assert chunk.metadata["section"] == "Orthopedist"
    assert chunk.bbox == (0, 0, 100, 28)


def test_empty_inputs() -> None:
    assert chunk_document(_doc([])) == []
    assert chunk_document(_doc([Page(number=1), Page(number=2)])) == []
    assert chunk_document(_doc([_page(1, ("text", "   "))])) == []
    # blocks of any kind without a meaningful layout still chunk
    chunks = chunk_document(_doc([_page(1, ("paragraph", "Plain text. More text."))]))
    assert [c.text for c in chunks] == ["Plain text. More text."]
    assert chunks[0].metadata == {"section": None, "kind": "text"}
