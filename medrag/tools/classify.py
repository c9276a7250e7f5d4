"""Classification tools: our own trained CNN and torchxrayvision chest X-ray models.

Both return class probabilities as cited "measurement" evidence naming the
model and its weights, and (unless saliency=false) a Grad-CAM heat map saved as
an overlay PNG whose peak region is offered as a box for zoom_region: the agent
can look again where the model looked (ViTAR "think twice").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medrag.errors import InputError, ModelUnavailable
from medrag.registry import tools
from medrag.tools.vision import IMAGE_INPUTS, ImageTool
from medrag.types import Citation, Evidence, ToolResult
from medrag.vision.image import MedicalImage
from medrag.vision.overlay import assets_dir, draw_heatmap, save_png

log = logging.getLogger(__name__)

CLASSIFIER_INPUTS: dict[str, dict[str, Any]] = {
    **IMAGE_INPUTS,
    "saliency": {"type": "boolean", "description": "also compute a Grad-CAM heat map, its overlay PNG and peak box (default true)"},
    "target": {"type": "string", "description": "label to explain with the heat map (default: the most probable one)"},
    "top_k": {"type": "integer", "description": "how many labels to name in the evidence text (default 5)"},
}


def _default_model(folder_name: str) -> Path:
    from medrag.config import load_settings

    return load_settings().models_dir / folder_name


class ClassifierTool(ImageTool):
    """Shared by classifiers: probabilities -> evidence; Grad-CAM -> overlay + peak box for zoom_region.

    Subclasses set ``self.backend`` in ``setup()``: an object with ``labels``,
    ``predict(image) -> {label: p}``, ``saliency(image, label) -> HxW map``,
    ``describe() -> {"model": ..., "weights": ..., ...}`` and ``multilabel``.
    """

    inputs = CLASSIFIER_INPUTS
    backend: Any = None

    def analyse(self, img: MedicalImage, saliency: bool = True, target: str | None = None, top_k: int = 5) -> ToolResult:
        from medrag.vision.saliency import peak_region

        info = self.backend.describe()
        probs = self.backend.predict(img)
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        shown = ranked[: max(1, int(top_k))]
        kind_text = "independent probabilities per finding (they need not sum to 1)" if self.backend.multilabel else "class probabilities"
        text = (f"{info['model']} on {img.name}: " + ", ".join(f"{label} {p:.2f}" for label, p in shown)
                + f" ({kind_text}; {info['summary']}). Model output, not a diagnosis.")
        cid = f"{self.name}:{img.name}"
        locator = {"tool": self.name, "modality": img.modality, "model": info["model"], "weights": info["weights"],
                   "weights_fingerprint": info.get("fingerprint"), "probabilities": {k: round(v, 4) for k, v in ranked}}
        citation = Citation(source=img.name, chunk_id=cid, title=f"{info['model']} (weights {Path(info['weights']).name}) on {img.name}",
                            score=float(ranked[0][1]), locator=locator)
        evidence = [Evidence(evidence_id=cid, text=text, citation=citation, score=float(ranked[0][1]), kind="measurement")]
        output: dict[str, Any] = {"image": img.source, "modality": img.modality, "model": info, "probabilities": dict(ranked),
                                  "top_label": ranked[0][0], "multilabel": self.backend.multilabel}
        if saliency in (True, "true", "True", 1, "1"):
            label = target or ranked[0][0]
            if label not in probs:
                raise InputError(f"{self.name}: target {label!r} is not one of the model's labels: {', '.join(probs)}")
            heat = self.backend.saliency(img, label)
            peak = peak_region(heat)
            overlay = save_png(draw_heatmap(img.display, heat, {f"peak {label}": peak}), assets_dir("overlays"),
                               f"{self.name}-{Path(img.name).stem}", label)
            if peak is None:
                where = f"Grad-CAM for '{label}' is flat (no region raised the score)"
            else:
                where = (f"Grad-CAM for '{label}' peaks in pixels x {peak[0]}-{peak[2]}, y {peak[1]}-{peak[3]} of the "
                         f"{img.width}x{img.height} image; zoom_region with box={list(peak)} looks closer")
            sal_id = f"{self.name}:{img.name}:saliency:{label}"
            evidence.append(Evidence(
                evidence_id=sal_id,
                text=f"{where}. Heat map overlay: {overlay}. It shows what raised this model's score, not where a lesion is.",
                citation=Citation(source=img.name, chunk_id=sal_id, title=f"Grad-CAM of {info['model']} on {img.name}",
                                  bbox=tuple(float(v) for v in peak) if peak else None, score=float(probs[label]),
                                  locator={"tool": self.name, "model": info["model"], "weights": info["weights"], "target": label,
                                           "overlay": str(overlay)}),
                score=float(probs[label]), kind="figure"))
            output["saliency"] = {"target": label, "method": "grad-cam", "peak_box": list(peak) if peak else None, "overlay": str(overlay)}
            output["overlay"] = str(overlay)
            if peak:
                output["next"] = {"tool": "zoom_region", "inputs": {"image": img.source, "box": list(peak), "units": "pixels"}}
        return ToolResult(tool=self.name, ok=True, evidence=evidence, output=output)


class _TrainedBackend:
    """Adapter from ImageClassifier to the backend shape ClassifierTool expects."""

    multilabel = False

    def __init__(self, classifier) -> None:
        self.classifier = classifier
        self.labels = classifier.labels

    def predict(self, image):
        return self.classifier.predict(image)

    def saliency(self, image, label):
        return self.classifier.saliency(image, label)

    def describe(self) -> dict:
        from medrag.models import fingerprint_path

        config = self.classifier.config
        held = config.get("metrics", {}).get("heldout") or {}
        if held.get("accuracy") is not None:
            summary = (f"small CNN trained by medrag on {config['data']['train_images']} images; held-out accuracy "
                       f"{held['accuracy']:.2f} vs majority baseline {held['majority_baseline']:.2f} on {held['n']} images")
        else:
            summary = f"small CNN trained by medrag on {config['data']['train_images']} images; no held-out evaluation recorded"
        return {"model": config.get("name") or self.classifier.folder.name, "weights": str(self.classifier.folder / config["weights"]),
                "fingerprint": fingerprint_path(str(self.classifier.folder)), "labels": list(config["labels"]), "summary": summary}


@tools.register("classify_image")
class ClassifyImage(ClassifierTool):
    name = "classify_image"
    description = (
        "Classify an image with a small CNN trained by `medrag train-classifier` (model=FOLDER; default "
        "$MEDRAG_HOME/models/medpix-modality, CT vs MR trained on MedPix slices). Returns class probabilities, "
        "a Grad-CAM heat map overlay and its peak box for zoom_region. It only knows the labels it was trained on "
        "(see the model's labels.txt) and the modalities recorded in its config; its accuracy is the held-out "
        "figure in the evidence, on data like its training set only. Not a diagnosis."
    )
    # Listed contract of the default model; the loaded model's config.json decides (see check).
    modalities = frozenset({"ct", "mr", "unknown"})

    def __init__(self, model: str | Path | None = None, device: str = "auto") -> None:
        super().__init__()
        from medrag.vision.classifier import ImageClassifier

        self.classifier = ImageClassifier(model or _default_model("medpix-modality"), device=device)
        if (self.classifier.folder / "config.json").is_file():
            try:  # the contract the agent plans with comes from the model (a small JSON read, not the weights)
                self._contract()
            except ModelUnavailable:
                pass  # reported when the tool is used

    def _contract(self) -> None:
        config = self.classifier.config
        self.modalities = frozenset(config.get("modalities") or ())
        self.body_regions = frozenset(config.get("body_regions") or ())

    def check(self, img: MedicalImage) -> None:
        self._contract()
        super().check(img)

    def setup(self) -> None:
        self.classifier.setup()
        self.backend = _TrainedBackend(self.classifier)
        self._ready = True


@tools.register("classify_chest_xray")
class ClassifyChestXray(ClassifierTool):
    name = "classify_chest_xray"
    description = (
        "Score 14-18 chest X-ray findings (atelectasis, cardiomegaly, effusion, pneumothorax, ...) with a "
        "torchxrayvision DenseNet or ResNet loaded from local weights (model=FILE or FOLDER, weights=NAME such as "
        "densenet121-res224-all, which sets the architecture and the pathology list). Returns one probability per "
        "finding, a Grad-CAM overlay and its peak box for zoom_region. Frontal adult chest films only; the "
        "probabilities are calibrated on the model's training datasets and are not diagnoses. Needs "
        'pip install "medrag[xray]".'
    )
    modalities = frozenset({"xray"})
    body_regions = frozenset({"chest"})

    def __init__(self, model: str | Path | None = None, weights: str | None = None, device: str = "auto") -> None:
        super().__init__()
        from medrag.vision.xrv import XrvClassifier

        self.classifier = XrvClassifier(model or _default_model("torchxrayvision"), weights=weights, device=device)

    def setup(self) -> None:
        self.classifier.setup()
        self.backend = self.classifier
        self._ready = True
