"""Image-text embedders: images and texts into one vector space.

``ImageTextEmbedder`` is a TextEmbedder that also embeds images.
``DualEncoderEmbedder`` serves a model folder written by
``medrag.embed.train.train_dual_encoder``: a small CNN image tower and a frozen
sentence model with a trained projection on the text side.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from medrag.embed.base import EmbedderInfo, TextEmbedder, l2_normalise
from medrag.errors import InputError, ModelUnavailable
from medrag.models import fingerprint_path, pick_device
from medrag.registry import embedders

log = logging.getLogger(__name__)

# Grayscale inputs are scaled to [0, 1] then normalised with these; one value per
# channel because the gray image is repeated into 3 channels.
GRAY_MEAN = 0.5
GRAY_STD = 0.25
MODEL_KIND = "medrag.dual-encoder"
FORMAT_VERSION = 1


@runtime_checkable
class ImageTextEmbedder(TextEmbedder, Protocol):
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed images into the text space: (n, dim) float32, rows L2-normalised."""
        ...


# --- preprocessing -------------------------------------------------------------


def to_gray_array(image: Image.Image) -> np.ndarray:
    """Any PIL image as a float32 (H, W) array in [0, 1].

    16-bit and 32-bit images ("I;16", "I", "F") are min-max scaled: scanners
    store 12-bit data in 16-bit containers, so dividing by 65535 would leave a
    nearly black image. Transparent parts (RGBA, LA, palette with transparency)
    are composited onto black, the background of a scan.
    """
    mode = image.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == 3:  # rare multi-channel high-bit images: average the channels
            array = array.mean(axis=2)
        low, high = float(array.min()), float(array.max())
        if high <= low:
            return np.zeros(array.shape, dtype=np.float32)
        return ((array - low) / (high - low)).astype(np.float32)
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
    elif mode == "LA":
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode != "L":
        image = image.convert("L")  # RGB, CMYK, YCbCr, 1: ITU-R 601 luma
    return np.asarray(image, dtype=np.float32) / 255.0


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear) and center-crop to size x size."""
    height, width = gray.shape
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32)).resize((new_w, new_h), Image.BILINEAR)
    array = np.asarray(resized, dtype=np.float32)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.clip(array[top : top + size, left : left + size], 0.0, 1.0)


def preprocess_image(image: Image.Image, image_size: int, resize: int | None = None) -> np.ndarray:
    """A PIL image as the model input: (3, image_size, image_size) float32, normalised.

    The image is resized to ``resize`` (default ``image_size``) and center-cropped
    to ``image_size``: training takes random crops of the same ``resize`` view.
    """
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image, got {type(image).__name__}")
    square = resize_square(to_gray_array(image), resize or image_size)
    offset = (square.shape[0] - image_size) // 2
    crop = square[offset : offset + image_size, offset : offset + image_size]
    normalised = (crop - GRAY_MEAN) / GRAY_STD
    return np.repeat(normalised[None, :, :], 3, axis=0).astype(np.float32)


# --- the trained dual encoder -----------------------------------------------------


class DualEncoderEmbedder:
    """A dual encoder saved by ``train_dual_encoder``; weights load on first use.

    Texts go through the frozen text model named in the folder's config (its
    fingerprint must match the one trained with) and the learned projection;
    images through the CNN tower.
    """

    def __init__(self, folder: str | Path, *, device: str = "auto", batch_size: int = 32, name: str | None = None) -> None:
        self.folder = Path(folder).expanduser()
        if not (self.folder / "config.json").is_file():
            raise ModelUnavailable(
                f"{self.folder} is not a dual-encoder model folder (no config.json). "
                "Train one with: medrag train-retriever --data DIR --out FOLDER"
            )
        self.name = name or f"dual-encoder:{self.folder}"
        self.device_request = device
        self.batch_size = batch_size
        self._config: dict | None = None
        self._model = None
        self._text_embedder = None
        self._device: str | None = None
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> dict:
        if self._config is None:
            from medrag.storage import read_json

            try:
                config = read_json(self.folder / "config.json")
            except (OSError, ValueError) as exc:
                raise ModelUnavailable(f"cannot read {self.folder / 'config.json'}: {exc}") from exc
            if config.get("kind") != MODEL_KIND or config.get("format_version") != FORMAT_VERSION:
                raise ModelUnavailable(
                    f"{self.folder} holds a '{config.get('kind')}' v{config.get('format_version')} model, "
                    f"not a {MODEL_KIND} v{FORMAT_VERSION}: retrain it with medrag train-retriever"
                )
            self._config = config
        return self._config

    @property
    def dim(self) -> int:
        return int(self.config["embed_dim"])

    def setup(self) -> None:
        """Load the weights and the text model (once). Called implicitly by the first embed."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            from medrag.embed.text import make_embedder
            from medrag.embed.train import load_state_dict, build_model

            config = self.config
            device = pick_device(self.device_request)
            text_embedder = make_embedder(config["text_model"]["spec"], device=device)
            found = text_embedder.info().fingerprint
            if found != config["text_model"]["fingerprint"]:
                raise ModelUnavailable(
                    f"the text model '{config['text_model']['spec']}' found here (fingerprint {found}) is not the one "
                    f"{self.folder} was trained with ({config['text_model']['fingerprint']}): install that model or retrain"
                )
            model = build_model(config)
            try:
                model.load_state_dict(load_state_dict(self.folder, config))
            except Exception as exc:
                raise ModelUnavailable(f"cannot load the weights of {self.folder}: {exc}. Retrain the model.") from exc
            log.info("loaded dual encoder %s on %s", self.folder, device)
            self._text_embedder = text_embedder
            self._device = device
            self._model = model.to(device).eval()

    def _project_texts(self, base: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self._model.encode_text(torch.from_numpy(base).to(self._device))
        return l2_normalise(out.cpu().numpy())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.setup()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._project_texts(self._text_embedder.embed_texts(list(texts)))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.setup()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._project_texts(self._text_embedder.embed_queries(list(texts)))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        self.setup()
        config = self.config
        images = list(images)
        out = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([preprocess_image(im, config["image_size"], config["resize"]) for im in images[start : start + self.batch_size]])
            with torch.no_grad():
                out.append(self._model.encode_image(torch.from_numpy(batch).to(self._device)).cpu().numpy())
        return l2_normalise(np.concatenate(out))

    def info(self) -> EmbedderInfo:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_path(str(self.folder))
        return EmbedderInfo(name=self.name, fingerprint=self._fingerprint, dim=self.dim)

    def __repr__(self) -> str:
        return f"DualEncoderEmbedder({str(self.folder)!r}, device={self.device_request!r})"


@embedders.register("dual-encoder")
def _make_dual_encoder(folder: str = "", **kwargs) -> DualEncoderEmbedder:
    if not folder:
        raise InputError("name the model folder: dual-encoder:/path/to/folder")
    return DualEncoderEmbedder(folder, **kwargs)
