"""A small, honest modality guess for images without a DICOM tag or a caller's word.

Rules (measured on the shared data: chest X-ray PNG/JPEG vs MedPix CT/MR PNGs):
- colour (channels differ) -> "photo" (fundus, dermatology, endoscopy photographs);
- grey with a large near-black background (> 20% of pixels within 4% of the minimum)
  -> "unknown": that is the look of a CT or MR slice, and the two cannot be told
  apart from grey levels alone (about 80% of MedPix CT and 70% of MR slices fall here);
- other grey images -> "xray" (all chest radiographs in the shared data; 0-13% dark).

Limits: a grey crop of a photograph, a CT/MR slice with little background, a
scout view or an ultrasound will be called "xray"; colour-rendered radiology
(overlays, PET fusion) will be called "photo". Pass ``modality=`` (or use DICOM)
whenever the caller knows better.
"""

from __future__ import annotations

import numpy as np

DARK_BACKGROUND_FRACTION = 0.20
COLOUR_MEAN_DIFFERENCE = 6.0  # grey levels (0-255) between channels


def guess_modality(image) -> tuple[str, str]:
    """(modality, reason) for a MedicalImage loaded from PNG/JPEG/TIFF."""
    rgb = np.asarray(image.display, dtype=np.float32)
    spread = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])) / 2)
    if spread > COLOUR_MEAN_DIFFERENCE:
        return "photo", f"colour image (mean channel difference {spread:.1f} grey levels)"
    grey = rgb.mean(axis=2)
    low = grey.min() + 0.04 * 255
    dark = float(np.mean(grey <= low))
    if dark > DARK_BACKGROUND_FRACTION:
        return "unknown", f"grey with {dark:.0%} near-black background: looks cross-sectional (CT or MR), cannot tell which"
    return "xray", f"grey image without a large black background ({dark:.0%} near-black): radiograph-like"
