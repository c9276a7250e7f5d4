"""Read a PDF into a :class:`~medrag.types.Document`: text blocks with boxes, kinds and thumbnails.

One pass collects the raw lines of every page; the document-wide facts
(body font size, repeated running headers/footers) are computed from all
pages before the blocks are built, so the same rules apply to every page.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING

import pymupdf

from medrag.errors import SourceFileError
from medrag.types import BBox, Document, Page, TextBlock

if TYPE_CHECKING:
    from medrag.ingest.ocr import OcrEngine

log = logging.getLogger(__name__)

MARGIN_FRACTION = 0.08  # top/bottom band where running headers and footers live
FURNITURE_MIN_SHARE = 0.30  # a margin line repeating on this share of pages is furniture
FURNITURE_MIN_PAGES = 3
HEADING_SIZE_RATIO = 1.15  # "clearly larger" than the body font
HEADING_MAX_WORDS = 30  # a big-font block longer than this is a lead paragraph, not a title
BOLD_HEADING_MAX_WORDS = 15
BOLD_SHARE = 0.8

CAPTION_RE = re.compile(r"^(?P<kind>figure|fig\.?|table)\s*(?P<num>\d+(?:[.\-–]\d+)*[a-z]?)\b", re.IGNORECASE)
PAGE_NUMBER_RE = re.compile(r"^(?:page\s*)?(?:\d{1,4}|[ivxlc]{1,6})(?:\s*(?:of|/)\s*\d{1,4})?$", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")
_DIGITS_RE = re.compile(r"\d+")


def caption_label(text: str) -> str | None:
    """The normalised label of a caption ("Figure 6.14", "Table 19.2"), or None if it is not one."""
    m = CAPTION_RE.match(text)
    # "Figure 6.2 shows ..." is running text that cites a figure, not its caption.
    if not m or re.match(r"\s+[a-z]", text[m.end():]):
        return None
    kind = "Table" if m.group("kind").lower() == "table" else "Figure"
    return f"{kind} {m.group('num')}"


@dataclass
class _Line:
    text: str
    bbox: BBox
    sizes: Counter  # font size -> characters
    bold_chars: int
    chars: int
    confidence: float | None = None  # set for OCR lines


def read_pdf(
    path: str | Path,
    *,
    thumbnails_dir: Path | None = None,
    thumbnail_width: int = 300,
    ocr: "OcrEngine | str | None" = None,
    ocr_dpi: int = 150,
    figures_dir: Path | None = None,
) -> Document:
    """Parse a PDF file into a Document with one Page per PDF page (1-based numbers).

    Pages without a text layer are read by OCR when ``ocr`` names an engine
    ("auto", "rapidocr", "tesseract") or is one; their blocks carry the OCR
    confidence. With ``ocr=None`` such pages stay empty.

    Figures (images, captioned drawings, captioned areas of page scans) are
    found on every page with the caption linked to them (``Page.figures``);
    with ``figures_dir`` each is also saved there as a JPEG.
    """
    from medrag.ingest.figures import figure_file_name, find_figures, is_scanned, save_figure
    from medrag.ingest.ocr import make_ocr

    engine = make_ocr(ocr) if isinstance(ocr, str) else ocr
    path = Path(path)
    data = _read_checked(path)
    digest = hashlib.sha256(data).hexdigest()
    doc_id = digest[:16]
    try:
        pdf = pymupdf.open(stream=data, filetype="pdf")
    except Exception as exc:  # pymupdf raises several types for broken files
        raise SourceFileError(path, f"corrupt or unreadable PDF: {exc}") from exc
    with pdf:
        if pdf.needs_pass:
            raise SourceFileError(path, "PDF is encrypted; decrypt it first (e.g. qpdf --decrypt)")
        if pdf.page_count == 0:
            raise SourceFileError(path, "corrupt or unreadable PDF: it has no pages")
        try:
            raw_pages = [_page_lines(page) for page in pdf]
        except (RuntimeError, ValueError) as exc:
            raise SourceFileError(path, f"corrupt or unreadable PDF: {exc}") from exc
        without_text = [i for i, (lines_by_block, _, _) in enumerate(raw_pages) if not lines_by_block]
        empty_pages = len(without_text)
        ocr_pages = 0
        scanned = {i for i in without_text if is_scanned(pdf[i], has_text_layer=False)}
        if engine is not None:
            for i in without_text:
                _, width, height = raw_pages[i]
                raw_pages[i] = (_ocr_page_lines(pdf[i], engine, ocr_dpi), width, height)
                ocr_pages += 1
        metadata = pdf.metadata or {}
        body_size = _body_font_size(raw_pages)
        furniture = _furniture_keys(raw_pages)

        pages: list[Page] = []
        for number, (page, (lines_by_block, width, height)) in enumerate(zip(pdf, raw_pages), start=1):
            blocks = []
            for lines in lines_by_block:
                kept = [ln for ln in lines if not _is_furniture(ln, height, furniture)]
                block = _make_block(kept, body_size, width, height)
                if block is not None:
                    blocks.append(block)
            thumb = None
            if thumbnails_dir is not None:
                thumb = _render_thumbnail(page, Path(thumbnails_dir) / f"{doc_id}_p{number:04d}.jpg", thumbnail_width)
            text_lines = [ln.bbox for lines in lines_by_block for ln in lines]
            figures = find_figures(page, blocks, scanned=number - 1 in scanned, text_lines=text_lines)
            if figures_dir is not None:
                for i, figure in enumerate(figures, start=1):
                    figure.image_path = save_figure(page, figure, Path(figures_dir) / figure_file_name(doc_id, number, i))
            pages.append(
                Page(number=number, blocks=blocks, width=width, height=height, thumbnail_path=thumb, figures=figures)
            )

    doc_metadata = {
        "page_count": len(pages),
        "figure_count": sum(len(p.figures) for p in pages),
        "author": (metadata.get("author") or "").strip(),
        "path": str(path.resolve()),
    }
    if ocr_pages:
        confidences = [b.confidence for p in pages for b in p.blocks if b.confidence is not None]
        doc_metadata["ocr"] = {
            "engine": engine.name,
            "pages": ocr_pages,
            "dpi": ocr_dpi,
            "mean_confidence": round(sum(confidences) / len(confidences), 4) if confidences else None,
        }
    if empty_pages:
        doc_metadata["pages_without_text"] = empty_pages
        log.warning(
            "%s: %d of %d pages have no text layer%s",
            path.name, empty_pages, len(pages),
            f"; read by OCR ({engine.name})" if ocr_pages else
            '; they yield no text (install an OCR engine: pip install "medrag[ocr]" or the tesseract-ocr package)',
        )
    title = (metadata.get("title") or "").strip() or path.stem
    return Document(
        doc_id=doc_id,
        source=path.name,
        title=title,
        kind="pdf",
        pages=pages,
        content_hash=digest,
        metadata=doc_metadata,
    )


def _read_checked(path: Path) -> bytes:
    if not path.exists():
        raise SourceFileError(path, "file not found")
    if path.is_dir():
        raise SourceFileError(path, "is a directory, expected a PDF file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFileError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if b"%PDF-" not in data[:1024]:
        head = data[:16].decode("ascii", "replace").strip() or "empty file"
        raise SourceFileError(path, f"not a PDF file (no %PDF- header; starts with {head!r})")
    return data


def _page_lines(page: pymupdf.Page) -> tuple[list[list[_Line]], float, float]:
    """Text lines of a page grouped by block, in reading order, in page (rotated) coordinates."""
    rect = page.rect
    # Text extraction reports unrotated coordinates; map them onto the page as shown.
    matrix = page.rotation_matrix if page.rotation else None
    out: list[list[_Line]] = []
    # MuPDF's sort=True orders blocks by position (top, then left), which interleaves columns;
    # reading_order below puts them column by column.
    for block in page.get_text("dict", sort=True)["blocks"]:
        if block.get("type") != 0:
            continue
        lines = []
        for line in block["lines"]:
            text = _WS_RE.sub(" ", "".join(s["text"] for s in line["spans"])).strip()
            if not text:
                continue
            sizes: Counter = Counter()
            bold = chars = 0
            for span in line["spans"]:
                n = len(span["text"].strip())
                sizes[round(span["size"], 1)] += n
                chars += n
                if span["flags"] & pymupdf.TEXT_FONT_BOLD or "bold" in span["font"].lower():
                    bold += n
            r = pymupdf.Rect(line["bbox"])
            if matrix is not None:
                r = r * matrix
            r = r & rect  # keep boxes on the page
            lines.append(_Line(text, (r.x0, r.y0, r.x1, r.y1), sizes, bold, chars))
        if lines:
            out.append(lines)
    boxes = [_lines_box(lines) for lines in out]
    out = [out[i] for i in reading_order(boxes)]
    return out, rect.width, rect.height


def _lines_box(lines: list[_Line]) -> BBox:
    return (
        min(ln.bbox[0] for ln in lines),
        min(ln.bbox[1] for ln in lines),
        max(ln.bbox[2] for ln in lines),
        max(ln.bbox[3] for ln in lines),
    )


def reading_order(boxes: list[BBox], *, tables: bool = True) -> list[int]:
    """Indices of text boxes in reading order: column by column, top to bottom in each column.

    A column gutter is a vertical line with boxes side by side on its two
    sides; boxes crossing it (titles, full-width figures' captions) separate
    the page into bands read one after another, and inside a band the left
    column is read before the right one (recursively, so three columns work).
    With ``tables=True``, side-by-side boxes whose tops line up row by row are
    taken for a table and read row by row instead.
    """
    return _order(sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0])), boxes, tables)


def _order(idx: list[int], boxes: list[BBox], tables: bool) -> list[int]:
    gutter = _find_gutter(idx, boxes, tables) if len(idx) > 1 else None
    if gutter is None:
        return sorted(idx, key=lambda i: (boxes[i][1], boxes[i][0]))
    out: list[int] = []
    left: list[int] = []
    right: list[int] = []
    for i in idx:  # top to bottom
        x0, _, x1, _ = boxes[i]
        if x0 < gutter < x1:  # spans the gutter: the columns above it end here
            out += _order(left, boxes, tables) + _order(right, boxes, tables) + [i]
            left, right = [], []
        elif x1 <= gutter:
            left.append(i)
        else:
            right.append(i)
    return out + _order(left, boxes, tables) + _order(right, boxes, tables)


def _find_gutter(idx: list[int], boxes: list[BBox], tables: bool) -> float | None:
    """The x of the gutter crossed by the fewest boxes (widest on ties), or None if nothing is side by side."""
    lo = min(boxes[i][0] for i in idx)
    hi = max(boxes[i][2] for i in idx)
    best = None
    for x in sorted({boxes[i][2] for i in idx}):
        if not lo + 0.15 * (hi - lo) <= x <= lo + 0.85 * (hi - lo):
            continue
        left = [boxes[i] for i in idx if boxes[i][2] <= x]
        right = [boxes[i] for i in idx if boxes[i][0] > x]
        if not left or not right:
            continue
        pairs = [(a, b) for a in left for b in right if min(a[3], b[3]) - max(a[1], b[1]) > 0]
        if not pairs:
            continue
        if tables and len(pairs) >= 2 and sum(abs(a[1] - b[1]) < 3 for a, b in pairs) * 3 >= 2 * len(pairs):
            continue  # rows of cells, not columns
        crossing = sum(1 for i in idx if boxes[i][0] < x < boxes[i][2])
        width = min(b[0] for b in right) - x
        key = (crossing, -width)
        if best is None or key < best[0]:
            best = (key, x + width / 2)
    return best[1] if best else None


def _body_font_size(raw_pages) -> float:
    """Median font size over all characters of the document."""
    sizes: Counter = Counter()
    for lines_by_block, _, _ in raw_pages:
        for lines in lines_by_block:
            for ln in lines:
                sizes.update(ln.sizes)
    total = sum(sizes.values())
    if not total:
        return 0.0
    seen = 0
    for size in sorted(sizes):
        seen += sizes[size]
        if seen * 2 >= total:
            return size
    return 0.0  # pragma: no cover


def _margin(line: _Line, height: float) -> bool:
    band = height * MARGIN_FRACTION
    return line.bbox[3] <= band or line.bbox[1] >= height - band


def _furniture_key(text: str) -> str:
    return _DIGITS_RE.sub("#", text.lower())


def _furniture_keys(raw_pages) -> set[str]:
    """Margin lines (digits masked) that repeat on enough pages to be running headers/footers."""
    pages_with: Counter = Counter()
    for lines_by_block, _, height in raw_pages:
        keys = {_furniture_key(ln.text) for lines in lines_by_block for ln in lines if _margin(ln, height)}
        pages_with.update(keys)
    needed = max(FURNITURE_MIN_PAGES, ceil(FURNITURE_MIN_SHARE * len(raw_pages)))
    return {key for key, n in pages_with.items() if n >= needed}


def _is_furniture(line: _Line, height: float, furniture: set[str]) -> bool:
    if not _margin(line, height):
        return False
    return _furniture_key(line.text) in furniture or bool(PAGE_NUMBER_RE.match(line.text))


def _join_lines(lines: list[_Line]) -> str:
    text = ""
    for ln in lines:
        # Undo hyphenation at line ends: "infor-" + "mation" -> "information".
        if text.endswith("-") and len(text) > 1 and text[-2].isalpha() and ln.text[:1].islower():
            text = text[:-1] + ln.text
        else:
            text = f"{text} {ln.text}" if text else ln.text
    return text


def _make_block(lines: list[_Line], body_size: float, width: float, height: float) -> TextBlock | None:
    if not lines:
        return None
    text = _join_lines(lines)
    bbox = (
        min(ln.bbox[0] for ln in lines),
        min(ln.bbox[1] for ln in lines),
        max(ln.bbox[2] for ln in lines),
        max(ln.bbox[3] for ln in lines),
    )
    confidences = [ln.confidence for ln in lines if ln.confidence is not None]
    confidence = round(sum(confidences) / len(confidences), 4) if confidences else None
    return TextBlock(text=text, bbox=bbox, kind=_block_kind(text, lines, body_size), confidence=confidence)


def _block_kind(text: str, lines: list[_Line], body_size: float) -> str:
    if caption_label(text):
        return "caption"
    sizes: Counter = Counter()
    for ln in lines:
        sizes.update(ln.sizes)
    chars = sum(ln.chars for ln in lines)
    if not chars or not body_size:
        return "text"
    size = sizes.most_common(1)[0][0]
    words = len(text.split())
    if size >= body_size * HEADING_SIZE_RATIO and words <= HEADING_MAX_WORDS:
        return "heading"
    # Bold short lines at body size or above are titles; smaller bold labels
    # ("LEARNING OBJECTIVES", table column heads) are not section headings.
    bold = sum(ln.bold_chars for ln in lines) / chars
    if bold >= BOLD_SHARE and words < BOLD_HEADING_MAX_WORDS and size >= body_size * 0.98:
        return "heading"
    return "text"


def _render_thumbnail(page: pymupdf.Page, target: Path, width: int) -> str:
    from medrag.ingest.figures import save_pixmap_jpeg

    zoom = width / page.rect.width
    return save_pixmap_jpeg(page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB), target)


def _ocr_page_lines(page: pymupdf.Page, engine, dpi: int) -> list[list[_Line]]:
    """OCR a page into lines grouped into paragraph blocks, in page coordinates.

    Line height stands in for font size, so headings (taller lines) and
    furniture (repeating margin lines) are found as on text pages.
    """
    import numpy as np

    zoom = dpi / 72.0
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB)
    image = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, 3)
    lines: list[_Line] = []
    for found in engine.recognize(image):
        text = _WS_RE.sub(" ", found.text).strip()
        if not text:
            continue
        x0, y0, x1, y1 = (v / zoom for v in found.box)
        size = round(y1 - y0, 0)
        lines.append(_Line(text, (x0, y0, x1, y1), Counter({size: len(text)}), 0, len(text), found.confidence))
    # OCR returns lines top to bottom across the page; read two-column scans column by column.
    # Lines of two columns share baselines, so aligned tops do not mean a table here.
    lines = [lines[i] for i in reading_order([ln.bbox for ln in lines], tables=False)]
    blocks: list[list[_Line]] = []
    previous: _Line | None = None
    short = 0.5 * page.rect.width
    for line in lines:
        x0, y0 = line.bbox[0], line.bbox[1]
        size = next(iter(line.sizes))
        # A new paragraph starts after a vertical gap, a jump in indentation, or a change of line
        # height next to a short line (a heading). Between two long lines a height change is noise
        # (a bold label or descenders make one box taller), e.g. inside a multi-line caption.
        if (
            previous is None
            or y0 - previous.bbox[3] > 0.6 * size
            or abs(x0 - previous.bbox[0]) > 2 * size
            or (
                abs(size - next(iter(previous.sizes))) > 0.4 * size
                and min(line.bbox[2] - x0, previous.bbox[2] - previous.bbox[0]) < short
            )
        ):
            blocks.append([])
        blocks[-1].append(line)
        previous = line
    return blocks
