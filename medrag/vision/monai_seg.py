"""MONAI segmentation networks and bundles from local weights, run on one 2D image.

A MONAI bundle is a folder::

    configs/metadata.json    network_data_format: input modality, channels, spatial shape; output channel_def (class names)
    configs/inference.json   network_def: {"_target_": "UNet", ...} (or .yaml)
    models/model.pt          the network's state_dict (or model.safetensors)

``MonaiSegmenter`` builds ``network_def`` with MONAI's ConfigParser, loads the
state dict (``weights_only=True``: no pickled code runs), resizes the image to
the network's spatial shape, and returns one mask per output class at the
image's size. Intensities: CT in Hounsfield units is scaled with the bundle's
ScaleIntensityRanged a_min/a_max when its preprocessing has one; anything else
uses the display grey levels in [0, 1]. Only 2D networks: a 3D bundle (most
published ones) needs a volume, which medrag's image tools do not take.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medrag.errors import InputError, ModelUnavailable, require
from medrag.models import fingerprint_path, pick_device
from medrag.vision.segment import Segmentation, _summarise

log = logging.getLogger(__name__)

MONAI_MODALITIES = {"CT": "ct", "MR": "mr", "MRI": "mr", "XR": "xray", "CR": "xray", "DX": "xray", "X-RAY": "xray", "XRAY": "xray"}
WEIGHT_FILES = ("model.safetensors", "model.pt")


def _read_config(path: Path) -> dict:
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot read {path}: {exc}") from exc


def _find_intensity_range(node: Any) -> tuple[float, float, float, float] | None:
    """a_min, a_max, b_min, b_max of the first ScaleIntensityRange(d) in a preprocessing config."""
    if isinstance(node, dict):
        if "ScaleIntensityRange" in str(node.get("_target_", "")) and "a_min" in node and "a_max" in node:
            try:
                return float(node["a_min"]), float(node["a_max"]), float(node.get("b_min", 0.0)), float(node.get("b_max", 1.0))
            except (TypeError, ValueError):
                return None
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _find_intensity_range(child)
        if found:
            return found
    return None


class MonaiSegmenter:
    """A MONAI bundle folder; metadata is read on demand, the network on first use."""

    def __init__(self, folder: str | Path, *, device: str = "auto") -> None:
        self.folder = Path(folder).expanduser()
        self.device_request = device
        self._metadata: dict | None = None
        self._model = None
        self._device: str | None = None
        self._lock = threading.Lock()

    # --- contract (cheap: JSON only) ---
    @property
    def metadata(self) -> dict:
        if self._metadata is None:
            path = self.folder / "configs" / "metadata.json"
            if not path.is_file():
                raise ModelUnavailable(
                    f"no MONAI bundle at {self.folder} (configs/metadata.json missing). Pass model=FOLDER holding "
                    "configs/metadata.json, configs/inference.json (network_def) and models/model.pt"
                )
            self._metadata = _read_config(path)
        return self._metadata

    def _format(self, side: str, key: str) -> dict:
        return ((self.metadata.get("network_data_format") or {}).get(side) or {}).get(key) or {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.folder.name)

    @property
    def modalities(self) -> frozenset[str]:
        raw = str(self._format("inputs", "image").get("modality", "")).upper()
        found = {MONAI_MODALITIES[m.strip()] for m in raw.replace("/", ",").split(",") if m.strip() in MONAI_MODALITIES}
        return frozenset(found)

    @property
    def labels(self) -> list[str]:
        channels = self._format("outputs", "pred").get("channel_def") or {}
        if channels:
            return [str(channels[k]) for k in sorted(channels, key=lambda k: int(k))]
        n = int(self._format("outputs", "pred").get("num_channels", 2))
        return ["background"] + [f"class_{i}" for i in range(1, n)]

    @property
    def weights_path(self) -> Path:
        for name in WEIGHT_FILES:
            if (self.folder / "models" / name).is_file():
                return self.folder / "models" / name
        raise ModelUnavailable(f"{self.folder}/models holds none of {', '.join(WEIGHT_FILES)} (TorchScript .ts files are not loaded)")

    # --- weights ---
    def _inference_config(self) -> Path:
        for name in ("inference.json", "inference.yaml", "inference.yml"):
            if (self.folder / "configs" / name).is_file():
                return self.folder / "configs" / name
        raise ModelUnavailable(f"{self.folder}/configs holds no inference.json or inference.yaml with a network_def")

    def setup(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            bundle = require("monai.bundle", package="monai", extra="monai", purpose="Running MONAI networks")
            import torch

            self.metadata  # noqa: B018  (a missing bundle is named first)
            path = self._inference_config()
            parser = bundle.ConfigParser()
            parser.read_config(str(path))
            if "network_def" not in parser.get():
                raise ModelUnavailable(f"{path} has no network_def")
            try:
                network = parser.get_parsed_content("network_def")
            except Exception as exc:
                raise ModelUnavailable(f"cannot build network_def of {path}: {exc}") from exc
            self._intensity = _find_intensity_range(parser.get())
            weights = self.weights_path
            try:
                if weights.suffix == ".safetensors":
                    from safetensors.torch import load_file

                    state = load_file(str(weights))
                else:
                    state = torch.load(weights, map_location="cpu", weights_only=True)
                if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                    state = state["model"]  # checkpoints saved as {"model": state_dict, ...}
                network.load_state_dict(state)
            except Exception as exc:
                raise ModelUnavailable(f"cannot load {weights} into the network of {path}: {exc}") from exc
            self._spatial_dims = int(getattr(network, "dimensions", None) or getattr(network, "spatial_dims", None) or 2)
            if self._spatial_dims != 2:
                raise ModelUnavailable(f"{self.name} is a {self._spatial_dims}D network; medrag's image tools give it one 2D image. Use a 2D bundle")
            self._device = pick_device(self.device_request)
            self._model = network.to(self._device).eval()
            log.info("loaded MONAI network %s from %s on %s", self.name, weights, self._device)

    def describe(self) -> dict:
        return {"model": self.name, "weights": str(self.weights_path), "fingerprint": fingerprint_path(str(self.folder)),
                "version": self.metadata.get("version"), "labels": self.labels}

    # --- inference ---
    def _input(self, image) -> np.ndarray:
        """(C, H, W) float32 network input at the image's own size."""
        channels = int(self._format("inputs", "image").get("num_channels", 1))
        if image.metadata.get("hounsfield") and self._intensity and image.is_grey:
            a_min, a_max, b_min, b_max = self._intensity
            x = (np.clip(image.pixels, a_min, a_max) - a_min) / (a_max - a_min) * (b_max - b_min) + b_min
            x = x.astype(np.float32)[None]
        else:
            rgb = np.asarray(image.display, dtype=np.float32) / 255.0
            x = rgb.mean(axis=2)[None] if channels == 1 else np.moveaxis(rgb, 2, 0)
        if x.shape[0] != channels:
            raise InputError(f"{self.name} takes {channels}-channel input; the image gives {x.shape[0]}")
        return x

    def segment(self, image) -> Segmentation:
        """One mask per non-background class at the image's size (argmax over the output channels)."""
        import torch

        self.setup()
        x = self._input(image)
        shape = self._format("inputs", "image").get("spatial_shape") or [256, 256]
        try:
            side = [int(v) for v in shape][:2]
        except (TypeError, ValueError):  # symbolic shapes such as "16*n": use 256
            side = [256, 256]
        resized = np.stack([np.asarray(Image.fromarray(c, "F").resize((side[1], side[0]), Image.BILINEAR)) for c in x])
        with torch.no_grad():
            logits = self._model(torch.from_numpy(resized[None]).to(self._device))[0]
        if logits.shape[0] == 1:  # one sigmoid channel: foreground at p >= 0.5
            classes = (torch.sigmoid(logits[0]) >= 0.5).to(torch.uint8).cpu().numpy()
        else:
            classes = logits.argmax(dim=0).to(torch.uint8).cpu().numpy()
        full = np.asarray(Image.fromarray(classes, "L").resize((image.width, image.height), Image.NEAREST))
        labels = self.labels
        masks = {labels[k] if k < len(labels) else f"class_{k}": full == k for k in range(1, max(len(labels), 2))}
        return _summarise(masks, [])
