"""Image ingestion: PNG/JPEG/TIFF folders with a JSONL sidecar, and DICOM files, into an image index.

Accepted sources:
- a folder holding ``images.jsonl`` (the MedPix layout): one row per image with ``file``
  (relative to the folder) and optionally ``image_id``, ``caption``, ``case_id``,
  ``modality_type``/``modality``, ``plane``, ``location``/``body_part``, ``title``,
  ``diagnosis``; a ``cases.jsonl`` beside it (``case_id``, ``title``, ``case_diagnosis``)
  adds the case title and diagnosis to each image;
- a folder of image files without a sidecar (each file its own record);
- single image or DICOM files.

Every image goes through ``medrag.vision.image.load_image`` (DICOM windowing, modality and
body part tags, size and corruption checks) and its windowed display picture is embedded, as
a query image is at search time. Nothing is written until every image has been read and
embedded; bad images stop the run (or are skipped and reported with ``skip_bad``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medrag.errors import InputError, MedragError, SourceFileError, failure_reason
from medrag.index.image_index import ImageIndex, ImageIndexStore, ImageRecord
from medrag.storage import iter_json_lines

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
SIDECAR = "images.jsonl"
CASES = "cases.jsonl"
# Sidecar modality words -> medrag.vision.image.MODALITIES.
MODALITY_WORDS = {"ct": "ct", "cta": "ct", "mr": "mr", "mri": "mr", "mra": "mr", "x-ray": "xray", "xray": "xray",
                  "radiograph": "xray", "cr": "xray", "dx": "xray", "xr": "xray", "photo": "photo", "photograph": "photo"}


def normalise_modality(value: Any) -> str | None:
    """'CT w/contrast (IV)' -> 'ct', 'MR - T2 weighted' -> 'mr', 'X-ray' -> 'xray'; None when unknown."""
    if not value:
        return None
    words = str(value).strip().lower().replace("/", " ").split()
    return MODALITY_WORDS.get(words[0]) if words else None


@dataclass
class ImageItem:
    """One image to ingest, with what its sidecar row (if any) says about it."""

    path: Path
    doc_id: str
    row: dict[str, Any] = field(default_factory=dict)
    case: dict[str, Any] = field(default_factory=dict)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_image_source(path: str | Path) -> bool:
    """A path `medrag ingest` should send here: an image file, or a folder with images.jsonl
    or with image files only (no documents)."""
    path = Path(path).expanduser()
    if path.is_file():
        return is_image_file(path)
    if not path.is_dir():
        return False
    if (path / SIDECAR).is_file():
        return True
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return any(is_image_file(p) for p in files) and all(is_image_file(p) or p.suffix.lower() in {".md", ".json"} for p in files)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [row for _, row in iter_json_lines(lines, path) if isinstance(row, dict)]


def collect_image_items(paths: Iterable[str | Path]) -> list[ImageItem]:
    items: list[ImageItem] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise SourceFileError(path, "file not found")
        if path.is_file():
            if not is_image_file(path):
                raise SourceFileError(path, f"not an image file ({', '.join(IMAGE_SUFFIXES)})")
            items.append(ImageItem(path.resolve(), doc_id=f"image:{path.name}"))
            continue
        doc_id = f"images:{path.resolve().name}"
        if (path / SIDECAR).is_file():
            cases = {str(c.get("case_id")): c for c in _read_jsonl(path / CASES)} if (path / CASES).is_file() else {}
            rows = [r for r in _read_jsonl(path / SIDECAR) if r.get("file")]
            if not rows:
                raise SourceFileError(path / SIDECAR, "lists no row with a 'file'")
            for row in rows:
                file = (path / str(row["file"])).resolve()
                if not file.is_relative_to(path.resolve()):
                    raise SourceFileError(path / SIDECAR, f"file {row['file']!r} lies outside the folder")
                items.append(ImageItem(file, doc_id, row, cases.get(str(row.get("case_id")), {})))
        else:
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise SourceFileError(path, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)}) and no {SIDECAR}")
            items.extend(ImageItem(p.resolve(), doc_id, {"image_id": str(p.relative_to(path).with_suffix(""))}) for p in found)
    if not items:
        raise InputError("no images to ingest")
    return items


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_item(item: ImageItem):
    """(ImageRecord, display image) of one item; bad files raise SourceFileError."""
    from medrag.vision.image import load_image

    if not item.path.is_file():
        raise SourceFileError(item.path, "listed in the sidecar but not found")
    row, case = item.row, item.case
    sidecar_modality = normalise_modality(row.get("modality_type") or row.get("modality"))
    try:
        image = load_image(item.path, modality=sidecar_modality)
    except InputError as exc:
        raise SourceFileError(item.path, str(exc).removeprefix(f"{item.path}: ")) from None
    caption = " ".join(str(row.get("caption") or "").split())
    if caption.upper() == "N/A":
        caption = ""
    record = ImageRecord(
        image_id=str(row.get("image_id") or item.path.stem),
        path=str(item.path),
        source=item.path.name,
        doc_id=item.doc_id,
        content_hash=file_sha256(item.path),
        caption=caption,
        case_id=str(row["case_id"]) if row.get("case_id") else None,
        title=row.get("title") or case.get("title"),
        diagnosis=row.get("diagnosis") or case.get("case_diagnosis"),
        modality=image.modality,
        modality_source="sidecar" if sidecar_modality else image.metadata.get("modality_source", ""),
        plane=row.get("plane") or None,
        body_part=row.get("body_part") or row.get("location") or image.body_part,
        extra={k: row[k] for k in ("modality", "location_category", "age", "sex") if row.get(k)},
    )
    return record, image.display


def ingest_images(
    paths: Iterable[str | Path],
    *,
    index_name: str,
    embedder,
    settings,
    skip_bad: bool = False,
    progress: bool | None = None,
    batch_size: int = 32,
):
    """Read, embed and add images to the named image index, then save it atomically.

    ``embedder`` must embed images (an ImageTextEmbedder: dual-encoder:, clip:, siglip:, open_clip:).
    Returns an IngestReport (counts are images).
    """
    from medrag.ingest.pipeline import IngestReport

    store = ImageIndexStore.for_settings(settings)
    if not hasattr(embedder, "embed_images") and store.exists(index_name):
        # Adding to an existing image index: its manifest names the embedder that built it.
        from medrag.embed.image_text import make_image_embedder

        embedder = make_image_embedder(store.info(index_name)["embedder"]["name"], device=getattr(settings, "device", "auto"))
    if not hasattr(embedder, "embed_images"):
        raise InputError(
            f"images need an image-text embedder, and '{getattr(embedder, 'name', embedder)}' embeds texts only: "
            "pass --embedder dual-encoder:MODEL_DIR (train one with medrag train-retriever), clip:DIR, siglip:DIR "
            "or open_clip:MODEL@CHECKPOINT"
        )
    started = time.perf_counter()
    show = settings.progress if progress is None else progress
    info = embedder.info()
    index = store.open(index_name, info) if store.exists(index_name) else ImageIndex(index_name, info)
    report = IngestReport(index=index.name)
    items = collect_image_items(paths)
    known = {(r.image_id, r.content_hash) for r in index.records.values()}

    records: list[ImageRecord] = []
    image_parts, caption_parts = [], []
    batch_records, batch_images = [], []

    def flush() -> None:
        if not batch_records:
            return
        image_parts.append(embedder.embed_images(batch_images))
        texts = [r.search_text() or r.source for r in batch_records]  # rows without text are dropped by ImageIndex.add
        caption_parts.append(embedder.embed_texts(texts))
        records.extend(batch_records)
        batch_records.clear()
        batch_images.clear()

    for item in tqdm(items, desc="images", unit="image", disable=not show):
        try:
            record, display = read_item(item)
        except MedragError as exc:
            if not skip_bad:
                raise
            log.warning("skipping %s: %s", item.path, failure_reason(exc))
            report.failed.append((str(item.path), failure_reason(exc)))
            continue
        if (record.image_id, record.content_hash) in known:
            report.unchanged.append(record.source)
            continue
        (report.replaced if record.image_id in index.records else report.added).append(record.source)
        batch_records.append(record)
        batch_images.append(display)
        if len(batch_records) >= batch_size:
            flush()
    flush()

    if records:
        index.add(records, np.concatenate(image_parts), np.concatenate(caption_parts))
        index.settings.setdefault("embedder_spec", getattr(embedder, "name", info.name))
        store.save(index)
    elif not store.exists(index.name):
        reasons = "; ".join(f"{p}: {r}" for p, r in report.failed) or "no readable images"
        raise InputError(f"nothing was ingested, so image index '{index.name}' was not created ({reasons})")
    report.chunks_added = len(records)
    report.total_chunks = len(index)
    report.seconds = time.perf_counter() - started
    return report


def split_image_paths(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(image sources, other sources) of what `medrag ingest` was given."""
    images, others = [], []
    for raw in paths:
        (images if is_image_source(raw) else others).append(Path(raw))
    return images, others
