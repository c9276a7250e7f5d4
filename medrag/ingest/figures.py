"""Figures on PDF pages: find their regions, link their captions by layout, save them as JPEG.

Regions come from three kinds of evidence:

* embedded raster images (``page.get_image_info()``); panels that touch are one figure;
* clusters of vector drawings (diagrams, or a placeholder box) — kept only when a
  figure caption sits next to them, since rules, boxes and table grids are drawings too;
* on scanned pages (one image covering the page, text read by OCR): areas of ink
  that OCR did not read as text — also kept only with a caption next to them.

A caption is a text block whose text starts with a figure label ("Figure 22.3 …",
"Fig. 3"). Each caption is linked to the nearest region directly above or below
it that overlaps it horizontally; the closest pairs are linked first, so each
caption and each region is used once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymupdf

from medrag.types import BBox, Chunk, Document, Figure, TextBlock

log = logging.getLogger(__name__)

MIN_FIGURE_SIDE = 36.0  # points (half an inch): smaller images are icons, bullets, rules
PANEL_GAP = 8.0  # images closer than this are panels of one figure
CAPTION_MAX_GAP = 144.0  # a caption further than two inches from a region is not its caption
CAPTION_BARRIER_WORDS = 12  # a paragraph this long between a region and a caption separates them
SCAN_COVERAGE = 0.9  # an image covering this share of the page makes it a page scan
SCAN_DPI = 72  # resolution of the ink map used to find figures on scans (1 pixel = 1 point)
INK_LEVEL = 215  # a pixel whose darkest channel is below this is ink (paper is near 255)
SCAN_TEXT_SHARE = 0.8  # an ink area mostly covered by OCR'd text lines is text, not a figure
SCAN_MERGE_GAP = 12.0  # ink pieces closer than this belong to one figure
FIGURE_DPI = 150
# Figures and page images are saved as JPEG: encoding a PNG took most of a text PDF's parse time
# (five times JPEG's), and these files are only for display and image embedding.
JPEG_QUALITY = 90


@dataclass
class _Region:
    bbox: BBox
    origin: str  # image | drawing | scan
    needs_caption: bool


def _width(b: BBox) -> float:
    return b[2] - b[0]


def _height(b: BBox) -> float:
    return b[3] - b[1]


def _union(a: BBox, b: BBox) -> BBox:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _gap(a: BBox, b: BBox) -> float:
    """Distance between two boxes (0 when they touch or overlap)."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    return max(dx, dy)


