"""MONAI segmentation as an agent tool: masks, areas and boxes from a 2D network loaded from local weights."""

from __future__ import annotations

from pathlib import Path

from medrag.errors import ModelUnavailable
from medrag.registry import tools
from medrag.tools.vision import IMAGE_INPUTS, ImageTool
from medrag.types import ToolResult
from medrag.vision.image import MedicalImage
from medrag.vision.overlay import assets_dir, draw_overlay, save_png


@tools.register("segment_monai")
class SegmentMonai(ImageTool):
    name = "segment_monai"
    description = (
        "Segment an image with a 2D MONAI network or bundle loaded from local weights (model=FOLDER with "
        "configs/metadata.json, configs/inference.json and models/model.pt). Reports each output class's area as a "
        "share of the image, its box and an overlay PNG. The classes, the accepted modality and the quality are those "
        "of the bundle (its metadata.json); 3D bundles are refused (one 2D image in). Not a diagnosis. "
        'Needs pip install "medrag[monai]".'
    )
    # Listed contract; the loaded bundle's metadata.json decides (see check).
    modalities = frozenset({"ct", "mr", "xray"})
    inputs = dict(IMAGE_INPUTS)

    def __init__(self, model: str | Path | None = None, device: str = "auto") -> None:
        super().__init__()
        from medrag.config import load_settings
        from medrag.vision.monai_seg import MonaiSegmenter

        self.segmenter = MonaiSegmenter(model or load_settings().models_dir / "monai", device=device)
        if (self.segmenter.folder / "configs" / "metadata.json").is_file():
            try:  # the contract the agent plans with comes from the bundle (JSON only, not the weights)
                self.modalities = self.segmenter.modalities or self.modalities
            except ModelUnavailable:
                pass  # reported when the tool is used

    def check(self, img: MedicalImage) -> None:
        declared = self.segmenter.modalities  # metadata.json only, not the weights
        if declared:
            self.modalities = declared
        super().check(img)

    def setup(self) -> None:
        self.segmenter.setup()
        self._ready = True

    def analyse(self, img: MedicalImage) -> ToolResult:
        seg = self.segmenter.segment(img)
        info = self.segmenter.describe()
        overlay = save_png(draw_overlay(img.display, seg.masks, seg.boxes), assets_dir("overlays"), f"{self.name}-{Path(img.name).stem}", info["model"])
        found = {k: v for k, v in seg.fractions.items() if v > 0}
        parts = [f"{k} {100 * v:.1f}% of the image (box {list(seg.boxes[k])})" for k, v in sorted(found.items(), key=lambda kv: -kv[1])]
        text = (f"MONAI network {info['model']} (weights {Path(info['weights']).name}) on {img.name}: "
                + ("; ".join(parts) if parts else "no class other than background found")
                + ". Network output at the bundle's input size, resized back; not a diagnosis.")
        boxes = {k: v for k, v in seg.boxes.items() if v is not None}
        largest = max(found, key=found.get) if found else None
        ev = self._evidence(img, text, bbox=seg.boxes[largest] if largest else None, overlay=str(overlay), boxes=boxes,
                            model=info["model"], weights=info["weights"], weights_fingerprint=info["fingerprint"])
        ev.citation.title = f"{info['model']} (MONAI, weights {Path(info['weights']).name}) on {img.name}"
        output = {"image": img.source, "modality": img.modality, "size": [img.width, img.height], "model": info,
                  "fractions": seg.fractions, "boxes": seg.boxes, "overlay": str(overlay)}
        return ToolResult(tool=self.name, ok=True, evidence=[ev], output=output)
