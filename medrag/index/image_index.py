"""A named image index: image vectors, caption vectors and the records that link them.

Folder layout (one folder per index under ``$MEDRAG_HOME/image-indexes``)::

    NAME/
      manifest.json   format, image-text embedder (name, fingerprint, dim), counts, modalities, sources
      records.jsonl   one image per line: id, file, case, caption, diagnosis, modality, plane ...
      images/         FaissIndex of image vectors (image -> image, text -> image search)
      captions/       FaissIndex of caption vectors from the same embedder's text side (text -> caption)

Both vector sets come from one ImageTextEmbedder, recorded with its fingerprint:
an index is never searched with another embedder. The folder is rewritten
atomically on save, as text indexes are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medrag.embed.base import EmbedderInfo
from medrag.errors import IndexCorrupt, IndexMismatch, IndexNotFound, InputError
from medrag.index.faiss_index import FaissIndex
from medrag.index.folders import IndexFolders, validate_index_name
from medrag.index.fusion import reciprocal_rank_fusion
from medrag.storage import (
    atomic_folder,
    read_json,
    read_jsonl,
    utc_now,
    write_json,
    write_jsonl,
)
from medrag.types import Citation, Evidence

FORMAT = "medrag.image-index"
FORMAT_VERSION = 1
# Record fields copied into both vector indexes, so searches can filter on them.
FILTER_FIELDS = ("case_id", "modality", "plane", "body_part", "source", "doc_id")


@dataclass
class ImageRecord:
    """One indexed image and what links it to its caption, case and file."""

    image_id: str
    path: str  # absolute path of the image file
    source: str  # the file name shown in citations
    doc_id: str  # the ingested source it came from (a folder listing or a single file)
    content_hash: str = ""
    caption: str = ""
    case_id: str | None = None
    title: str | None = None  # case title
    diagnosis: str | None = None
    modality: str = "unknown"  # xray | ct | mr | photo | unknown (medrag.vision.image.MODALITIES)
    modality_source: str = ""  # sidecar | dicom | guess | argument
    plane: str | None = None
    body_part: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def filter_metadata(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in FILTER_FIELDS if getattr(self, key) is not None}

    def search_text(self) -> str:
        """What the caption index embeds: the caption, else the case title and diagnosis."""
        return self.caption or ". ".join(v for v in (self.title, self.diagnosis) if v)


@dataclass
class ImageHit:
    record: ImageRecord
    score: float
    scores: dict[str, float] = field(default_factory=dict)  # image, caption, fused

    def evidence(self, index_name: str) -> Evidence:
        """The hit as citable evidence: case id, image path and caption."""
        r = self.record
        parts = []
        if r.case_id:
            parts.append(f"Case {r.case_id}" + (f" ({r.title})" if r.title else ""))
        kind = " ".join(v for v in (r.modality.upper() if r.modality != "unknown" else "", (r.plane or "").lower()) if v)
        parts.append(f"{kind} image {r.source}" if kind else f"image {r.source}")
        text = ", ".join(parts) + "."
        if r.caption:
            text += f" Caption: {r.caption}"
        if r.diagnosis:
            text += f" Diagnosis: {r.diagnosis}."
        locator = {"case_id": r.case_id, "image": r.path, "caption": r.caption, "modality": r.modality, "plane": r.plane,
                   "diagnosis": r.diagnosis, "index": index_name}
        citation = Citation(source=r.source, chunk_id=r.image_id, title=r.title or r.source, score=self.score,
                            locator={k: v for k, v in locator.items() if v})
        return Evidence(evidence_id=f"image:{r.image_id}", text=text, citation=citation, score=self.score, kind="figure",
                        scores=dict(self.scores))


class ImageIndex:
    """Images searchable by image (cosine of image vectors) and by text (image and caption vectors, fused)."""

    def __init__(self, name: str, embedder_info: EmbedderInfo, settings: dict[str, Any] | None = None) -> None:
        self.name = validate_index_name(name)
        self.embedder_info = embedder_info
        self.settings = dict(settings or {})
        self.images = FaissIndex(embedder_info.dim, embedder=embedder_info)
        self.captions = FaissIndex(embedder_info.dim, embedder=embedder_info)
        self.records: dict[str, ImageRecord] = {}
        self.created = self.updated = utc_now()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def modalities(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.records.values():
            counts[record.modality] = counts.get(record.modality, 0) + 1
        return dict(sorted(counts.items()))

    # -- changes -------------------------------------------------------------
    def add(self, records: Sequence[ImageRecord], image_vectors: np.ndarray, caption_vectors: np.ndarray | None = None) -> None:
        """Add (or replace, by image id) images; ``caption_vectors`` row i belongs to records[i]
        and is skipped for records without caption text."""
        records = list(records)
        if len(records) != len(image_vectors):
            raise InputError(f"{len(records)} image records but {len(image_vectors)} image vectors")
        if caption_vectors is not None and len(caption_vectors) != len(records):
            raise InputError(f"{len(records)} image records but {len(caption_vectors)} caption vectors")
        if not records:
            return
        ids = [r.image_id for r in records]
        if len(set(ids)) != len(ids):
            raise InputError("duplicate image ids in one batch")
        self.remove(ids)
        meta = [r.filter_metadata() for r in records]
        self.images.add(ids, image_vectors, meta)
        if caption_vectors is not None:
            keep = [i for i, r in enumerate(records) if r.search_text()]
            if keep:
                self.captions.add([ids[i] for i in keep], np.asarray(caption_vectors)[keep], [meta[i] for i in keep])
        for record in records:
            self.records[record.image_id] = record
        self.updated = utc_now()

    def remove(self, image_ids: Sequence[str]) -> int:
        present = [i for i in image_ids if i in self.records]
        if present:
            self.images.delete(present)
            self.captions.delete([i for i in present if i in self.captions])
            for image_id in present:
                del self.records[image_id]
            self.updated = utc_now()
        return len(present)

    def remove_doc(self, doc_id: str) -> int:
        return self.remove([i for i, r in self.records.items() if r.doc_id == doc_id])

    def has_content(self, content_hash: str) -> bool:
        return any(r.content_hash == content_hash for r in self.records.values())

    def check_embedder(self, info: EmbedderInfo) -> None:
        if info != self.embedder_info:
            have = self.embedder_info
            raise IndexMismatch(
                f"image index '{self.name}' was built with '{have.name}' (fingerprint {have.fingerprint}, dim {have.dim}) "
                f"but '{info.name}' (fingerprint {info.fingerprint}, dim {info.dim}) was given; search it with the "
                "embedder that built it, or ingest the images again into a new index"
            )

    # -- search --------------------------------------------------------------
    def search_by_image(self, vector: np.ndarray, k: int = 10, where: dict[str, Any] | None = None,
                        exclude: Sequence[str] = ()) -> list[ImageHit]:
        """Nearest images to one image vector; ``exclude`` drops ids (the query image itself)."""
        hits = self.images.search(vector, k + len(exclude), where=where)[0]
        out = [ImageHit(self.records[h.id], h.score, {"image": h.score}) for h in hits if h.id not in set(exclude)]
        return out[:k]

    def search_by_text(self, vector: np.ndarray, k: int = 10, where: dict[str, Any] | None = None) -> list[ImageHit]:
        """Images for one text-query vector: the image vectors (cross-modal) and the caption
        vectors (text to text) ranked separately and fused by reciprocal rank."""
        fetch = max(k * 3, 20)
        by_image = self.images.search(vector, fetch, where=where)[0]
        by_caption = self.captions.search(vector, fetch, where=where)[0] if len(self.captions) else []
        scores: dict[str, dict[str, float]] = {}
        for name, hits in (("image", by_image), ("caption", by_caption)):
            for h in hits:
                scores.setdefault(h.id, {})[name] = h.score
        fused = reciprocal_rank_fusion([[h.id for h in by_image], [h.id for h in by_caption]])[:k]
        return [ImageHit(self.records[i], score, {**scores[i], "fused": score}) for i, score in fused]

    # -- persistence ---------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        sources: dict[str, int] = {}
        for record in self.records.values():
            sources[record.doc_id] = sources.get(record.doc_id, 0) + 1
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "embedder": self.embedder_info.to_dict(),
            "settings": self.settings,
            "created": self.created,
            "updated": self.updated,
            "counts": {"images": len(self.records), "captions": len(self.captions), "cases": len({r.case_id for r in self.records.values() if r.case_id})},
            "modalities": self.modalities,
            "sources": sources,
        }

    def save(self, path: str | Path) -> None:
        with atomic_folder(Path(path)) as tmp:
            write_jsonl(tmp / "records.jsonl", (r.to_dict() for r in self.records.values()))
            self.images.save(tmp / "images")
            self.captions.save(tmp / "captions")
            write_json(tmp / "manifest.json", self.manifest())

    @classmethod
    def load(cls, path: str | Path, embedder_info: EmbedderInfo | None = None) -> "ImageIndex":
        path = Path(path)
        if not (path / "manifest.json").is_file():
            raise IndexNotFound(f"no image index at {path}")
        try:
            manifest = read_json(path / "manifest.json")
            stored = EmbedderInfo.from_dict(manifest["embedder"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexCorrupt(f"unreadable manifest {path / 'manifest.json'}: {exc}") from exc
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise IndexCorrupt(f"{path / 'manifest.json'} is not a {FORMAT} v{FORMAT_VERSION} manifest")
        index = cls(manifest["name"], stored, manifest.get("settings"))
        if embedder_info is not None:
            index.check_embedder(embedder_info)
        index.created, index.updated = manifest.get("created", ""), manifest.get("updated", "")
        try:
            index.images = FaissIndex.load(path / "images", embedder=stored)
            index.captions = FaissIndex.load(path / "captions", embedder=stored)
            index.records = {r["image_id"]: ImageRecord(**r) for r in read_jsonl(path / "records.jsonl")}
        except IndexNotFound as exc:
            raise IndexCorrupt(f"image index {path} is incomplete: {exc}") from exc
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise IndexCorrupt(f"unreadable records in {path}: {exc}; ingest the images again") from exc
        if len(index.records) != len(index.images) or any(i not in index.images for i in index.records):
            raise IndexCorrupt(f"image index {path} is inconsistent: {len(index.records)} records, {len(index.images)} vectors")
        return index


class ImageIndexStore(IndexFolders[ImageIndex]):
    """The named image indexes under one folder (``$MEDRAG_HOME/image-indexes``)."""

    index_class = ImageIndex
    what = "image index"
    create_hint = "medrag ingest IMAGE_FOLDER --index {name} --embedder dual-encoder:MODEL_DIR"

    @classmethod
    def for_settings(cls, settings) -> "ImageIndexStore":
        return cls(settings.home / "image-indexes")