def _merge_close(boxes: list[BBox], gap: float) -> list[BBox]:
    """Union boxes closer than ``gap`` until no two are (panels of one figure, pieces of one drawing)."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                if _gap(boxes[i], boxes[j]) <= gap:
                    boxes[i] = _union(boxes[i], boxes.pop(j))
                    merged = True
                    break
            if merged:
                break
    return boxes


def _big_enough(b: BBox) -> bool:
    return _width(b) >= MIN_FIGURE_SIDE and _height(b) >= MIN_FIGURE_SIDE


def is_scanned(page: pymupdf.Page, has_text_layer: bool) -> bool:
    """A page without a text layer whose content is one image covering (nearly) all of it."""
    if has_text_layer:
        return False
    area = abs(page.rect)
    return any(abs(pymupdf.Rect(info["bbox"]) & page.rect) >= SCAN_COVERAGE * area for info in page.get_image_info())


def _clip(b, rect: pymupdf.Rect) -> BBox:
    r = pymupdf.Rect(b) & rect
    return (r.x0, r.y0, r.x1, r.y1)


def object_regions(page: pymupdf.Page) -> list[_Region]:
    """Figure candidates of a page with a text layer: embedded images and clusters of drawings."""
    rect = page.rect
    images = [_clip(info["bbox"], rect) for info in page.get_image_info()]
    images = [b for b in _merge_close([b for b in images if _width(b) > 0 and _height(b) > 0], PANEL_GAP) if _big_enough(b)]
    regions = [_Region(b, "image", needs_caption=False) for b in images]
    try:
        clusters = [_clip(r, rect) for r in page.cluster_drawings()]
    except (RuntimeError, ValueError, AttributeError) as exc:  # odd drawing commands; images still count
        log.debug("page %d: drawings not clustered: %s", page.number + 1, exc)
        clusters = []
    for b in clusters:
        if not _big_enough(b) or any(_gap(b, img) <= PANEL_GAP for img in images):
            continue  # too small, or drawn over/around an image already taken
        regions.append(_Region(b, "drawing", needs_caption=True))
    return regions


def scan_regions(page: pymupdf.Page, text_lines: list[BBox]) -> list[_Region]:
    """Figure candidates of a scanned page: ink that the OCR'd text lines do not explain."""
    from scipy import ndimage

    zoom = SCAN_DPI / 72.0
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB)
    rgb = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, 3)
    ink = rgb.min(axis=2) < INK_LEVEL
    text = np.zeros_like(ink)
    for x0, y0, x1, y1 in text_lines:
        text[max(0, int(y0 * zoom) - 1) : int(y1 * zoom) + 2, max(0, int(x0 * zoom) - 1) : int(x1 * zoom) + 2] = True
    # Close small gaps so an illustration's strokes form few pieces, without reaching the caption below.
    labels, _ = ndimage.label(ndimage.binary_dilation(ink, iterations=2))
    pieces: list[BBox] = []
    for sl in ndimage.find_objects(labels):
        if sl is None:
            continue
        ys, xs = sl
        area_ink = ink[sl]
        if area_ink.sum() < 16:
            continue  # specks
        if (area_ink & text[sl]).sum() >= SCAN_TEXT_SHARE * area_ink.sum():
            continue  # a text line or paragraph OCR already read
        pieces.append((xs.start / zoom, ys.start / zoom, xs.stop / zoom, ys.stop / zoom))
    regions = [b for b in _merge_close(pieces, SCAN_MERGE_GAP) if _big_enough(b)]
    # Labels that stick out of a figure's side ("Epiphyseal line" beside a drawing) belong to it;
    # lines above or below it (a caption) do not.
    for i, region in enumerate(regions):
        for line in text_lines:
            middle = (line[1] + line[3]) / 2
            if _gap(region, line) == 0 and region[1] < middle < region[3] and _width(line) < _width(region):
                region = _union(region, line)
        regions[i] = region
    return [_Region(b, "scan", needs_caption=True) for b in regions]


def _caption_distance(region: BBox, caption: BBox) -> tuple[float, float] | None:
    """How far a caption directly above or below a region is from it (vertical, then horizontal), or None.

    Captions are often set flush with the text column while the figure is
    centred, so any horizontal overlap will do; the horizontal offset of the
    centres only breaks ties (side-by-side figures with their own captions).
    """
    if min(region[2], caption[2]) - max(region[0], caption[0]) <= 0:
        return None
    below = caption[1] - region[3]
    above = region[1] - caption[3]
    distance = below if below >= -2 else above if above >= -2 else None  # a little overlap from loose boxes
    if distance is None or distance > CAPTION_MAX_GAP:
        return None
    vertical = max(distance, 0.0) + (0.0 if below >= -2 else 0.5)  # on a tie, the caption below wins
    return vertical, abs((region[0] + region[2]) - (caption[0] + caption[2])) / 2


def _separated(region: BBox, caption: BBox, barriers: list[BBox]) -> bool:
    """Whether a paragraph lies between a region and a caption above or below it."""
    top, bottom = (region[3], caption[1]) if caption[1] >= region[3] - 2 else (caption[3], region[1])
    left, right = max(region[0], caption[0]), min(region[2], caption[2])
    return any(b[1] >= top - 2 and b[3] <= bottom + 2 and b[0] < right and b[2] > left for b in barriers)


