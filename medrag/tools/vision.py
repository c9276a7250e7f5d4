"""Image tools for the agent: classical lung and CT segmentation, region zoom.

Every image tool declares the modalities and body regions it is valid for and
refuses other images with ModalityMismatch: a chest X-ray tool never measures a
CT slice (the MedRAX failure). No weights: scikit-image thresholds and morphology.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from medrag.errors import ToolError
from medrag.registry import tools
from medrag.tools.base import BaseTool
from medrag.types import Citation, Evidence, ToolResult
from medrag.vision.image import MODALITIES, MedicalImage, load_image, normalise_body_part
from medrag.vision.overlay import assets_dir, draw_overlay, save_png


class ModalityMismatch(ToolError):
    """An image of a modality (or body region) the tool is not valid for."""

    exit_code = 2


IMAGE_INPUTS: dict[str, dict[str, Any]] = {
    "image": {"type": "string", "required": True, "description": "path to a PNG/JPEG/TIFF/DICOM image (or a loaded MedicalImage)"},
    "modality": {"type": "string", "enum": list(MODALITIES), "description": "override the DICOM tag or the guess"},
    "body_part": {"type": "string", "description": "override the DICOM BodyPartExamined tag, e.g. chest"},
    "frame": {"type": "integer", "description": "frame of a multi-frame image (default 0)"},
    "window": {"type": "string", "description": "CT window preset: lung, soft_tissue, bone (display only)"},
}


class ImageTool(BaseTool):
    """Loads the image, enforces the modality/body-region contract, then calls ``analyse``."""

    modalities: ClassVar[frozenset[str]] = frozenset()
    body_regions: ClassVar[frozenset[str]] = frozenset()  # empty: any region

    def load(self, image: str | Path | MedicalImage, modality=None, body_part=None, frame: int = 0, window=None) -> MedicalImage:
        if isinstance(image, MedicalImage):
            if modality:
                image.modality = modality
            if body_part:
                image.body_part = normalise_body_part(body_part)
            return image
        return load_image(image, modality=modality, body_part=body_part, frame=int(frame or 0), window=window)

    def check(self, img: MedicalImage) -> None:
        """Raise ModalityMismatch when the image is not one this tool is valid for."""
        if img.modality not in self.modalities:
            how = img.metadata.get("modality_reason") or img.metadata.get("modality_source", "unknown source")
            raise ModalityMismatch(
                f"{self.name} accepts {', '.join(sorted(self.modalities))} images only; "
                f"{img.name} is detected as '{img.modality}' ({how}). Pass modality= if the detection is wrong."
            )
        if self.body_regions and img.body_part is not None and img.body_part not in self.body_regions:
            raise ModalityMismatch(
                f"{self.name} is for the {', '.join(sorted(self.body_regions))} region; {img.name} is labelled '{img.body_part}'"
            )

    def run(self, image, modality=None, body_part=None, frame: int = 0, window=None, **options: Any) -> ToolResult:
        img = self.load(image, modality, body_part, frame, window)
        self.check(img)
        return self.analyse(img, **options)

    def analyse(self, img: MedicalImage, **options: Any) -> ToolResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def _evidence(self, img: MedicalImage, text: str, *, kind: str = "measurement", bbox=None, **locator: Any) -> Evidence:
        cid = f"{self.name}:{img.name}"
        citation = Citation(
            source=img.name,
            chunk_id=cid,
            title=f"{self.name} on {img.name}",
            bbox=tuple(float(v) for v in bbox) if bbox is not None else None,
            score=1.0,
            locator={"tool": self.name, "modality": img.modality, **locator},
        )
        return Evidence(evidence_id=cid, text=text, citation=citation, score=1.0, kind=kind)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


@tools.register("segment_lungs_xray")
class SegmentLungsXray(ImageTool):
    name = "segment_lungs_xray"
    description = (
        "Outline the lung fields on a frontal (PA/AP) chest X-ray with classical thresholding (Otsu + morphology, "
        "no trained model) and report their area as a share of the image, per side, with boxes and an overlay PNG. "
        "It finds dark, air-filled lung; it does NOT detect disease: consolidation, effusion, collapse or a large heart "
        "make the fields look smaller, and lateral, rotated or paediatric films give wrong outlines. Check the overlay."
    )
    modalities = frozenset({"xray"})
    body_regions = frozenset({"chest"})
    inputs = dict(IMAGE_INPUTS)

    def analyse(self, img: MedicalImage) -> ToolResult:
        from medrag.vision.segment import segment_lungs

        seg = segment_lungs(img)
        overlay = save_png(draw_overlay(img.display, {k: v for k, v in seg.masks.items() if k != "lungs"}, seg.boxes), assets_dir("overlays"), f"{self.name}-{Path(img.name).stem}")
        f = seg.fractions
        text = f"Lung fields cover {_pct(f['lungs'])} of the image"
        if "right_lung" in f and "left_lung" in f:
            text += f"; patient's right {_pct(f['right_lung'])}, left {_pct(f['left_lung'])} (frontal view assumed: image left = patient's right)"
        text += ". Classical threshold segmentation, not a diagnosis."
        if seg.notes:
            text += " Caution: " + "; ".join(seg.notes) + "."
        ev = self._evidence(img, text, bbox=seg.boxes["lungs"], overlay=str(overlay), boxes=seg.boxes)
        output = {"image": img.source, "modality": img.modality, "size": [img.width, img.height], "fractions": f,
                  "boxes": seg.boxes, "notes": seg.notes, "overlay": str(overlay)}
        return ToolResult(tool=self.name, ok=True, evidence=[ev], output=output)


@tools.register("segment_ct_tissues")
class SegmentCtTissues(ImageTool):
    name = "segment_ct_tissues"
    description = (
        "Split a CT slice (DICOM in Hounsfield units) into body, air inside the body, fat, soft tissue and bone by "
        "fixed HU thresholds (-500, -190..-30, 300); reports area shares, boxes and an overlay PNG. "
        "Thresholds cannot tell organs apart, contrast or metal count as bone, air reaching the image edge (lungs of a "
        "cropped slice) counts as outside the body, and PNG/JPEG CT (display grey levels, not HU) is refused."
    )
    modalities = frozenset({"ct"})
    inputs = dict(IMAGE_INPUTS)

    def analyse(self, img: MedicalImage) -> ToolResult:
        from medrag.vision.segment import segment_ct

        if not img.metadata.get("hounsfield"):
            raise ToolError(f"{self.name} needs Hounsfield units (a CT DICOM with RescaleSlope/Intercept); {img.name} holds display grey levels")
        seg = segment_ct(img)
        f = seg.fractions
        body = f.get("body", 0.0)
        parts = [k for k in ("air_in_body", "fat", "soft_tissue", "bone") if k in f]
        of_body = {k: (f[k] / body if body else 0.0) for k in parts}
        overlay = save_png(draw_overlay(img.display, {k: seg.masks[k] for k in parts}, {"body": seg.boxes.get("body")}), assets_dir("overlays"), f"{self.name}-{Path(img.name).stem}")
        text = f"The body covers {_pct(body)} of the CT slice"
        if body:
            text += "; within it: " + ", ".join(f"{k.replace('_', ' ')} {_pct(v)}" for k, v in of_body.items())
        text += " (Hounsfield thresholds: air <= -500, fat -190..-30, bone >= 300)."
        if seg.notes:
            text += " Caution: " + "; ".join(seg.notes) + "."
        ev = self._evidence(img, text, bbox=seg.boxes.get("body"), overlay=str(overlay), boxes=seg.boxes)
        output = {"image": img.source, "modality": img.modality, "size": [img.width, img.height], "fractions": f,
                  "fractions_of_body": of_body, "boxes": seg.boxes, "notes": seg.notes, "overlay": str(overlay)}
        return ToolResult(tool=self.name, ok=True, evidence=[ev], output=output)


@tools.register("zoom_region")
class ZoomRegion(ImageTool):
    name = "zoom_region"
    description = (
        "Crop a region of any image (box in pixels or as 0..1 fractions of width/height), add a context margin, "
        "upscale it and save the crop as PNG, so a vision model or a person can look again at small findings "
        "('think twice'). It adds no information that is not in the image."
    )
    modalities = frozenset(MODALITIES)
    inputs = {
        **IMAGE_INPUTS,
        "box": {"type": "array", "required": True, "description": "[x0, y0, x1, y1]; pixels, or fractions when all values are <= 1"},
        "units": {"type": "string", "enum": ["auto", "pixels", "relative"], "description": "how to read box (default auto)"},
        "margin": {"type": "number", "description": "context added on each side, as a share of the box size (default 0.15)"},
        "min_side": {"type": "integer", "description": "upscale until the longer side has this many pixels (default 512, at most 8x)"},
    }

    def analyse(self, img: MedicalImage, box, units: str = "auto", margin: float = 0.15, min_side: int = 512) -> ToolResult:
        x0, y0, x1, y1 = _parse_box(box, self.name)
        if units not in ("auto", "pixels", "relative"):
            raise ToolError(f"{self.name}: units must be auto, pixels or relative, not {units!r}")
        if units == "relative" or (units == "auto" and max(x0, y0, x1, y1) <= 1.0):
            x0, x1, y0, y1 = x0 * img.width, x1 * img.width, y0 * img.height, y1 * img.height
        if not (x1 > x0 and y1 > y0):
            raise ToolError(f"{self.name}: box must have x1 > x0 and y1 > y0, got {[x0, y0, x1, y1]}")
        mx, my = float(margin) * (x1 - x0), float(margin) * (y1 - y0)
        crop = (max(0, int(x0 - mx)), max(0, int(y0 - my)), min(img.width, int(round(x1 + mx))), min(img.height, int(round(y1 + my))))
        if crop[2] - crop[0] < 1 or crop[3] - crop[1] < 1:
            raise ToolError(f"{self.name}: box {[x0, y0, x1, y1]} lies outside the {img.width}x{img.height} image")
        region = img.display.crop(crop)
        factor = max(1.0, min(8.0, int(min_side) / max(region.size)))
        size = (max(1, round(region.width * factor)), max(1, round(region.height * factor)))
        zoomed = region.resize(size, Image.LANCZOS) if factor > 1 else region
        path = save_png(zoomed, assets_dir("crops"), f"{self.name}-{Path(img.name).stem}", crop)
        text = (f"Zoomed crop of {img.name}: pixels x {crop[0]}-{crop[2]}, y {crop[1]}-{crop[3]} "
                f"(requested box plus {float(margin):.0%} margin), upscaled {factor:.1f}x to {size[0]}x{size[1]}; saved at {path}.")
        ev = self._evidence(img, text, kind="figure", bbox=crop, crop=str(path), boxes={"crop": crop})
        output = {"image": img.source, "modality": img.modality, "crop_box": list(crop), "scale": factor,
                  "size": list(size), "crop": str(path), "overlay": str(path)}
        return ToolResult(tool=self.name, ok=True, evidence=[ev], output=output)


def _parse_box(box, tool: str) -> tuple[float, float, float, float]:
    if isinstance(box, str):
        box = [v for v in box.replace("[", "").replace("]", "").replace(",", " ").split()]
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise ToolError(f"{tool}: box must be four numbers [x0, y0, x1, y1], got {box!r}") from None
    if len(values) != 4:
        raise ToolError(f"{tool}: box must be four numbers [x0, y0, x1, y1], got {len(values)}")
    return values[0], values[1], values[2], values[3]
