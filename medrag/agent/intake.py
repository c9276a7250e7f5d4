"""Intake: check the images a question comes with, and optionally scrub identifiers from its text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medrag.agent.state import ImageInput
from medrag.errors import InputError

MAX_IMAGES = 8

# De-identification by pattern: the identifiers that questions typed by clinicians
# actually carry. It is a safety net, not a certified de-identification method.
_DEID_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("[EMAIL]", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")),
    ("[PHONE]", re.compile(r"(?<!\w)(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s.-]\d{3,4}[\s.-]\d{3,4}(?!\w)")),
    ("[DATE]", re.compile(r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b")),
    (
        "[DATE]",
        re.compile(
            r"\b\d{1,2}\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{4}\b"
            r"|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2},?\s+\d{4}\b",
            re.IGNORECASE,
        ),
    ),
    ("[ID]", re.compile(r"\b(?:MRN|NHS|SSN|record|patient id|id|accession)\s*(?:no\.?|number|#|:)?\s*[:#]?\s*[A-Z0-9-]{4,}\b", re.IGNORECASE)),
    ("[NAME]", re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+[A-Z][a-zA-Z'-]+(?:\s+[A-Z][a-zA-Z'-]+)?")),
    ("[NAME]", re.compile(r"\b(?:patient|pt)\s+(?:named|called)\s+[A-Z][a-zA-Z'-]+(?:\s+[A-Z][a-zA-Z'-]+)?", re.IGNORECASE)),
]


def deidentify(text: str) -> tuple[str, list[str]]:
    """The text with names, dates, phone numbers, emails and record numbers replaced; and what was replaced (kinds)."""
    found: list[str] = []
    for label, pattern in _DEID_PATTERNS:
        text, n = pattern.subn(label, text)
        found.extend([label] * n)
    return text, found


def load_images(images: Sequence[Any] | None) -> list[ImageInput]:
    """Load each image once (PNG/JPEG/16-bit/DICOM) to check it and read its modality and body part.

    Accepts paths or ``{"path": ..., "modality": ..., "body_part": ...}`` dicts (a
    stated modality wins over detection). Bad files raise the loader's InputError
    before any tool runs.
    """
    if not images:
        return []
    from medrag.vision.image import load_image  # imported on first use: text-only questions never pay for it

    if isinstance(images, (str, Path, dict)):
        images = [images]
    if len(images) > MAX_IMAGES:
        raise InputError(f"at most {MAX_IMAGES} images per question, got {len(images)}")
    loaded: list[ImageInput] = []
    for item in images:
        spec = dict(item) if isinstance(item, dict) else {"path": item}
        path = spec.get("path")
        if not path:
            raise InputError(f"an image needs a path, got {item!r}")
        img = load_image(path, modality=spec.get("modality"), body_part=spec.get("body_part"))
        loaded.append(
            ImageInput(
                path=str(Path(path)),
                name=img.name,
                modality=img.modality,
                body_part=img.body_part,
                modality_reason=str(img.metadata.get("modality_reason") or img.metadata.get("modality_source") or ""),
                width=img.width,
                height=img.height,
            )
        )
    return loaded
