"""A small, honest modality guess for images without a DICOM tag or a caller's word.

Rules (measured on the shared data: chest X-ray PNG/JPEG vs MedPix CT/MR PNGs):
- colour (channels differ) -> "photo" (fundus, dermatology, endoscopy photographs);
- grey with a large near-black background (> 20% of pixels within 4% of the minimum)
  -> "unknown": that is the look of a CT or MR slice, and the two cannot be told
  apart from grey levels alone (about 80% of MedPix CT and 70% of MR slices fall here);
- other grey images -> "xray" (all chest radiographs in the shared data; 0-13% dark).

Limits: a grey crop of a photograph, a CT/MR slice with little background, a
scout view or an ultrasound will be called "xray"; colour-rendered radiology
(overlays, PET fusion) will be called "photo". Pass ``modality=`` (or use DICOM)
whenever the caller knows better.

``ModalityClassifier`` is the trained alternative (modality and plane from image
statistics, fitted on labelled images such as MedPix CT/MR); image search uses it to
route a query image to the cases of its own modality.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medrag.errors import InputError, ModelUnavailable

log = logging.getLogger(__name__)

DARK_BACKGROUND_FRACTION = 0.20
COLOUR_MEAN_DIFFERENCE = 6.0  # grey levels (0-255) between channels


def guess_modality(image) -> tuple[str, str]:
    """(modality, reason) for a MedicalImage loaded from PNG/JPEG/TIFF."""
    rgb = np.asarray(image.display, dtype=np.float32)
    spread = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])) / 2)
    if spread > COLOUR_MEAN_DIFFERENCE:
        return "photo", f"colour image (mean channel difference {spread:.1f} grey levels)"
    grey = rgb.mean(axis=2)
    low = grey.min() + 0.04 * 255
    dark = float(np.mean(grey <= low))
    if dark > DARK_BACKGROUND_FRACTION:
        return "unknown", f"grey with {dark:.0%} near-black background: looks cross-sectional (CT or MR), cannot tell which"
    return "xray", f"grey image without a large black background ({dark:.0%} near-black): radiograph-like"


# --- a trained classifier: modality and plane from image statistics ------------------------

CLASSIFIER_KIND = "medrag.modality-classifier"
CLASSIFIER_VERSION = 1
HISTOGRAM_BINS = 32
THUMBNAIL = 24


def image_statistics(image) -> np.ndarray:
    """Features of one image (PIL image or MedicalImage) that tell modalities and planes apart.

    A 32-bin grey-level histogram and its cumulative sum (CT windows saturate bone and air,
    MR spreads), edge strength along x and y and of a Laplacian (noise texture), aspect
    ratio, mean and spread, and a mean-centred 24x24 thumbnail (body outline: an axial
    slice is round, a sagittal one tall). Colour is measured too (channel spread), so
    photographs separate from grey scans.
    """
    from medrag.embed.image_text import resize_square, to_gray_array

    pil = image.display if hasattr(image, "display") else image
    gray = to_gray_array(pil)
    if pil.mode in ("RGB", "RGBA", "P"):
        rgb = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0
        colour = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])) / 2)
    else:
        colour = 0.0
    hist = np.histogram(gray, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] / gray.size
    square = resize_square(gray, 64)
    laplacian = np.abs(4 * square[1:-1, 1:-1] - square[:-2, 1:-1] - square[2:, 1:-1] - square[1:-1, :-2] - square[1:-1, 2:]).mean()
    thumb = resize_square(gray, THUMBNAIL).ravel()
    height, width = gray.shape
    scalars = [np.abs(np.diff(gray, axis=1)).mean(), np.abs(np.diff(gray, axis=0)).mean(), laplacian, width / height,
               gray.mean(), gray.std(), colour]
    return np.concatenate([thumb - thumb.mean(), hist, np.cumsum(hist), scalars]).astype(np.float32)


@dataclass(frozen=True)
class ModalityPrediction:
    modality: str
    confidence: float
    plane: str | None = None
    plane_confidence: float | None = None
    probabilities: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 0.01) -> np.ndarray:
    """Multinomial logistic regression with L2 (as scikit-learn's C): weights (d + 1, k), bias last.

    L-BFGS on the mean cross-entropy plus ||W||^2 / (2 C n); deterministic (starts at zero).
    """
    from scipy.optimize import minimize

    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1), dtype=x.dtype)]).astype(np.float64)
    onehot = np.eye(n_classes)[y]
    penalty = 1.0 / (c * n)

    def loss(flat: np.ndarray):
        w = flat.reshape(d + 1, n_classes)
        p = _softmax(xb @ w)
        value = -np.mean(np.sum(onehot * np.log(p + 1e-12), axis=1)) + 0.5 * penalty * np.sum(w[:-1] ** 2)
        grad = xb.T @ (p - onehot) / n
        grad[:-1] += penalty * w[:-1]
        return value, grad.ravel()

    result = minimize(loss, np.zeros((d + 1) * n_classes), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return result.x.reshape(d + 1, n_classes).astype(np.float32)


class ModalityClassifier:
    """A saved modality (and plane) classifier; weights load on first use.

    Folder: config.json (labels, feature recipe, training data and held-out accuracy),
    weights.npz (feature mean/std, one weight matrix per head), manifest.json (sha256 of both).
    Train one with ``train_modality_classifier`` or ``medrag images train-modality``.
    """

    def __init__(self, folder: str | Path, embedder=None) -> None:
        self.folder = Path(folder).expanduser()
        self.embedder = embedder  # needed by classifiers trained on an image embedder's vectors
        if not (self.folder / "config.json").is_file():
            raise ModelUnavailable(
                f"{self.folder} is not a modality classifier folder (no config.json); train one with: "
                "medrag images train-modality --data MEDPIX_DIR --out FOLDER"
            )
        self._config: dict | None = None
        self._weights: dict[str, np.ndarray] | None = None

    @property
    def config(self) -> dict:
        if self._config is None:
            from medrag.storage import read_json

            config = read_json(self.folder / "config.json")
            if config.get("kind") != CLASSIFIER_KIND or config.get("format_version") != CLASSIFIER_VERSION:
                raise ModelUnavailable(f"{self.folder} is not a {CLASSIFIER_KIND} v{CLASSIFIER_VERSION}: train it again")
            self._config = config
        return self._config

    @property
    def modalities(self) -> list[str]:
        return list(self.config["heads"]["modality"])

    def setup(self) -> None:
        if self._weights is not None:
            return
        import hashlib

        from medrag.storage import read_json

        path = self.folder / "weights.npz"
        try:
            expected = read_json(self.folder / "manifest.json")["files"]["weights.npz"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelUnavailable(f"{self.folder}: manifest.json is missing or incomplete; train the classifier again") from exc
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise ModelUnavailable(f"{path} is missing or differs from the manifest: copy the folder again or retrain")
        with np.load(path) as data:
            self._weights = {k: data[k] for k in data.files}
        wanted = self.config["features"].get("embedder")
        if wanted:
            if self.embedder is None:
                raise ModelUnavailable(f"{self.folder} classifies vectors of the image embedder '{wanted['name']}': pass that embedder")
            if self.embedder.info().to_dict() != wanted:
                raise ModelUnavailable(
                    f"{self.folder} was trained on vectors of '{wanted['name']}' (fingerprint {wanted['fingerprint']}), "
                    f"not of '{self.embedder.info().name}': train it again for this embedder"
                )

    def features(self, images: Sequence) -> np.ndarray:
        """The classifier's input for PIL images or MedicalImages."""
        self.setup()
        return _features(images, self.embedder if self.config["features"].get("embedder") else None)

    def predict_features(self, features: np.ndarray) -> list[ModalityPrediction]:
        self.setup()
        x = (np.atleast_2d(features) - self._weights["mean"]) / self._weights["std"]
        xb = np.hstack([x, np.ones((len(x), 1), dtype=np.float32)])
        heads = self.config["heads"]
        probs = {head: _softmax(xb @ self._weights[f"head_{head}"]) for head in heads}
        out = []
        for i in range(len(x)):
            m = probs["modality"][i]
            best = int(m.argmax())
            plane, plane_conf = None, None
            if "plane" in probs:
                p = probs["plane"][i]
                plane, plane_conf = heads["plane"][int(p.argmax())], round(float(p.max()), 4)
            out.append(ModalityPrediction(heads["modality"][best], round(float(m[best]), 4), plane, plane_conf,
                                          {label: round(float(v), 4) for label, v in zip(heads["modality"], m)}))
        return out

    def predict(self, image) -> ModalityPrediction:
        """Modality and plane of one PIL image or MedicalImage."""
        return self.predict_features(self.features([image]))[0]


def train_modality_classifier(samples: Sequence[tuple[str, str, str | None, str]], out_dir: str | Path, *,
                              c: float | None = None, eval_samples: Sequence[tuple[str, str, str | None, str]] = (),
                              min_plane_examples: int = 20, embedder=None) -> dict:
    """Fit the classifier on (image_path, modality, plane or None, group) samples and save it.

    Features: ``image_statistics`` by default; with ``embedder`` (an ImageTextEmbedder) its
    image vectors instead, so an image index's own embedder serves routing at no extra cost
    (the classifier then only works with that embedder, checked by fingerprint).
    ``c`` is the inverse L2 strength (default 0.01 for statistics, 1.0 for embedder vectors).

    Planes seen fewer than ``min_plane_examples`` times are left out of the plane head.
    ``eval_samples`` (held apart, e.g. whole cases) give the accuracies stored in the config.
    Unreadable images are logged and skipped.
    """
    import hashlib

    from medrag.storage import atomic_folder, utc_now, write_json

    if c is None:
        c = 1.0 if embedder is not None else 0.01
    feats, kept = _features_of(samples, embedder)
    samples = [samples[i] for i in kept]
    modalities = sorted({s[1] for s in samples})
    if len(modalities) < 2:
        raise InputError(f"need images of at least two modalities to train, got {modalities}")
    plane_counts: dict[str, int] = {}
    for s in samples:
        if s[2]:
            plane_counts[s[2]] = plane_counts.get(s[2], 0) + 1
    planes = sorted(p for p, n in plane_counts.items() if n >= min_plane_examples)
    mean = feats.mean(axis=0)
    std = feats.std(axis=0) + 1e-6
    x = (feats - mean) / std
    weights = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
    weights["head_modality"] = fit_softmax(x, np.array([modalities.index(s[1]) for s in samples]), len(modalities), c)
    heads = {"modality": modalities}
    if len(planes) >= 2:
        rows = [i for i, s in enumerate(samples) if s[2] in planes]
        weights["head_plane"] = fit_softmax(x[rows], np.array([planes.index(samples[i][2]) for i in rows]), len(planes), c)
        heads["plane"] = planes
    digest = hashlib.sha256("\n".join(f"{s[0]}\t{s[1]}\t{s[2]}" for s in samples).encode()).hexdigest()[:16]
    config = {
        "kind": CLASSIFIER_KIND, "format_version": CLASSIFIER_VERSION, "created": utc_now(),
        "features": ({"name": "embedder", "embedder": embedder.info().to_dict(), "dim": int(x.shape[1])} if embedder is not None else
                     {"name": "image_statistics", "histogram_bins": HISTOGRAM_BINS, "thumbnail": THUMBNAIL, "dim": int(x.shape[1])}),
        "model": {"type": "multinomial logistic regression (L-BFGS)", "C": c},
        "heads": heads,
        "data": {"samples": len(samples), "modalities": {m: sum(s[1] == m for s in samples) for m in modalities},
                 "planes": plane_counts, "fingerprint": digest},
    }
    if eval_samples:
        in_memory = ModalityClassifier.__new__(ModalityClassifier)
        in_memory.folder, in_memory._config, in_memory._weights, in_memory.embedder = Path(out_dir), config, weights, embedder
        config["heldout"] = evaluate_modality_classifier(in_memory, eval_samples)
    with atomic_folder(out_dir) as tmp:
        np.savez(tmp / "weights.npz", **weights)
        write_json(tmp / "config.json", config)
        write_json(tmp / "manifest.json", {"kind": CLASSIFIER_KIND, "format_version": CLASSIFIER_VERSION,
                                           "files": {"weights.npz": hashlib.sha256((tmp / "weights.npz").read_bytes()).hexdigest()}})
    return {"samples": len(samples), "heads": heads, "heldout": config.get("heldout", {})}


def _features(images: Sequence, embedder=None) -> np.ndarray:
    if embedder is None:
        return np.stack([image_statistics(im) for im in images])
    return embedder.embed_images([im.display if hasattr(im, "display") else im for im in images])


def _features_of(samples, embedder=None) -> tuple[np.ndarray, list[int]]:
    """Features of the readable sample images (unreadable ones are logged and skipped), in batches."""
    from PIL import Image, UnidentifiedImageError

    parts, kept, batch = [], [], []
    for i, sample in enumerate(samples):
        try:
            with Image.open(sample[0]) as image:
                image.load()
                batch.append(image.copy() if embedder is not None else image_statistics(image))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            log.warning("skipping %s: %s", sample[0], exc)
            continue
        kept.append(i)
        if len(batch) == 64:
            parts.append(_features(batch, embedder) if embedder is not None else np.stack(batch))
            batch = []
    if batch:
        parts.append(_features(batch, embedder) if embedder is not None else np.stack(batch))
    if not parts:
        raise InputError("no readable images to train the modality classifier on")
    return np.concatenate(parts), kept


def evaluate_modality_classifier(classifier: ModalityClassifier, samples) -> dict:
    """Accuracy of modality and of plane (on samples whose plane the head knows), with the majority-class figure."""
    classifier.setup()
    feats, kept = _features_of(samples, classifier.embedder if classifier.config["features"].get("embedder") else None)
    samples = [samples[i] for i in kept]
    predictions = classifier.predict_features(feats)
    out: dict = {"samples": len(samples)}
    truth = [s[1] for s in samples]
    out["modality_accuracy"] = round(float(np.mean([p.modality == t for p, t in zip(predictions, truth)])), 4)
    out["modality_majority"] = round(max(truth.count(m) for m in set(truth)) / len(truth), 4)
    planes = classifier.config["heads"].get("plane")
    if planes:
        pairs = [(p.plane, s[2]) for p, s in zip(predictions, samples) if s[2] in planes]
        if pairs:
            truth_planes = [t for _, t in pairs]
            out["plane_accuracy"] = round(float(np.mean([p == t for p, t in pairs])), 4)
            out["plane_majority"] = round(max(truth_planes.count(p) for p in set(truth_planes)) / len(truth_planes), 4)
            out["plane_samples"] = len(pairs)
    return out


def load_medpix_modality_samples(folder: str | Path) -> list[tuple[str, str, str | None, str]]:
    """(image path, modality, plane, case id) of every MedPix image present (modality from modality_type)."""
    from medrag.ingest.images import normalise_modality
    from medrag.storage import iter_json_lines

    folder = Path(folder).expanduser()
    listing = folder / "images.jsonl"
    if not listing.is_file():
        raise InputError(f"{listing} not found: pass the MedPix folder (e.g. ../shared/data/medpix)")
    samples = []
    with listing.open(encoding="utf-8") as lines:
        for _, row in iter_json_lines(lines, listing):
            modality = normalise_modality(row.get("modality_type") or row.get("modality"))
            if row.get("file") and modality and (folder / row["file"]).is_file():
                samples.append((str(folder / row["file"]), modality, (row.get("plane") or "").lower() or None, str(row.get("case_id"))))
    return samples
