"""Draw masks and boxes over an image and save the picture for the user to check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(255, 64, 64), (64, 160, 255), (64, 220, 96), (255, 200, 0), (200, 96, 255), (0, 220, 220)]


def draw_overlay(
    display: Image.Image,
    masks: dict[str, np.ndarray] | None = None,
    boxes: dict[str, tuple[int, int, int, int] | None] | None = None,
    *,
    alpha: float = 0.4,
) -> Image.Image:
    """Masks blended in colour, boxes outlined in the same colour and labelled with their name."""
    base = np.asarray(display.convert("RGB"), dtype=np.float32)
    colour_of = {}
    for i, name in enumerate(list(masks or {}) + [b for b in (boxes or {}) if b not in (masks or {})]):
        colour_of[name] = COLOURS[i % len(COLOURS)]
    for name, mask in (masks or {}).items():
        if mask.shape != base.shape[:2]:
            raise ValueError(f"mask {name!r} is {mask.shape}, image is {base.shape[:2]}")
        base[mask] = (1 - alpha) * base[mask] + alpha * np.array(colour_of[name], np.float32)
    out = Image.fromarray(base.round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(out)
    line = max(1, round(max(out.size) / 400))
    for name, box in (boxes or {}).items():
        if box is None:
            continue
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=colour_of[name], width=line)
        draw.text((box[0] + 2 * line, box[1] + 2 * line), name, fill=colour_of[name])
    return out


def save_png(image: Image.Image, folder: Path, stem: str, *parts: object) -> Path:
    """Save under ``folder`` with a name derived from the content, so reruns overwrite, not pile up."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(image.tobytes() + repr(parts).encode()).hexdigest()[:10]
    path = folder / f"{stem}-{digest}.png"
    image.save(path, format="PNG", compress_level=1)  # fast; overlays are for looking, not archiving
    return path


def assets_dir(kind: str) -> Path:
    """$MEDRAG_HOME/assets/<kind> (overlays, crops)."""
    from medrag.config import load_settings

    return load_settings().home / "assets" / kind


def draw_heatmap(
    display: Image.Image,
    heat: np.ndarray,
    boxes: dict[str, tuple[int, int, int, int] | None] | None = None,
    *,
    alpha: float = 0.5,
) -> Image.Image:
    """A [0, 1] heat map blended over the image in a blue-to-red ramp (stronger where hotter), boxes outlined."""
    base = np.asarray(display.convert("RGB"), dtype=np.float32)
    if heat.shape != base.shape[:2]:
        raise ValueError(f"heat map is {heat.shape}, image is {base.shape[:2]}")
    h = np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0)[..., None]
    # Ramp: blue (0) -> yellow (0.5) -> red (1); weight grows with heat so cold areas stay readable.
    colour = np.concatenate([np.clip(2 * h, 0, 1), np.clip(2 - 2 * h, 0, 1) * np.clip(2 * h, 0, 1), np.clip(1 - 2 * h, 0, 1)], axis=2) * 255
    weight = alpha * h
    blended = (1 - weight) * base + weight * colour
    return draw_overlay(Image.fromarray(blended.round().astype(np.uint8), "RGB"), None, boxes)