def link_captions(regions: list[_Region], blocks: list[TextBlock]) -> list[Figure]:
    """Pair regions with figure captions, nearest first; drop caption-less drawings and scan areas."""
    from medrag.ingest.pdf import caption_label

    captions = [(b, caption_label(b.text)) for b in blocks if b.kind == "caption"]
    captions = [(b, label) for b, label in captions if label and label.startswith("Figure")]
    # Running text between a region and a caption means the caption belongs elsewhere;
    # short lines (panel labels, "(a) before (b) after") do not.
    barriers = [b.bbox for b in blocks if b.kind != "caption" and len(b.text.split()) >= CAPTION_BARRIER_WORDS]
    pairs = []
    for ri, region in enumerate(regions):
        for ci, (block, _) in enumerate(captions):
            d = _caption_distance(region.bbox, block.bbox)
            if d is not None and not _separated(region.bbox, block.bbox, barriers):
                pairs.append((d, ri, ci))
    linked: dict[int, int] = {}
    used: set[int] = set()
    for _, ri, ci in sorted(pairs):
        if ri not in linked and ci not in used:
            linked[ri] = ci
            used.add(ci)
    figures = []
    for ri, region in enumerate(regions):
        ci = linked.get(ri)
        if ci is None and region.needs_caption:
            continue
        block, label = captions[ci] if ci is not None else (None, None)
        figures.append(
            Figure(
                bbox=tuple(round(v, 2) for v in region.bbox),
                label=label,
                caption=block.text if block else None,
                caption_bbox=block.bbox if block else None,
                origin=region.origin,
            )
        )
    figures.sort(key=lambda f: (f.bbox[1], f.bbox[0]))
    return figures


def find_figures(page: pymupdf.Page, blocks: list[TextBlock], *, scanned: bool, text_lines: list[BBox] = ()) -> list[Figure]:
    """Figures of one page, top to bottom. ``text_lines`` are the OCR'd line boxes of a scanned page."""
    if scanned and not text_lines:
        return []  # a scan without OCR has no captions, and scan figures need one
    regions = scan_regions(page, list(text_lines)) if scanned else object_regions(page)
    return link_captions(regions, blocks)


def save_figure(page: pymupdf.Page, figure: Figure, target: Path, dpi: int = FIGURE_DPI) -> str:
    """Render the figure's region of the page (labels drawn over images included) to a JPEG."""
    zoom = dpi / 72.0
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), clip=pymupdf.Rect(figure.bbox), alpha=False, colorspace=pymupdf.csRGB)
    return save_pixmap_jpeg(pix, target)


def save_pixmap_jpeg(pix: pymupdf.Pixmap, target: Path, quality: int = JPEG_QUALITY) -> str:
    """Write an RGB pixmap as a JPEG (Pillow's encoder: several times faster than MuPDF's PNG)."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("RGB", (pix.width, pix.height), pix.samples).save(target, format="JPEG", quality=quality)
    return str(target)


def figure_file_name(doc_id: str, page_number: int, index: int) -> str:
    return f"{doc_id}_p{page_number:04d}_f{index:02d}.jpg"


def attach_figures(doc: Document, chunks: list[Chunk]) -> int:
    """Give each caption chunk the figure it belongs to: number, caption, image path, region.

    Returns how many chunks got a figure. A citation of such a chunk names
    book + page + figure, and the figure image can be shown beside it.
    """
    by_page: dict[tuple[int, str], Figure] = {}
    for page in doc.pages:
        for figure in page.figures:
            if figure.label:
                by_page[(page.number, figure.label)] = figure
    attached = 0
    for chunk in chunks:
        label = chunk.metadata.get("figure")
        figure = by_page.get((chunk.page, label)) if label and chunk.page else None
        if figure is None:
            continue
        chunk.metadata["caption"] = figure.caption
        chunk.metadata["figure_bbox"] = list(figure.bbox)
        if figure.image_path:
            chunk.metadata["figure_image"] = figure.image_path
        attached += 1
    return attached
