"""Our own image classifier: a small CNN trained on CPU from labelled images.

``train_classifier`` fits it on (image path, label, group) items and saves a
model folder (config.json with the label list, the data fingerprint, training
settings and metrics; labels.txt; the weights; manifest.json with sha256 of
each file). ``ImageClassifier`` loads such a folder lazily and gives class
probabilities and a Grad-CAM map for one image.

Input: the image as grey levels (colour is averaged), shorter side resized to
``resize`` and centre-cropped to ``image_size``; training sees random crops of
the same view with flips and intensity jitter.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from medrag.embed.image_text import GRAY_MEAN, GRAY_STD, resize_square, to_gray_array
from medrag.embed.train import _torch, conv_features
from medrag.errors import InputError, ModelUnavailable
from medrag.storage import atomic_folder, iter_json_lines, read_json, utc_now, write_json

log = logging.getLogger(__name__)

MODEL_KIND = "medrag.image-classifier"
FORMAT_VERSION = 1
DEFAULT_WIDTHS = (16, 32, 64, 128)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class LabelledImage(NamedTuple):
    path: str
    label: str
    group: str  # items of one group (patient, case) stay on one side of a split


# --- data ----------------------------------------------------------------------------


def read_labelled_images(
    data: str | Path, *, label_field: str = "label", image_field: str | None = None, group_field: str | None = None
) -> list[LabelledImage]:
    """Labelled images from a folder of per-label subfolders, or from a JSONL file.

    Folder: ``DATA/<label>/<image>``; the group is the file name without suffix.
    JSONL (or a folder holding ``images.jsonl``, as MedPix): one object per line
    with the image path (``image_field``, default "image" or "file", relative to
    the JSONL's folder), the label (``label_field``) and optionally a group
    (``group_field``, default "group" or "case_id"). Rows without a present
    file or a label are skipped.
    """
    data = Path(data).expanduser()
    if data.is_dir() and (data / "images.jsonl").is_file():
        data = data / "images.jsonl"
    if data.is_dir():
        items = []
        for sub in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for file in sorted(sub.rglob("*")):
                if file.suffix.lower() in IMAGE_SUFFIXES or file.suffix.lower() in (".dcm", ".dicom"):
                    items.append(LabelledImage(str(file), sub.name, f"{sub.name}/{file.stem}"))
        if not items:
            raise InputError(f"{data}: no images in per-label subfolders (expected DATA/<label>/<image>.png)")
        return items
    if not data.is_file():
        raise InputError(f"{data}: no such folder or JSONL file")
    items = []
    with data.open(encoding="utf-8") as lines:
        for line_no, row in iter_json_lines(lines, data):
            if not isinstance(row, dict):
                continue
            image = row.get(image_field) if image_field else (row.get("image") or row.get("file"))
            label = row.get(label_field)
            if not image or label is None or not str(label).strip():
                continue
            path = Path(image) if Path(image).is_absolute() else data.parent / image
            if not path.is_file():
                continue
            group = row.get(group_field) if group_field else (row.get("group") or row.get("case_id"))
            items.append(LabelledImage(str(path), str(label).strip(), str(group if group is not None else f"line{line_no}")))
    if not items:
        raise InputError(f"{data}: no rows with a present image file and a '{label_field}' label")
    return items


def split_by_group(items: Sequence[LabelledImage], test_fraction: float, seed: int = 0) -> tuple[list, list]:
    """(train, test): whole groups go to one side, chosen by a hash of seed and group."""
    if not 0 <= test_fraction < 1:
        raise InputError(f"test fraction must be in [0, 1), got {test_fraction}")

    def is_test(group: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction

    return [i for i in items if not is_test(i.group)], [i for i in items if is_test(i.group)]


def load_arrays(items: Sequence[LabelledImage], resize: int) -> tuple[np.ndarray, list[int], str]:
    """Images as (n, resize, resize) float32 in [0, 1], the indices kept, and a fingerprint of bytes + labels.

    DICOM files go through medrag's loader (windowed display); unreadable files are logged and skipped.
    """
    from medrag.vision.image import load_image

    arrays, kept = [], []
    digest = hashlib.sha256()
    for i, item in enumerate(items):
        try:
            data = Path(item.path).read_bytes()
            if data[128:132] == b"DICM" or item.path.lower().endswith((".dcm", ".dicom")):
                gray = to_gray_array(load_image(data).display)
            else:
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
                    gray = to_gray_array(image)
            arrays.append(resize_square(gray, resize))
        except (OSError, UnidentifiedImageError, ValueError, InputError) as exc:
            log.warning("skipping %s: %s", item.path, exc)
            continue
        kept.append(i)
        digest.update(hashlib.sha256(data).digest())
        digest.update(f"\x00{item.label}\x00{item.group}\n".encode())
    images = np.stack(arrays) if arrays else np.zeros((0, resize, resize), dtype=np.float32)
    return images, kept, digest.hexdigest()[:16]


def image_to_gray(image) -> np.ndarray:
    """A MedicalImage (its windowed display) or a PIL image as (H, W) float32 in [0, 1]."""
    display = getattr(image, "display", image)
    if not isinstance(display, Image.Image):
        raise InputError(f"expected a MedicalImage or PIL image, got {type(image).__name__}")
    return to_gray_array(display)


def view_transform(height: int, width: int, resize: int, image_size: int) -> tuple[float, float, float]:
    """(scale, x offset, y offset): model pixel (u, v) is original pixel ((u + ox) / scale, (v + oy) / scale)."""
    scale = resize / min(height, width)
    new_w, new_h = max(resize, round(width * scale)), max(resize, round(height * scale))
    top, left = (new_h - resize) // 2, (new_w - resize) // 2
    offset = (resize - image_size) // 2
    return scale, float(left + offset), float(top + offset)


# --- the model -----------------------------------------------------------------------


def build_classifier(config: dict):
    """The CNN a config describes (random weights): conv blocks -> ``features``; mean pool -> ``head``."""
    torch = _torch()
    nn = torch.nn

    class SmallCNN(nn.Module):
        def __init__(self, widths: Sequence[int], classes: int, dropout: float) -> None:
            super().__init__()
            self.features, prev = conv_features(widths)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(prev, classes)

        def forward(self, x):
            return self.head(self.dropout(self.features(x).mean(dim=(2, 3))))

    arch = config["architecture"]
    return SmallCNN(arch["widths"], len(config["labels"]), float(arch.get("dropout", 0.0)))


def _to_input(gray: np.ndarray):
    torch = _torch()
    normalised = (np.asarray(gray, dtype=np.float32) - GRAY_MEAN) / GRAY_STD
    return torch.from_numpy(np.ascontiguousarray(np.repeat(normalised[:, None], 3, axis=1)))


def _augment(images: np.ndarray, image_size: int, rng: np.random.Generator, flip: bool):
    n, full, _ = images.shape
    out = np.empty((n, image_size, image_size), dtype=np.float32)
    for i in range(n):
        top, left = rng.integers(0, full - image_size + 1, size=2)
        crop = images[i, top : top + image_size, left : left + image_size]
        if flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        gamma, contrast, brightness = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
        out[i] = np.clip(crop, 0.0, 1.0) ** gamma * contrast + brightness
    return _to_input(out)


def _centre(images: np.ndarray, image_size: int):
    offset = (images.shape[1] - image_size) // 2
    return _to_input(images[:, offset : offset + image_size, offset : offset + image_size])


def _weights_name() -> str:
    import importlib.util

    return "model.safetensors" if importlib.util.find_spec("safetensors") else "model.pt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_classifier(model, config: dict, out_dir: str | Path) -> Path:
    """config.json, labels.txt, the weights and manifest.json, written atomically."""
    torch = _torch()
    config = dict(config, weights=_weights_name())
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(out_dir) as tmp:
        if config["weights"].endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, str(tmp / config["weights"]))
        else:
            torch.save(state, tmp / config["weights"])
        write_json(tmp / "config.json", config)
        (tmp / "labels.txt").write_text("".join(f"{label}\n" for label in config["labels"]), encoding="utf-8")
        names = (config["weights"], "config.json", "labels.txt")
        write_json(tmp / "manifest.json", {"kind": MODEL_KIND, "format_version": FORMAT_VERSION, "created": utc_now(),
                                           "files": {name: _sha256(tmp / name) for name in names}})
    return Path(out_dir)


# --- training ------------------------------------------------------------------------


def _accuracy_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], train_counts: Counter) -> dict:
    n = len(y_true)
    majority = max(range(len(labels)), key=lambda k: train_counts[labels[k]])
    per_class = {}
    for k, label in enumerate(labels):
        mask = y_true == k
        if mask.any():
            per_class[label] = {"n": int(mask.sum()), "recall": round(float((y_pred[mask] == k).mean()), 4)}
    confusion = [[int(((y_true == a) & (y_pred == b)).sum()) for b in range(len(labels))] for a in range(len(labels))]
    recalls = [v["recall"] for v in per_class.values()]
    return {
        "n": n,
        "accuracy": round(float((y_true == y_pred).mean()), 4) if n else None,
        "balanced_accuracy": round(float(np.mean(recalls)), 4) if recalls else None,
        "majority_label": labels[majority],
        "majority_baseline": round(float((y_true == majority).mean()), 4) if n else None,
        # the best any constant answer could do on this very set (knowing its class shares)
        "best_constant_baseline": round(max(float((y_true == k).mean()) for k in range(len(labels))), 4) if n else None,
        "per_class": per_class,
        "confusion": {"labels": list(labels), "rows_true_cols_predicted": confusion},
    }


def _predict_arrays(model, images: np.ndarray, image_size: int, batch: int = 64) -> np.ndarray:
    torch = _torch()
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(torch.softmax(model(_centre(images[i : i + batch], image_size)), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def train_classifier(
    items: Sequence[LabelledImage],
    out_dir: str | Path,
    *,
    test_items: Sequence[LabelledImage] = (),
    epochs: int = 10,
    batch_size: int = 32,
    image_size: int = 96,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    min_count: int = 1,
    flip: bool = True,
    modalities: Sequence[str] = (),
    body_regions: Sequence[str] = (),
    name: str | None = None,
    description: str = "",
    source: str = "",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train on ``items``, evaluate on ``test_items`` (held apart by the caller), save to ``out_dir``; returns metrics.

    Labels with fewer than ``min_count`` training images are dropped (from both
    sides). Classes are weighted by inverse frequency in the loss. Deterministic
    for a seed, thread count and machine.
    """
    torch = _torch()
    from tqdm.auto import tqdm

    from medrag.embed.train import AdamW
    from medrag.vision.image import MODALITIES

    if epochs < 1 or batch_size < 2 or image_size < 16:
        raise InputError("epochs must be >= 1, batch size >= 2 and image size >= 16")
    bad = sorted(set(modalities) - set(MODALITIES))
    if bad:
        raise InputError(f"unknown modalities {bad}; choose from {', '.join(MODALITIES)}")
    counts = Counter(i.label for i in items)
    labels = sorted(label for label, c in counts.items() if c >= max(1, min_count))
    if len(labels) < 2:
        raise InputError(f"need at least 2 labels with >= {min_count} training images each; found {dict(counts)}")
    dropped = sorted(set(counts) - set(labels))
    items = [i for i in items if i.label in labels]
    test_items = [i for i in test_items if i.label in labels]
    index = {label: k for k, label in enumerate(labels)}
    resize = int(round(image_size * 1.15))
    started = time.perf_counter()
    images, kept, fingerprint = load_arrays(items, resize)
    items = [items[i] for i in kept]
    if len(items) < 2:
        raise InputError(f"need at least 2 readable training images, got {len(items)}")
    y = np.array([index[i.label] for i in items])
    train_counts = Counter(i.label for i in items)

    config = {
        "kind": MODEL_KIND,
        "format_version": FORMAT_VERSION,
        "name": name or Path(out_dir).name,
        "description": description,
        "labels": labels,
        "modalities": sorted(modalities) or list(MODALITIES),
        "body_regions": sorted(body_regions),
        "architecture": {"type": "small-cnn", "widths": list(widths), "pooling": "mean", "dropout": 0.2, "input": "gray-as-3ch",
                         "saliency_layer": "features"},
        "image_size": image_size,
        "resize": resize,
        "normalise": {"mean": GRAY_MEAN, "std": GRAY_STD},
        "data": {"source": source, "fingerprint": fingerprint, "train_images": len(items), "train_groups": len({i.group for i in items}),
                 "train_counts": dict(sorted(train_counts.items())), "dropped_labels": dropped},
        "training": {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "flip": flip,
                     "loss": "cross-entropy, classes weighted by inverse frequency", "threads": torch.get_num_threads()},
    }
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_classifier(config)
        weights = torch.tensor([len(items) / (len(labels) * max(1, train_counts[label])) for label in labels], dtype=torch.float32)
        optimiser = AdamW(list(model.parameters()), weight_decay=weight_decay)
        steps_per_epoch = max(1, len(items) // batch_size)
        total = epochs * steps_per_epoch
        warmup = max(1, total // 20)
        step_count = 0
        losses = []
        bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress)
        for _ in bar:
            model.train()
            order = rng.permutation(len(items))
            epoch_loss = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * batch_size : (step + 1) * batch_size if step < steps_per_epoch - 1 else len(order)]
                logits = model(_augment(images[idx], image_size, rng, flip))
                loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[idx]), weight=weights)
                loss.backward()
                optimiser.step(lr * min(1.0, (step_count + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step_count / total)))
                step_count += 1
                epoch_loss += loss.item()
            losses.append(round(epoch_loss / steps_per_epoch, 4))
            bar.set_postfix(loss=losses[-1])
    train_seconds = time.perf_counter() - started
    metrics: dict = {"train_seconds": round(train_seconds, 1), "loss": losses,
                     "train": _accuracy_report(y, _predict_arrays(model, images, image_size).argmax(1), labels, train_counts)}
    if test_items:
        test_images, test_kept, _ = load_arrays(test_items, resize)
        test_items = [test_items[i] for i in test_kept]
        if test_items:
            y_test = np.array([index[i.label] for i in test_items])
            report = _accuracy_report(y_test, _predict_arrays(model, test_images, image_size).argmax(1), labels, train_counts)
            report["groups"] = len({i.group for i in test_items})
            metrics["heldout"] = report
    config["metrics"] = metrics
    save_classifier(model, config, out_dir)
    log.info("trained classifier on %d images (%d labels) in %.1f s -> %s", len(items), len(labels), train_seconds, out_dir)
    return metrics


