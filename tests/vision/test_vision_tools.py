"""Image tools on synthetic images: measurements, citations, overlays, the modality contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrag.registry import tools
from medrag.tools.base import Tool
from medrag.tools.vision import ImageTool, ModalityMismatch, SegmentCtTissues, SegmentLungsXray, ZoomRegion
from medrag.vision import load_image
from medrag.vision.overlay import draw_overlay
from medrag.vision.segment import mask_box, segment_ct, segment_lungs
from vision_samples import write_chest_png, write_ct_dicom, write_dicom


@pytest.fixture
def home(tmp_path: Path, clean_env) -> Path:
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_tools_registered_with_contracts():
    for name, cls in [("segment_lungs_xray", SegmentLungsXray), ("segment_ct_tissues", SegmentCtTissues), ("zoom_region", ZoomRegion)]:
        assert tools.get(name) is cls
        tool = cls()
        assert isinstance(tool, Tool) and tool.modalities and tool.description and tool.inputs["image"]["required"]
    assert SegmentLungsXray.modalities == {"xray"} and SegmentLungsXray.body_regions == {"chest"}
    assert SegmentCtTissues.modalities == {"ct"}
    assert "does NOT detect disease" in SegmentLungsXray.description


def test_segment_lungs_on_cartoon_film(tmp_path: Path):
    path, truth = write_chest_png(tmp_path / "cxr.png")
    seg = segment_lungs(load_image(path))
    assert not seg.notes
    for side in ("right_lung", "left_lung"):
        found, true = seg.masks[side], truth[side]
        dice = 2 * (found & true).sum() / (found.sum() + true.sum())
        assert dice > 0.85, (side, dice)
    assert seg.fractions["lungs"] == pytest.approx(seg.fractions["right_lung"] + seg.fractions["left_lung"])
    x0, _, x1, _ = seg.boxes["right_lung"]
    assert x1 <= 128  # patient's right is on the image's left


def test_lung_tool_result_evidence_and_overlay(tmp_path: Path, home: Path):
    path, _ = write_chest_png(tmp_path / "cxr.png")
    result = SegmentLungsXray()(image=str(path))
    assert result.ok, result.error
    (ev,) = result.evidence
    assert ev.kind == "measurement" and ev.text.startswith("Lung fields cover ")
    assert "patient's right" in ev.text and "%" in ev.text
    c = ev.citation
    assert c.source == "cxr.png" and c.chunk_id == "segment_lungs_xray:cxr.png"
    assert c.locator["tool"] == "segment_lungs_xray" and set(c.locator["boxes"]) == {"lungs", "right_lung", "left_lung"}
    overlay = Path(result.output["overlay"])
    assert overlay.is_file() and overlay.parent == home / "assets" / "overlays" and c.locator["overlay"] == str(overlay)
    assert Image.open(overlay).size == (256, 256)
    assert 0.1 < result.output["fractions"]["lungs"] < 0.3


def test_segment_ct_phantom(tmp_path: Path, home: Path):
    path, truth = write_ct_dicom(tmp_path / "ct.dcm")
    seg = segment_ct(load_image(path))
    assert (seg.masks["body"] == truth["body"]).mean() > 0.99
    assert seg.masks["bone"].sum() == truth["bone"].sum()
    assert seg.fractions["air_in_body"] == pytest.approx(truth["air_in_body"].mean(), abs=0.005)
    result = SegmentCtTissues()(image=str(path))
    assert result.ok, result.error
    text = result.evidence[0].text
    assert text.startswith("The body covers ") and "bone" in text and "Hounsfield" in text
    assert Path(result.output["overlay"]).is_file()
    assert tuple(result.output["boxes"]["bone"]) == mask_box(truth["bone"])


def test_modality_contract_refuses_other_modalities(tmp_path: Path, home: Path):
    ct, _ = write_ct_dicom(tmp_path / "ct.dcm")
    result = SegmentLungsXray()(image=str(ct))
    assert not result.ok and result.error.startswith("ModalityMismatch: ")
    assert "accepts xray images only" in result.error and "'ct'" in result.error
    with pytest.raises(ModalityMismatch):
        SegmentLungsXray().check(load_image(ct))
    cxr, _ = write_chest_png(tmp_path / "cxr.png")
    result = SegmentCtTissues()(image=str(cxr))
    assert not result.ok and "accepts ct images only" in result.error and "'xray'" in result.error
    # Body region: an X-ray of the leg is not a chest film.
    leg = write_dicom(tmp_path / "leg.dcm", np.arange(4096, dtype=np.uint16).reshape(64, 64), modality="CR", slope=None, body_part="EXTREMITY")
    result = SegmentLungsXray()(image=str(leg))
    assert not result.ok and "chest region" in result.error and "'extremity'" in result.error
    # A caller's modality= overrides the guess; the CT tool still needs Hounsfield units.
    result = SegmentCtTissues()(image=str(cxr), modality="ct")
    assert not result.ok and "Hounsfield" in result.error
    assert not SegmentLungsXray()(image=str(tmp_path / "missing.png")).ok


def test_zoom_relative_and_pixel_boxes(tmp_path: Path, home: Path):
    path, _ = write_chest_png(tmp_path / "cxr.png")
    zoom = ZoomRegion()
    result = zoom(image=str(path), box=[0.25, 0.25, 0.5, 0.5], margin=0.0)
    assert result.ok, result.error
    assert result.output["crop_box"] == [64, 64, 128, 128] and result.output["size"] == [512, 512]
    crop = Path(result.output["crop"])
    assert crop.parent == home / "assets" / "crops" and Image.open(crop).size == (512, 512)
    assert result.evidence[0].citation.locator["crop"] == str(crop)
    # Pixel box with margin, clipped at the image edge; upscaling capped at 8x.
    result = zoom(image=str(path), box="0,0,20,10", margin=0.5)
    assert result.output["crop_box"] == [0, 0, 30, 15] and result.output["scale"] == 8.0
    assert Image.open(result.output["crop"]).size == (240, 120)
    for bad in ([1, 2, 3], [50, 50, 10, 10], "a,b,c,d", [300, 300, 400, 400]):
        r = zoom(image=str(path), box=bad)
        assert not r.ok and r.error.startswith("ToolError"), bad
    assert not zoom(image=str(path)).ok  # box missing


def test_tools_accept_a_loaded_image(tmp_path: Path, home: Path):
    path, _ = write_chest_png(tmp_path / "cxr.png")
    img = load_image(path)
    assert SegmentLungsXray()(image=img).ok
    assert isinstance(SegmentLungsXray(), ImageTool)


def test_draw_overlay_colours_masks_and_checks_shape():
    base = Image.new("RGB", (20, 10), (0, 0, 0))
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:8] = True
    out = np.asarray(draw_overlay(base, {"a": mask}, {"a": (3, 2, 8, 5)}))
    assert out[3, 5].sum() > 0 and out[8, 15].sum() == 0
    with pytest.raises(ValueError):
        draw_overlay(base, {"a": np.zeros((5, 5), bool)})
