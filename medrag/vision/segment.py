"""Classical segmentation with scikit-image: no weights, no training, explainable thresholds.

What it can do: outline the dark, air-filled lung fields on a frontal chest
radiograph, and split a CT slice into air / fat / soft tissue / bone by
Hounsfield thresholds. What it cannot: see disease. Consolidation, effusion or
a large heart shrink the "lung field" mask because they are not dark; lateral
views, rotated or heavily collimated films and children break the assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, transform

from medrag.vision.image import MedicalImage

WORK_SIDE = 256  # segment at this size at most: fast on CPU, enough for area fractions
# Hounsfield thresholds (standard textbook ranges).
HU_BODY = -500.0  # above: tissue; the patient outline separates from outside air here
HU_FAT = (-190.0, -30.0)
HU_BONE = 300.0  # above: bone (and contrast, metal)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in original pixels, end exclusive


@dataclass
class Segmentation:
    masks: dict[str, np.ndarray]  # name -> bool HxW at the image's original size
    fractions: dict[str, float]  # name -> share of the image's pixels
    boxes: dict[str, Box | None]
    notes: list[str] = field(default_factory=list)


def mask_box(mask: np.ndarray) -> Box | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _summarise(masks: dict[str, np.ndarray], notes: list[str]) -> Segmentation:
    return Segmentation(
        masks=masks,
        fractions={k: float(m.mean()) for k, m in masks.items()},
        boxes={k: mask_box(m) for k, m in masks.items()},
        notes=notes,
    )


def segment_lungs(image: MedicalImage) -> Segmentation:
    """Lung fields on a frontal chest X-ray: the largest dark region on each side of the midline.

    Otsu threshold on the windowed image, opening, a border band removed (outside
    air above the shoulders and beside the chest), border-touching regions opened
    harder to cut them off outside air, then per half of the image the largest
    dark region whose centre lies in the central part of the film.
    """
    grey = np.asarray(image.display.convert("L"), dtype=np.float32) / 255.0
    h, w = grey.shape
    scale = min(1.0, WORK_SIDE / max(h, w))
    small = transform.resize(grey, (max(round(h * scale), 2), max(round(w * scale), 2)), anti_aliasing=True) if scale < 1 else grey
    sh, sw = small.shape
    radius = max(1, round(min(sh, sw) / 128))
    smooth = filters.gaussian(small, sigma=radius * 0.6)
    dark = smooth < filters.threshold_otsu(smooth)
    # Opening cuts thin dark bridges (trachea, soft tissue folds) between lungs and outside air.
    dark = ndi.binary_opening(dark, morphology.disk(radius))
    top, band = round(0.10 * sh), max(1, round(0.05 * min(sh, sw)))
    dark[:top] = dark[sh - band:] = False
    dark[:, :band] = dark[:, sw - band:] = False
    dark = ndi.binary_opening(dark, morphology.disk(radius))
    # First regions kept clear of the border band; a side still empty then takes a border-touching
    # region (lungs joined to outside air by a wide bridge), with a note saying so.
    strict, lenient = _split_from_border(dark, band, radius), measure.label(dark)
    picked: dict = {}
    notes = []
    for labels, relaxed in ((strict, False), (lenient, True)):
        for region in sorted(measure.regionprops(labels), key=lambda r: r.area, reverse=True):
            cy, cx = region.centroid
            if region.area < 0.01 * small.size or not (0.1 * sw < cx < 0.9 * sw and 0.2 * sh < cy < 0.8 * sh):
                continue
            # Image left is the patient's right on a standard PA/AP film.
            side = "right_lung" if cx < sw / 2 else "left_lung"
            if side not in picked:
                picked[side] = labels == region.label
                if relaxed:
                    notes.append(f"the {side.replace('_', ' ')} region touches the image border; its outline may include outside air")
    if len(picked) < 2:
        notes.append(f"found {len(picked)} lung-like region(s) instead of 2; the film may be rotated, lateral, or a lung opaque")
    masks = {name: _to_size(ndi.binary_fill_holes(m), (h, w)) for name, m in sorted(picked.items())}
    lungs = np.zeros((h, w), bool)
    for m in masks.values():
        lungs |= m
    masks = {"lungs": lungs, **masks}
    if lungs.mean() > 0.5:
        notes.append(f"lung fields cover {lungs.mean():.0%} of the image, implausibly much: is the image inverted or not a chest film?")
    return _summarise(masks, notes)


def segment_ct(image: MedicalImage) -> Segmentation:
    """Body, air inside the body, fat, soft tissue and bone on a CT slice in Hounsfield units.

    The body is the largest region above -500 HU with its holes filled, so air
    pockets that reach the image edge (the lungs of a tightly cropped slice)
    count as outside the body.
    """
    hu = image.pixels if image.pixels.ndim == 2 else image.pixels.mean(axis=2)
    tissue = hu > HU_BODY
    labels = measure.label(tissue)
    if labels.max() == 0:
        empty = np.zeros_like(tissue)
        return _summarise({"body": empty}, ["no tissue above -500 HU: is this a CT in Hounsfield units?"])
    # The patient is the largest connected tissue region; the table and clothes are smaller.
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    body = ndi.binary_fill_holes(labels == largest)
    masks = {
        "body": body,
        "air_in_body": body & (hu <= HU_BODY),  # lungs, bowel gas
        "fat": body & (hu >= HU_FAT[0]) & (hu <= HU_FAT[1]),
        "soft_tissue": body & (hu > HU_FAT[1]) & (hu < HU_BONE),
        "bone": body & (hu >= HU_BONE),
    }
    return _summarise(masks, [])


def _touches(mask: np.ndarray, band: int) -> bool:
    """Touches the side or bottom band (lung apices may reach the top, outside air reaches the sides)."""
    return bool(mask[:, : band + 1].any() or mask[:, -band - 1 :].any() or mask[-band - 1 :].any())


def _split_from_border(dark: np.ndarray, band: int, radius: int) -> np.ndarray:
    """Label dark regions; a region touching the border band is opened harder to cut it off outside air."""
    labels = measure.label(dark)
    out = np.zeros_like(labels)
    next_label = 1
    for region in measure.regionprops(labels):
        mask = labels == region.label
        if _touches(mask, band):
            opened = ndi.binary_opening(mask, morphology.disk(3 * radius))
            parts = measure.label(opened)
            pieces = [parts == i for i in range(1, parts.max() + 1)]
            pieces = [p for p in pieces if not _touches(p, band)]
        else:
            pieces = [mask]
        for piece in pieces:
            out[piece] = next_label
            next_label += 1
    return out


def _to_size(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask.astype(bool)
    return transform.resize(mask.astype(np.float32), shape, order=0, anti_aliasing=False) > 0.5