# --- inference -----------------------------------------------------------------------


class ImageClassifier:
    """A model folder written by ``train_classifier``; config is read on demand, weights on first use."""

    def __init__(self, folder: str | Path, *, device: str = "auto") -> None:
        self.folder = Path(folder).expanduser()
        self.device_request = device
        self._config: dict | None = None
        self._model = None
        self._device: str | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> dict:
        if self._config is None:
            path = self.folder / "config.json"
            if not path.is_file():
                raise ModelUnavailable(
                    f"no trained classifier at {self.folder} (config.json missing). Train one with: "
                    f"medrag train-classifier --data DATA --out {self.folder}"
                )
            try:
                config = read_json(path)
            except (OSError, ValueError) as exc:
                raise ModelUnavailable(f"cannot read {path}: {exc}") from exc
            if config.get("kind") != MODEL_KIND or config.get("format_version") != FORMAT_VERSION:
                raise ModelUnavailable(f"{self.folder} holds a '{config.get('kind')}' v{config.get('format_version')} model, "
                                       f"not a {MODEL_KIND} v{FORMAT_VERSION}: retrain it with medrag train-classifier")
            self._config = config
        return self._config

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])

    def setup(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            from medrag.embed.train import load_state_dict
            from medrag.models import pick_device

            config = self.config
            model = build_classifier(config)
            try:
                model.load_state_dict(load_state_dict(self.folder, config))
            except ModelUnavailable:
                raise
            except Exception as exc:
                raise ModelUnavailable(f"cannot load the weights of {self.folder}: {exc}. Retrain the model.") from exc
            self._device = pick_device(self.device_request)
            self._model = model.to(self._device).eval()
            log.info("loaded classifier %s on %s", self.folder, self._device)

    def _input(self, image) -> tuple[object, tuple[float, float, float], tuple[int, int]]:
        gray = image_to_gray(image)
        size, resize = int(self.config["image_size"]), int(self.config["resize"])
        square = resize_square(gray, resize)
        x = _centre(square[None], size).to(self._device)
        return x, view_transform(gray.shape[0], gray.shape[1], resize, size), gray.shape

    def predict(self, image) -> dict[str, float]:
        """Class probabilities (softmax) for a MedicalImage or PIL image."""
        torch = _torch()
        self.setup()
        x, _, _ = self._input(image)
        with torch.no_grad():
            probs = torch.softmax(self._model(x), dim=1)[0].cpu().numpy()
        return {label: float(p) for label, p in zip(self.labels, probs)}

    def saliency(self, image, label: str) -> np.ndarray:
        """Grad-CAM for ``label`` as an (H, W) map in [0, 1] over the original image (0 outside the model's crop)."""
        from medrag.vision.saliency import grad_cam, to_image_space

        self.setup()
        if label not in self.labels:
            raise InputError(f"unknown label {label!r}; the model knows {', '.join(self.labels)}")
        x, transform, shape = self._input(image)
        cam = grad_cam(self._model, self._model.features, x, self.labels.index(label))
        return to_image_space(cam, transform, shape, int(self.config["image_size"]))
