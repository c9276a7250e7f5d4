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
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
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


def _gray_square(image: Image.Image, size: int) -> np.ndarray:
    """``resize_square(to_gray_array(image), size)``, with a shortcut for 8-bit grey images (most scans).

    The shortcut resizes the 0-255 values in PIL ("F" mode) and scales the small result to [0, 1],
    instead of scaling the full-size image first: the same numbers up to float rounding (~1e-7),
    at a fraction of the full-size array passes.
    """
    if image.mode != "L":
        return resize_square(to_gray_array(image), size)
    width, height = image.size
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = np.asarray(image.convert("F").resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.clip(resized[top : top + size, left : left + size] / np.float32(255.0), 0.0, 1.0)


def _centre_crop_normalised(image: Image.Image, image_size: int, resize: int | None) -> np.ndarray:
    """(image_size, image_size) float32: resized to ``resize``, centre-cropped, normalised."""
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image, got {type(image).__name__}")
    if min(image.size) < 2:
        raise InputError(f"image is empty or too small ({image.width}x{image.height} pixels); an image needs at least 2x2")
    try:
        square = _gray_square(image, resize or image_size)
    except (OSError, ValueError) as exc:  # a lazily opened file that turns out truncated or corrupt
        raise InputError(f"cannot read the image ({exc}): the file is corrupt or truncated") from None
    offset = (square.shape[0] - image_size) // 2
    crop = square[offset : offset + image_size, offset : offset + image_size]
    return (crop - GRAY_MEAN) / GRAY_STD


def preprocess_image(image: Image.Image, image_size: int, resize: int | None = None) -> np.ndarray:
    """A PIL image as the model input: (3, image_size, image_size) float32, normalised.

    The image is resized to ``resize`` (default ``image_size``) and center-cropped
    to ``image_size``: training takes random crops of the same ``resize`` view.
    """
    normalised = _centre_crop_normalised(image, image_size, resize)
    return np.repeat(normalised[None, :, :], 3, axis=0).astype(np.float32)


def preprocess_batch(images: Sequence[Image.Image], image_size: int, resize: int | None = None, *, first: int = 0) -> np.ndarray:
    """Many images as one (n, 3, image_size, image_size) float32 batch, as ``preprocess_image`` makes each.

    Written into one preallocated array (grey copied into the other two channels at the end),
    so a batch costs one allocation instead of three per image. ``first`` numbers the images in errors.
    """
    out = np.empty((len(images), 3, image_size, image_size), dtype=np.float32)
    for i, image in enumerate(images):
        try:
            out[i, 0] = _centre_crop_normalised(image, image_size, resize)
        except InputError as exc:
            raise InputError(f"image {first + i}: {exc}") from None
    out[:, 1] = out[:, 0]
    out[:, 2] = out[:, 0]
    return out


# --- the trained dual encoder -----------------------------------------------------


class DualEncoderEmbedder:
    """A dual encoder saved by ``train_dual_encoder``; weights load on first use.

    Texts go through the frozen text model named in the folder's config (its
    fingerprint must match the one trained with) and the learned projection;
    images through the CNN tower.
    """

    def __init__(self, folder: str | Path, *, device: str = "auto", batch_size: int = 32, name: str | None = None,
                 prefetch: bool = True) -> None:
        self.folder = Path(folder).expanduser()
        self.prefetch = prefetch  # preprocess the next batch while the model runs on this one
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
        out = np.empty((len(images), self.dim), dtype=np.float32)
        starts = list(range(0, len(images), self.batch_size))

        def prepare(start: int) -> np.ndarray:
            return preprocess_batch(images[start : start + self.batch_size], config["image_size"], config["resize"], first=start)

        # The next batch is preprocessed in a helper thread while the model runs on this one (PIL's resize
        # and numpy release the GIL): preprocessing then costs little wall time when a core is free.
        # inference_mode: no autograd bookkeeping at all (cheaper than no_grad).
        with ThreadPoolExecutor(max_workers=1) if self.prefetch and len(starts) > 1 else nullcontext() as pool:
            pending = pool.submit(prepare, starts[0]) if pool else None
            for i, start in enumerate(starts):
                batch = pending.result() if pool else prepare(start)
                if pool and i + 1 < len(starts):
                    pending = pool.submit(prepare, starts[i + 1])
                with torch.inference_mode():
                    vectors = self._model.encode_image(torch.from_numpy(batch).to(self._device))
                out[start : start + len(batch)] = vectors.cpu().numpy()
        return l2_normalise(out)

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


# --- real image-text encoders: transformers CLIP / SigLIP, open_clip ---------------------


def to_rgb_image(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB for CLIP-family processors.

    High-bit grey images are min-max scaled (as ``to_gray_array``), transparency is
    composited onto black, and colour images stay colour (fundus, dermatology photos).
    """
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image, got {type(image).__name__}")
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F", "L", "1"}:
        gray = (to_gray_array(image) * 255.0).round().astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode in {"P", "PA", "LA", "RGBA"}:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _features(output):
    """transformers 5 returns a model output whose pooler_output holds the projected features; 4.x a tensor."""
    return getattr(output, "pooler_output", output) if not hasattr(output, "shape") else output


class _LazyImageTextEmbedder:
    """Shared plumbing of the loaders below: lazy setup under a lock, batching, normalising."""

    name: str
    kind: str = ""

    def __init__(self, *, device: str = "auto", batch_size: int = 32) -> None:
        self.device_request = device
        self.batch_size = batch_size
        self._model = None
        self._device: str | None = None
        self._dim: int | None = None
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Load the weights (once). Called implicitly by the first embed."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            device = pick_device(self.device_request)
            model = self._load(device)
            self._device = device
            self._model = model
            self._dim = int(self._encode_texts(["x"]).shape[1])
            log.info("loaded %s on %s (dim %d)", self.name, device, self._dim)

    def _load(self, device: str):  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode_texts(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode_images(self, images: list[Image.Image]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def dim(self) -> int:
        self.setup()
        return int(self._dim)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.setup()
        texts = list(texts)
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            parts.append(self._encode_texts(texts[start : start + self.batch_size]))
        return l2_normalise(np.concatenate(parts))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_texts(texts)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.setup()
        rgb = [to_rgb_image(im) for im in images]  # checks every input before any forward pass
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(rgb), self.batch_size):
            parts.append(self._encode_images(rgb[start : start + self.batch_size]))
        return l2_normalise(np.concatenate(parts))

    def info(self) -> EmbedderInfo:
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return EmbedderInfo(name=self.name, fingerprint=self._fingerprint, dim=self.dim)

    def _compute_fingerprint(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class TransformersImageTextEmbedder(_LazyImageTextEmbedder):
    """A CLIP or SigLIP model folder (``save_pretrained`` of the model and its processor).

    Loaded with ``AutoModel`` + ``AutoProcessor`` from the local folder only, e.g.
    BiomedCLIP-style exports, PubMedCLIP or MedSigLIP. ``kind`` is "clip" or "siglip":
    SigLIP was trained on texts padded to the full length, so its texts are padded so too.
    """

    def __init__(self, folder: str | Path, *, kind: str = "clip", device: str = "auto", batch_size: int = 32, name: str | None = None) -> None:
        super().__init__(device=device, batch_size=batch_size)
        if kind not in ("clip", "siglip"):
            raise InputError(f"kind must be 'clip' or 'siglip', not {kind!r}")
        self.folder = Path(folder).expanduser()
        if not (self.folder / "config.json").is_file():
            raise ModelUnavailable(
                f"{self.folder} is not a transformers model folder (no config.json). Save one with "
                "model.save_pretrained(DIR) and processor.save_pretrained(DIR), then pass "
                f"{kind}:DIR (no model hub is used)."
            )
        self.kind = kind
        self.name = name or f"{kind}:{self.folder}"
        self._tokenizer = None
        self._image_processor = None
        self._max_length: int | None = None

    def _load(self, device: str):
        try:
            from transformers import AutoModel, AutoProcessor
        except ImportError as exc:  # pragma: no cover - core dependency through sentence-transformers
            raise ModelUnavailable("transformers is not installed: pip install transformers") from exc
        try:
            model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
            processor = AutoProcessor.from_pretrained(str(self.folder), local_files_only=True)
        except Exception as exc:
            raise ModelUnavailable(f"cannot load a {self.kind} model and processor from {self.folder}: {exc}") from exc
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ModelUnavailable(
                f"{self.folder} holds a '{model.config.model_type}' model, not an image-text dual encoder "
                "(CLIP, SigLIP and their relatives have get_image_features and get_text_features)"
            )
        self._tokenizer = getattr(processor, "tokenizer", None)
        self._image_processor = getattr(processor, "image_processor", None)
        if self._tokenizer is None or self._image_processor is None:
            raise ModelUnavailable(f"{self.folder}: the saved processor needs both a tokenizer and an image processor")
        limits = [getattr(self._tokenizer, "model_max_length", None), getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)]
        self._max_length = min(int(v) for v in limits if v and int(v) < 1_000_000) if any(limits) else None
        return model.to(device).eval()

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        padding = "max_length" if self.kind == "siglip" else True
        tokens = self._tokenizer(texts, padding=padding, truncation=True, max_length=self._max_length, return_tensors="pt")
        tokens = {k: v.to(self._device) for k, v in tokens.items() if k in ("input_ids", "attention_mask", "position_ids")}
        if self.kind == "siglip":
            tokens.pop("attention_mask", None)  # SigLIP was trained without one: padding is part of its input
        with torch.no_grad():
            out = _features(self._model.get_text_features(**tokens))
        return out.float().cpu().numpy()

    def _encode_images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        pixels = self._image_processor(images=images, return_tensors="pt")["pixel_values"].to(self._device)
        with torch.no_grad():
            out = _features(self._model.get_image_features(pixel_values=pixels))
        return out.float().cpu().numpy()

    def _compute_fingerprint(self) -> str:
        return fingerprint_path(str(self.folder))

    def __repr__(self) -> str:
        return f"TransformersImageTextEmbedder({str(self.folder)!r}, kind={self.kind!r}, device={self.device_request!r})"


class OpenCLIPEmbedder(_LazyImageTextEmbedder):
    """An open_clip model: ``hf-hub:ORG/NAME`` (from the local Hugging Face cache when offline),
    or a model name (or a path to a model-config JSON) with a local checkpoint file.

    Needs the ``clip`` extra (open-clip-torch, which pulls torchvision).
    """

    kind = "open_clip"

    def __init__(self, model: str, checkpoint: str | Path | None = None, *, device: str = "auto", batch_size: int = 32, name: str | None = None) -> None:
        super().__init__(device=device, batch_size=batch_size)
        if not model:
            raise InputError("name the open_clip model: open_clip:MODEL@CHECKPOINT or open_clip:hf-hub:ORG/NAME")
        self.model_name = model
        self.checkpoint = Path(checkpoint).expanduser() if checkpoint else None
        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise ModelUnavailable(f"open_clip checkpoint not found: {self.checkpoint}")
        if self.checkpoint is None and not model.startswith("hf-hub:"):
            raise InputError(
                f"open_clip model '{model}' needs a checkpoint (open_clip:{model}@/path/to/weights.pt) "
                "or an hf-hub: id; no weights are downloaded by name"
            )
        self.name = name or (f"open_clip:{model}@{self.checkpoint}" if self.checkpoint else f"open_clip:{model}")
        self._tokenizer = None
        self._preprocess = None

    def _load(self, device: str):
        from medrag.errors import require

        open_clip = require("open_clip", package="open-clip-torch", extra="clip", purpose="open_clip image-text models")
        model_name = self.model_name
        config = Path(model_name).expanduser()
        if config.suffix == ".json" and config.is_file():  # a custom architecture described by its JSON config
            open_clip.add_model_config(str(config))
            model_name = config.stem
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(self.checkpoint) if self.checkpoint else None, device=device
            )
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:
            raise ModelUnavailable(f"cannot load open_clip model '{self.model_name}' ({self.checkpoint or 'hub cache'}): {exc}") from exc
        self._tokenizer, self._preprocess = tokenizer, preprocess
        return model.eval()

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self._model.encode_text(self._tokenizer(texts).to(self._device))
        return out.float().cpu().numpy()

    def _encode_images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        batch = torch.stack([self._preprocess(im) for im in images]).to(self._device)
        with torch.no_grad():
            out = self._model.encode_image(batch)
        return out.float().cpu().numpy()

    def _compute_fingerprint(self) -> str:
        import hashlib

        weights = fingerprint_path(str(self.checkpoint)) if self.checkpoint else fingerprint_path(self.model_name)
        config = Path(self.model_name).expanduser()
        extra = fingerprint_path(str(config)) if config.suffix == ".json" and config.is_file() else self.model_name
        return hashlib.sha256(f"{extra}\n{weights}".encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"OpenCLIPEmbedder({self.model_name!r}, checkpoint={str(self.checkpoint) if self.checkpoint else None!r})"


@embedders.register("clip")
def _make_clip(folder: str = "", **kwargs) -> TransformersImageTextEmbedder:
    if not folder:
        raise InputError("name the model folder: clip:/path/to/folder (model and processor saved with save_pretrained)")
    return TransformersImageTextEmbedder(folder, kind="clip", **kwargs)


@embedders.register("siglip")
def _make_siglip(folder: str = "", **kwargs) -> TransformersImageTextEmbedder:
    if not folder:
        raise InputError("name the model folder: siglip:/path/to/folder (model and processor saved with save_pretrained)")
    return TransformersImageTextEmbedder(folder, kind="siglip", **kwargs)


def parse_open_clip(argument: str) -> tuple[str, str | None]:
    """'MODEL@CHECKPOINT' -> (MODEL, CHECKPOINT); 'hf-hub:ORG/NAME' -> (that, None)."""
    if argument.startswith("hf-hub:"):
        return argument, None
    model, sep, checkpoint = argument.partition("@")
    return model, (checkpoint or None) if sep else None


@embedders.register("open_clip")
def _make_open_clip(argument: str = "", **kwargs) -> OpenCLIPEmbedder:
    model, checkpoint = parse_open_clip(argument)
    return OpenCLIPEmbedder(model, checkpoint, **kwargs)


IMAGE_EMBEDDER_KINDS = ("dual-encoder", "clip", "siglip", "open_clip")


def make_image_embedder(spec: str, *, device: str = "auto") -> ImageTextEmbedder:
    """An ImageTextEmbedder from a spec: ``dual-encoder:DIR``, ``clip:DIR``, ``siglip:DIR``,
    ``open_clip:MODEL@CHECKPOINT`` or ``open_clip:hf-hub:ORG/NAME``; plugins registered in
    ``medrag.embedders`` work too when what they build has ``embed_images``."""
    name, sep, _ = (spec or "").partition(":")
    if not sep or name not in embedders:
        raise InputError(
            f"not an image embedder spec: {spec!r}; use one of "
            + ", ".join(f"{k}:..." for k in IMAGE_EMBEDDER_KINDS)
            + " (train your own with: medrag train-retriever --data DIR --out FOLDER)"
        )
    from medrag.embed.text import make_embedder

    embedder = make_embedder(spec, device=device)
    if not hasattr(embedder, "embed_images"):
        raise InputError(f"'{name}' embeds texts only; an image index needs an image-text embedder ({', '.join(IMAGE_EMBEDDER_KINDS)})")
    return embedder
