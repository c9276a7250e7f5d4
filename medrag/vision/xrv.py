"""torchxrayvision chest X-ray classifiers (DenseNet-121, ResNet-50) from local weight files.

torchxrayvision names each set of weights (``densenet121-res224-all``,
``resnet50-res512-all`` ...); the name fixes the architecture, the input
resolution, the pathology list and the operating-point calibration. medrag
never downloads: ``model`` is the weight file as published on the
torchxrayvision release page (or the folder holding it, such as
``~/.torchxrayvision/models_data``), and torchxrayvision's own loader reads it
from that folder. Its release files are pickled PyTorch objects: load only files
from that release page or that you made yourself.

Preprocessing as torchxrayvision expects: grey levels scaled to [-1024, 1024],
one channel, shorter side resized to the model's resolution and centre-cropped.
Outputs are per-pathology probabilities after torchxrayvision's operating-point
normalisation (0.5 = the calibrated operating point); pathologies a set of
weights was not trained on (empty names) are left out.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from medrag.errors import InputError, ModelUnavailable, require
from medrag.models import fingerprint_path, pick_device

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "densenet121-res224-all"


def _xrv():
    return require("torchxrayvision", extra="xray", purpose="Chest X-ray classification with torchxrayvision")


def weight_file_name(weights: str) -> str:
    """The file name torchxrayvision's release URL gives the weights ``weights``."""
    urls = _xrv().models.model_urls
    if weights not in urls:
        known = sorted(k for k in urls if k.startswith(("densenet", "resnet")))
        raise ModelUnavailable(f"unknown torchxrayvision weights {weights!r}; known: {', '.join(known)}")
    return os.path.basename(urls[weights]["weights_url"])


def _guess_weights(folder: Path, file_name: str | None) -> str | None:
    """The weights name whose release file is ``file_name`` (or the only one present in ``folder``)."""
    urls = _xrv().models.model_urls
    # Prefer the long names (densenet121-res224-all) over their short aliases (all).
    names = sorted(urls, key=lambda k: (not k.startswith(("densenet", "resnet")), k))
    for name in names:
        base = os.path.basename(urls[name]["weights_url"])
        if (file_name and base == file_name) or (file_name is None and (folder / base).is_file()):
            return name
    return None


class XrvClassifier:
    """A torchxrayvision model from a local weight file; weights load on first use."""

    multilabel = True

    def __init__(self, model: str | Path, *, weights: str | None = None, device: str = "auto") -> None:
        self.path = Path(model).expanduser()
        self.weights_request = weights
        self.device_request = device
        self._model = None
        self._lock = threading.Lock()

    def _locate(self) -> tuple[Path, str]:
        """(folder, weights name), checking the file exists under the release file name."""
        if not self.path.exists():
            raise ModelUnavailable(
                f"no torchxrayvision weights at {self.path}. Download the weight file from the torchxrayvision release page "
                f"(for {DEFAULT_WEIGHTS}: {_xrv().models.model_urls[DEFAULT_WEIGHTS]['weights_url']}) on a machine with "
                "internet access and pass model=that file (or its folder)"
            )
        folder, file_name = (self.path.parent, self.path.name) if self.path.is_file() else (self.path, None)
        weights = self.weights_request or _guess_weights(folder, file_name)
        if weights is None:
            raise ModelUnavailable(f"cannot tell which torchxrayvision weights {self.path} holds: pass weights=NAME (e.g. {DEFAULT_WEIGHTS})")
        expected = weight_file_name(weights)
        if file_name is not None and file_name != expected:
            raise ModelUnavailable(f"torchxrayvision weights {weights!r} are loaded from a file named {expected}; {self.path} is named "
                                   f"{file_name}. Rename it (torchxrayvision finds weights by their release file name)")
        if not (folder / expected).is_file():
            raise ModelUnavailable(f"{folder} holds no {expected} (the file of torchxrayvision weights {weights!r})")
        return folder, weights

    def setup(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            xrv = _xrv()
            folder, weights = self._locate()
            try:
                # torchxrayvision's own loader; the file is present, so nothing is downloaded.
                if weights.startswith("resnet"):
                    model = xrv.models.ResNet(weights=weights, cache_dir=str(folder))
                else:
                    model = xrv.models.DenseNet(weights=weights, cache_dir=str(folder))
            except Exception as exc:
                raise ModelUnavailable(f"torchxrayvision could not load {folder / weight_file_name(weights)} as {weights!r}: {exc}") from exc
            self.weights = weights
            self.file = folder / weight_file_name(weights)
            self.resolution = int(xrv.models.model_urls[weights].get("input_resolution", 224))
            self.all_labels = list(model.pathologies)
            self._device = pick_device(self.device_request)
            self._model = model.to(self._device).eval()
            log.info("loaded torchxrayvision %s from %s on %s", weights, self.file, self._device)

    @property
    def labels(self) -> list[str]:
        self.setup()
        return [p for p in self.all_labels if p]

    def describe(self) -> dict:
        self.setup()
        return {"model": f"torchxrayvision {self.weights}", "weights": str(self.file), "fingerprint": fingerprint_path(str(self.file)),
                "labels": self.labels,
                "summary": f"{type(self._model).__name__} at {self.resolution}px, probabilities normalised so 0.5 is the calibrated operating point"}

    def _input(self, image):
        import torch

        from medrag.embed.image_text import resize_square
        from medrag.vision.classifier import image_to_gray, view_transform

        gray = image_to_gray(image)
        square = resize_square(gray, self.resolution)
        x = torch.from_numpy(((square * 2.0 - 1.0) * 1024.0).astype(np.float32))[None, None].to(self._device)
        return x, view_transform(gray.shape[0], gray.shape[1], self.resolution, self.resolution), gray.shape

    def predict(self, image) -> dict[str, float]:
        import torch

        self.setup()
        x, _, _ = self._input(image)
        with torch.no_grad():
            out = self._model(x)[0].cpu().numpy()
        return {label: float(p) for label, p in zip(self.all_labels, out) if label}

    def saliency(self, image, label: str) -> np.ndarray:
        from medrag.vision.saliency import grad_cam, to_image_space

        self.setup()
        if label not in self.labels:
            raise InputError(f"unknown pathology {label!r}; {self.weights} scores {', '.join(self.labels)}")
        layer = self._model.model.layer4 if hasattr(self._model, "model") else self._model.features
        x, transform, shape = self._input(image)
        cam = grad_cam(self._model, layer, x, self.all_labels.index(label))
        return to_image_space(cam, transform, shape, self.resolution)
