"""MedPix image-caption pairs and a split held apart by case."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from medrag.embed.train import ImageCaptionPair
from medrag.errors import InputError, SourceFileError
from medrag.storage import iter_json_lines


def describe(row: dict) -> str:
    """The caption, prefixed with modality, plane and location when known ("CT axial, Genitourinary: ...")."""
    head = " ".join(str(row[key]) for key in ("modality_type", "plane") if row.get(key))
    if row.get("location"):
        head = f"{head}, {row['location']}" if head else str(row["location"])
    caption = " ".join(str(row.get("caption") or "").split())
    return f"{head}: {caption}" if head else caption


def load_medpix_pairs(folder: str | Path, *, prefix: bool = True) -> list[ImageCaptionPair]:
    """Pairs of images.jsonl rows whose file is present and whose caption is not empty; group = case_id."""
    folder = Path(folder).expanduser()
    listing = folder / "images.jsonl"
    if not listing.is_file():
        raise SourceFileError(listing, "not found: pass the MedPix folder holding images.jsonl (e.g. ../shared/data/medpix)")
    pairs = []
    with listing.open(encoding="utf-8") as lines:
        for _, row in iter_json_lines(lines, listing):
            caption = " ".join(str(row.get("caption") or "").split())
            if not row.get("file") or not caption or caption.upper() == "N/A":
                continue
            path = folder / row["file"]
            if path.is_file():
                pairs.append(ImageCaptionPair(str(path), describe(row) if prefix else caption, str(row["case_id"])))
    if not pairs:
        raise InputError(f"{listing} lists no image with both a present file and a caption")
    return pairs


def split_by_group(pairs: Sequence[ImageCaptionPair], test_fraction: float = 0.2, seed: int = 0) -> tuple[list, list]:
    """(train, test): whole groups go to one side, chosen by a hash of seed and group id.

    A hash, not a shuffle, so a group stays on its side when pairs are added or removed.
    """
    if not 0 < test_fraction < 1:
        raise InputError(f"test fraction must be between 0 and 1, got {test_fraction}")

    def is_test(group: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction

    train = [p for p in pairs if not is_test(p.group_id)]
    test = [p for p in pairs if is_test(p.group_id)]
    return train, test
