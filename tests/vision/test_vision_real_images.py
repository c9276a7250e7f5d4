"""The vision tools on the real images in ../shared/data (measured figures in the asserts' comments)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrag.tools.vision import SegmentCtTissues, SegmentLungsXray, ZoomRegion
from medrag.vision import load_image

pytestmark = pytest.mark.data

XRAY = "images/torchxrayvision_tests"
SIIM = f"{XRAY}/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
# Measured lung-field shares (2026-11): 0.11 (tb0007) .. 0.26 (00000001).
CHEST_FILMS = [
    f"{XRAY}/00000001_000.png",
    f"{XRAY}/00027426_000.png",
    f"{XRAY}/16747_3_1.jpg",
    f"{XRAY}/covid-19-pneumonia-58-prior.jpg",
    f"{XRAY}/tbx11k/imgs/health/h0001.png",
    f"{XRAY}/tbx11k/imgs/tb/tb0005.png",
    f"{XRAY}/tbx11k/imgs/tb/tb0007.png",
    SIIM,
    "images/pydicom_data/RG1_UNCR.dcm",
]


@pytest.fixture
def home(tmp_path: Path, clean_env) -> Path:
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("rel", CHEST_FILMS, ids=lambda r: Path(r).name[:24])
def test_lung_fields_on_chest_films_are_plausible(shared_data: Path, home: Path, rel: str):
    result = SegmentLungsXray()(image=str(shared_data / rel))
    assert result.ok, result.error
    f = result.output["fractions"]
    assert 0.10 <= f["lungs"] <= 0.40, f
    assert 0.03 <= f["right_lung"] <= 0.25 and 0.03 <= f["left_lung"] <= 0.25, f
    assert Path(result.output["overlay"]).is_file()


def test_ct_small_body_mask_is_plausible(shared_data: Path, home: Path):
    img = load_image(shared_data / "images/pydicom/CT_small.dcm")
    assert img.modality == "ct" and img.metadata["hounsfield"]
    assert -1000 < img.pixels.min() < -800  # lung in HU after RescaleIntercept -1024 (the slice is cropped: no outside air)
    result = SegmentCtTissues()(image=img)
    assert result.ok, result.error
    f, of_body = result.output["fractions"], result.output["fractions_of_body"]
    # Measured: body 0.78 of the slice; bone 0.08, soft tissue 0.66, fat 0.25 of the body. The lungs of this
    # cropped slice reach the image edge, so they count as outside the body (documented limit): air_in_body 0.
    assert 0.6 < f["body"] < 0.95
    assert 0.03 < of_body["bone"] < 0.15 and 0.4 < of_body["soft_tissue"] < 0.85
    assert result.evidence[0].citation.source == "CT_small.dcm"


def test_monochrome1_variant_is_the_inverse_of_its_original(shared_data: Path):
    """Fake_MONOHR1.dcm stores exactly the SIIM file's pixels with the tag changed to MONOCHROME1.

    A reader that honours MONOCHROME1 must therefore show it as the negative of the
    original (torchxrayvision's own test expects the sign inverted); the real
    MONOCHROME1 film RG1_UNCR.dcm, inverted, gives normal-looking lungs (test above).
    """
    original = load_image(shared_data / SIIM)
    variant = load_image(shared_data / f"{XRAY}/Fake_MONOHR1.dcm")
    assert variant.metadata["photometric"] == "MONOCHROME1" and variant.metadata["inverted"]
    assert original.metadata["photometric"] == "MONOCHROME2" and not original.metadata["inverted"]
    r = np.corrcoef(original.pixels.ravel(), variant.pixels.ravel())[0, 1]
    assert r < -0.99
    # Undo the inversion and it is the original, pixel for pixel.
    restored = variant.pixels.max() + variant.pixels.min() - variant.pixels
    assert np.corrcoef(original.pixels.ravel(), restored.ravel())[0, 1] > 0.99
    # And the lung tool flags the negative instead of reporting a plausible number.
    result = SegmentLungsXray()(image=variant)
    assert result.ok and "implausibly" in result.evidence[0].text


def test_modality_contract_on_real_images(shared_data: Path, home: Path):
    d = shared_data / "images"
    lung, ct = SegmentLungsXray(), SegmentCtTissues()
    cases = [
        (lung, d / "pydicom/CT_small.dcm", "'ct'"),
        (lung, d / "pydicom/MR_small.dcm", "'mr'"),
        (lung, d / "skimage/retina.jpg", "'photo'"),
        (lung, d / "pydicom_data/RG3_UNCR.dcm", "'extremity'"),
        (ct, d / "pydicom/MR_small.dcm", "'mr'"),
        (ct, d / f"../{SIIM}", "'xray'"),
    ]
    for tool, path, detected in cases:
        result = tool(image=str(path))
        assert not result.ok and result.error.startswith("ModalityMismatch"), (tool.name, path.name)
        assert detected in result.error


def test_medpix_slices_are_mostly_not_guessed_xray(shared_data: Path):
    """Measured on all 763 MedPix PNGs: 83% of CT and 65% of MR slices are 'unknown', none 'xray' by tag."""
    rows = [json.loads(line) for line in (shared_data / "medpix/images.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("file")][:100]
    guesses = [load_image(shared_data / "medpix" / r["file"]).modality for r in rows]
    assert guesses.count("xray") / len(guesses) < 0.4
    assert guesses.count("unknown") / len(guesses) > 0.5


def test_zoom_on_real_film(shared_data: Path, home: Path):
    result = ZoomRegion()(image=str(shared_data / CHEST_FILMS[0]), box=[0.1, 0.2, 0.5, 0.6], margin=0.0)
    assert result.ok, result.error
    assert result.output["crop_box"] == [51, 102, 256, 307]
    crop = Image.open(result.output["crop"])
    assert crop.size == tuple(result.output["size"]) and max(crop.size) == 512
