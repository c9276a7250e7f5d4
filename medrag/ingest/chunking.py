"""Split a Document into retrievable Chunks that never cross a page.

Per page, text blocks are split into sentences and packed into chunks of about
``max_words`` words, neighbouring chunks sharing ``overlap_sentences``
sentences. Headings are glued to the text that follows them and remembered as
the chunk's section (carried across pages); captions become chunks of their own
so figures can be cited by label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medrag.ingest.pdf import caption_label
from medrag.types import BBox, Chunk, Document, Page, TextBlock

# Words whose trailing period does not end a sentence (compared lower-cased).
ABBREVIATIONS = {
    "e.g.", "i.e.", "fig.", "figs.", "al.", "etc.", "vs.", "cf.", "approx.", "ca.", "dr.", "mr.", "mrs.",
    "ms.", "prof.", "st.", "jr.", "sr.", "no.", "nos.", "vol.", "eq.", "eqs.", "ref.", "refs.", "resp.",
    "ch.", "sec.", "p.", "pp.", "ed.", "eds.", "inc.", "ltd.", "co.", "dept.", "univ.", "mt.", "sp.", "spp.",
}
# A candidate boundary: end punctuation (plus closing quotes/brackets), whitespace, then a sentence start.
_BOUNDARY_RE = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_INITIALS_RE = re.compile(r"(?:[A-Z]\.)+")
LABEL_MAX_WORDS = 8


def split_sentences(text: str) -> list[str]:
    """Split text into sentences without breaking on abbreviations, initials or decimals."""
    text = " ".join(text.split())
    if not text:
        return []
    out = []
    start = 0
    for m in _BOUNDARY_RE.finditer(text):
        before = text[start : m.start() + 1].split()
        word = before[-1].lstrip("([\"'“‘") if before else ""
        if word.lower() in ABBREVIATIONS or _INITIALS_RE.fullmatch(word):
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


@dataclass
class _Sentence:
    text: str
    block: int  # index of the block on the page it came from
    words: int = field(init=False)

    def __post_init__(self) -> None:
        self.words = len(self.text.split())


def _pieces(sentence: str, block: int, max_words: int) -> list[_Sentence]:
    """A sentence, or word slices of it when it alone is longer than max_words."""
    words = sentence.split()
    if len(words) <= max_words:
        return [_Sentence(sentence, block)]
    return [_Sentence(" ".join(words[i : i + max_words]), block) for i in range(0, len(words), max_words)]


def _pack(sentences: list[_Sentence], max_words: int, overlap: int, heading_words: int) -> list[list[_Sentence]]:
    """Group sentences into chunks of at most ~max_words, repeating `overlap` sentences between chunks."""
    groups: list[list[_Sentence]] = []
    current: list[_Sentence] = []
    fresh = 0  # sentences in `current` that are not overlap
    budget = max_words - heading_words  # the first chunk also carries the heading
    for s in sentences:
        used = sum(x.words for x in current)
        if fresh and used + s.words > budget:
            groups.append(current)
            current = current[-overlap:] if overlap else []
            fresh = 0
            budget = max_words
            used = sum(x.words for x in current)
        if not fresh and current and used + s.words > budget:
            current = []  # the overlap does not fit beside this sentence; drop it
        current.append(s)
        fresh += 1
    if fresh:
        groups.append(current)
    return groups


def pack_text(text: str, max_words: int = 120, overlap_sentences: int = 1) -> list[str]:
    """Split plain text (a report section, an abstract) into sentence-aligned pieces of ~max_words."""
    sentences = [piece for sentence in split_sentences(text) for piece in _pieces(sentence, 0, max_words)]
    return [" ".join(s.text for s in group) for group in _pack(sentences, max_words, overlap_sentences, 0)]


def _union(boxes: list[BBox]) -> BBox | None:
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def chunk_document(doc: Document, max_words: int = 120, overlap_sentences: int = 1) -> list[Chunk]:
    """Chunks of a document in page order; ids are ``{doc_id}:p{page:04d}:c{i:03d}``."""
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    chunks: list[Chunk] = []
    section: str | None = None
    for page in doc.pages:
        page_chunks, section = _chunk_page(doc, page, section, max_words, max(0, overlap_sentences))
        chunks.extend(page_chunks)
    return chunks


def _chunk_page(
    doc: Document, page: Page, section: str | None, max_words: int, overlap: int
) -> tuple[list[Chunk], str | None]:
    out: list[Chunk] = []
    blocks: list[TextBlock] = page.blocks

    def emit(text: str, block_ids: list[int], meta: dict) -> None:
        i = len(out)
        confidences = [blocks[b].confidence for b in set(block_ids) if blocks[b].confidence is not None]
        if confidences:  # text read by OCR: keep how sure the engine was
            meta = {**meta, "ocr_confidence": round(min(confidences), 4)}
        out.append(
            Chunk(
                chunk_id=f"{doc.doc_id}:p{page.number:04d}:c{i:03d}",
                doc_id=doc.doc_id,
                text=text,
                source=doc.source,
                title=doc.title,
                page=page.number,
                bbox=_union([blocks[b].bbox for b in sorted(set(block_ids))]),
                metadata=meta,
            )
        )

    headings: list[int] = []  # pending heading blocks, glued to the next text run
    run: list[_Sentence] = []  # text since the last heading or caption

    def flush() -> None:
        nonlocal run, headings
        if not run:
            return
        prefix = " ".join(blocks[h].text for h in headings)
        head_words = len(prefix.split())
        for n, group in enumerate(_pack(run, max_words, overlap, head_words)):
            body = " ".join(s.text for s in group)
            ids = [s.block for s in group]
            if n == 0 and headings:
                body = f"{prefix}\n{body}"
                ids = headings + ids
            emit(body, ids, {"section": section, "kind": "text"})
        run, headings = [], []

    def flush_headings() -> None:
        # Headings with no text after them on this page would be lost; keep them as a chunk.
        nonlocal headings
        if headings:
            emit("\n".join(blocks[h].text for h in headings), headings, {"section": section, "kind": "text"})
            headings = []

    for idx, block in enumerate(blocks):
        text = block.text.strip()
        if not text:
            continue
        if block.kind == "heading":
            if run and sum(s.words for s in run) < LABEL_MAX_WORDS:
                # A few words just before a heading ("CAREER CONNECTION") read as part of its title.
                headings.extend(sorted({s.block for s in run}))
                run = []
            flush()
            headings.append(idx)
            section = text
        elif block.kind == "caption":
            flush()
            meta = {"section": section, "kind": "caption"}
            label = caption_label(text)
            if label and label.startswith("Figure"):
                meta["figure"] = label
            elif label:
                meta["table"] = label
            emit(text, [idx], meta)
        else:
            for sentence in split_sentences(text):
                run.extend(_pieces(sentence, idx, max_words))
    flush()
    flush_headings()
    return out, section
