"""Modality detection for images without a DICOM tag or a caller's word: rules, or a trained classifier.

``detect_modality`` is what ``load_image`` (and so the agent's intake) uses: the trained
classifier when one is configured (``$MEDRAG_MODALITY_MODEL``, else
``$MEDRAG_HOME/models/modality``) and confident, else the rules of ``guess_modality``.

Rules (measured on the shared data: 11 chest/limb radiographs vs 763 MedPix CT/MR PNGs):
- colour (channels differ) -> "photo" (fundus, dermatology, endoscopy photographs);
- grey with a large near-black background (> 20% of pixels within 4% of the minimum)
  -> "unknown": that is the look of a CT or MR slice, and the two cannot be told
  apart from grey levels alone;
- grey, little background, but dark overall (mean < 0.33) or with many mostly-dark rows
  (>= 20%) -> "unknown": a zoomed or cropped slice, not the even exposure of a film;
- other grey images -> "xray" (all 11 radiographs; 77 of the 763 MedPix CT/MR PNGs (10%)
  still land here, against 181 (24%) with the first two rules alone).

Limits: a grey crop of a photograph, a bright zoomed CT/MR crop, a scout view or an
ultrasound can still be called "xray"; colour-rendered radiology (overlays, PET fusion)
is called "photo". Pass ``modality=`` (or use DICOM) whenever the caller knows better,
or train a classifier (``medrag images train-modality``) and save it where
``detect_modality`` looks.

``ModalityClassifier`` is the trained alternative: modality and plane by multinomial
logistic regression (or, for modality, a one-hidden-layer perceptron) on image statistics
(optionally with the ``image_physics`` cues, the ``image_texture`` histograms, the ``image_scattering``
wavelet coefficients and an image embedder's vectors, or an ensemble of regressions: one on the grey-level
blocks, one on the scattering coefficients, one on the embedder's vectors), trained on one or
more views of each image (``image_view``: mirrored, centre-cropped) with the probabilities
averaged over the same views at prediction, its L2 strength picked by cross-validation over
training cases; image search uses it
to route a query image to the cases of its own modality. ``apply_label_audit`` corrects
labels an audit found wrong (evals/medpix_label_audit.jsonl) for the tools that ask for it.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medrag.errors import InputError, ModelUnavailable

log = logging.getLogger(__name__)

DARK_BACKGROUND_FRACTION = 0.20
COLOUR_MEAN_DIFFERENCE = 6.0  # grey levels (0-255) between channels
FILM_MIN_MEAN = 0.33  # radiographs in the shared data: mean grey 0.34-0.75; CT/MR slices: median 0.23
FILM_MAX_DARK_ROWS = 0.20  # radiographs: at most 12% of rows mostly dark (a cartoon film in the tests: 17%); zoomed slices often more
MODEL_ENV = "MEDRAG_MODALITY_MODEL"
MODEL_MIN_CONFIDENCE = 0.6
MODEL_REASON = "trained classifier"  # how a reason from the classifier starts


def guess_modality(image) -> tuple[str, str]:
    """(modality, reason) for a MedicalImage loaded from PNG/JPEG/TIFF, by rules (no model)."""
    rgb = np.asarray(image.display, dtype=np.float32)
    spread = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])) / 2)
    if spread > COLOUR_MEAN_DIFFERENCE:
        return "photo", f"colour image (mean channel difference {spread:.1f} grey levels)"
    grey = rgb.mean(axis=2) / 255.0
    low = grey.min() + 0.04
    dark = float(np.mean(grey <= low))
    if dark > DARK_BACKGROUND_FRACTION:
        return "unknown", f"grey with {dark:.0%} near-black background: looks cross-sectional (CT or MR), cannot tell which"
    mean = float(grey.mean())
    dark_rows = float(np.mean(np.mean(grey <= 0.1, axis=1) > 0.5))
    if mean < FILM_MIN_MEAN or dark_rows >= FILM_MAX_DARK_ROWS:
        return "unknown", (f"grey with little background but dark (mean {mean:.2f}, {dark_rows:.0%} mostly-dark rows): "
                           "more like a cropped CT or MR slice than a radiograph; cannot tell which")
    return "xray", f"grey, evenly exposed, without a large black background ({dark:.0%} near-black, mean {mean:.2f}): radiograph-like"


def configured_model_folder() -> Path | None:
    """The trained classifier ``detect_modality`` uses: $MEDRAG_MODALITY_MODEL, else $MEDRAG_HOME/models/modality (if saved)."""
    named = os.environ.get(MODEL_ENV)
    if named:
        return Path(named).expanduser()
    from medrag.config import DEFAULT_HOME

    home = Path(os.environ.get("MEDRAG_HOME") or DEFAULT_HOME).expanduser()
    folder = home / "models" / "modality"
    return folder if (folder / "config.json").is_file() else None


@functools.lru_cache(maxsize=4)
def _cached_classifier(folder: str, mtime: float) -> ModalityClassifier:
    return ModalityClassifier(folder)  # mtime in the key: a retrained folder is reloaded


def detect_modality(image, model_folder: str | Path | None = None) -> tuple[str, str]:
    """(modality, reason): a trained classifier's answer when one is configured and confident, else the rules.

    A classifier trained on an image embedder's vectors cannot run here (intake has no
    embedder); it is skipped with a log line and the rules answer.
    """
    folder = Path(model_folder) if model_folder else configured_model_folder()
    if folder is not None:
        try:
            classifier = _cached_classifier(str(folder), (folder / "config.json").stat().st_mtime)
            if classifier.config["features"].get("embedder"):
                raise ModelUnavailable(f"{folder} needs an image embedder's vectors")
            rules = guess_modality(image)
            if rules[0] == "photo" and "photo" not in classifier.modalities:
                return rules  # colour is a reliable rule; a model never shown photographs cannot overrule it
            prediction = classifier.predict(image)
        except (ModelUnavailable, OSError) as exc:
            log.warning("modality classifier %s not used: %s", folder, exc)
        else:
            if prediction.confidence >= MODEL_MIN_CONFIDENCE:
                return prediction.modality, f"{MODEL_REASON} {folder.name}: {prediction.modality} (p={prediction.confidence:.2f})"
            modality, reason = rules
            return modality, f"{reason}; the trained classifier was unsure ({prediction.modality} p={prediction.confidence:.2f})"
    return guess_modality(image)


# --- a trained classifier: modality and plane from image statistics ------------------------

CLASSIFIER_KIND = "medrag.modality-classifier"
CLASSIFIER_VERSION = 6  # 6: image_scattering_v1 block, ensembles of up to three members; 5: image_texture_v1, perceptron head;
# 4: views, image_physics_v1, ensemble (v3-v5 still load; v2: "train it again")
READABLE_VERSIONS = (3, 4, 5, 6)
STATISTICS = "image_statistics_v3"
PHYSICS = "image_physics_v1"
TEXTURE = "image_texture_v1"
SCATTERING = "image_scattering_v1"
SCATTERING_SIDE, SCATTERING_SCALES, SCATTERING_ORIENTATIONS = 256, 4, 8  # 417 channels of 16 x 16 averages
ENSEMBLE_ALONE = (SCATTERING, "embedder")  # sources an ensemble gives a regression of their own; the rest share one
TEXTURE_PATTERNS = ((8, 1), (8, 2), (16, 4))  # (neighbours, radius in px on the 256 px square) of the LBP histograms
VIEWS = ("original", "hflip", "crop90")  # the views a classifier can be trained and asked on (see image_view)
CROP_FRACTION = 0.9
HISTOGRAM_BINS = 32
THUMBNAIL = 16
MAX_SIDE = 512  # statistics are measured on the image shrunk to at most this side: bounded cost, same look
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MLP_HIDDEN = 256
MLP_ALPHA_GRID = (0.1, 0.3, 1.0)  # L2 strength of the perceptron head, chosen by grouped cross-validation like C
MLP_MAX_ITER = 300
CV_FOLDS = 5


def _gray_u8(image) -> tuple[np.ndarray, float, tuple[int, int]]:
    """(grey uint8 array at most MAX_SIDE a side, colour spread 0-1, original (width, height))."""
    from PIL import Image

    from medrag.embed.image_text import to_gray_array

    pil = image.display if hasattr(image, "display") else image
    size = pil.size
    if pil.mode in ("RGB", "RGBA", "P"):
        rgb = np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0
        colour = float(np.mean(np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])) / 2)
    else:
        colour = 0.0
    gray = Image.fromarray((to_gray_array(pil) * 255.0).round().astype(np.uint8), "L")
    if max(gray.size) > MAX_SIDE:
        scale = MAX_SIDE / max(gray.size)
        gray = gray.resize((max(2, round(gray.width * scale)), max(2, round(gray.height * scale))), Image.BILINEAR)
    return np.asarray(gray), colour, size


def _square(gray: np.ndarray, n: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(gray).resize((n, n), Image.BILINEAR), dtype=np.float32) / 255.0


def _spread(values: np.ndarray) -> list[float]:
    return [float(values.mean()), float(np.median(values)), float(np.percentile(values, 90))] if values.size > 10 else [0.0, 0.0, 0.0]


def _body_mask(x: np.ndarray) -> np.ndarray:
    """The largest bright-enough region, holes filled: the body (or the whole image when nothing stands out)."""
    from scipy import ndimage

    mask = ndimage.binary_opening(x > float(x.min()) + 0.06, iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.ones(x.shape, dtype=bool)
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


PROFILE_DEPTHS = (1, 2, 3, 4, 6, 8, 11, 15, 20, 26)  # pixels inside the body outline, on the 256 px square


def _depth_profile(x: np.ndarray, body: np.ndarray) -> list[float]:
    """Grey level (relative to the body's median), saturated and near-black shares at depths inside the body outline.

    The layers under the skin differ: on CT a saturated skull or dark subcutaneous fat, on MR bright
    fat over a dark cortical-bone band. Zeros when the body fills the frame (no outline to measure from).
    """
    from scipy import ndimage

    if body.all() or body.sum() < 50:
        return [0.0] * (3 * (len(PROFILE_DEPTHS) - 1) + 1)
    depth = ndimage.distance_transform_edt(body)
    median = float(np.median(x[body])) + 0.02
    out = []
    for a, b in itertools.pairwise(PROFILE_DEPTHS):
        values = x[(depth >= a) & (depth < b)]
        out += [values.mean() / median, np.mean(values >= 0.97), np.mean(values <= 0.12)] if values.size > 5 else [0.0, 0.0, 0.0]
    return out + [float(np.mean(np.concatenate([body[0], body[-1], body[:, 0], body[:, -1]])))]


def _bright_and_dark_structures(x: np.ndarray, body: np.ndarray) -> list[float]:
    """Share of bright (>= 0.9, >= 0.97) and near-black (<= 0.05, <= 0.15) pixels in the body, how many survive one
    and two erosions (thin cortical bone vs solid areas) and how fragmented the bright ones are."""
    from scipy import ndimage

    area = max(1, int(body.sum()))
    out = []
    for t in (0.9, 0.97):
        bright = (x >= t) & body
        n = int(bright.sum())
        count = ndimage.label(bright)[1]
        out += [n / area, ndimage.binary_erosion(bright).sum() / max(1, n), ndimage.binary_erosion(bright, iterations=2).sum() / max(1, n),
                np.log1p(count), np.log1p(count) - np.log1p(n)]
    for t in (0.05, 0.15):
        dark = (x <= t) & body
        n = int(dark.sum())
        out += [n / area, ndimage.binary_erosion(dark).sum() / max(1, n), ndimage.binary_erosion(dark, iterations=2).sum() / max(1, n)]
    return out + [float(body.mean())]


def _noise(x: np.ndarray, body: np.ndarray) -> list[float]:
    """Residual to a 3x3 median in the body and in the background, background level and spread, and a histogram of
    the local coefficient of variation in the body (CT noise is even and additive; MR grain scales with the signal)."""
    from scipy import ndimage

    residual = np.abs(x - ndimage.median_filter(x, 3))
    background = ~ndimage.binary_dilation(body, iterations=3)
    out: list[float] = []
    for where in (body, background):
        v = residual[where]
        out += [v.mean(), np.median(v), np.percentile(v, 90), np.mean(v > 0.02)] if v.size > 20 else [0.0] * 4
    v = x[background]
    out += [v.std(), v.mean()] if v.size > 20 else [0.0, 0.0]
    mean = ndimage.uniform_filter(x, 5)
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(x * x, 5) - mean * mean, 0.0))
    cv = sd[body] / (mean[body] + 0.02)
    return out + list(np.histogram(cv, bins=8, range=(0.0, 0.8))[0] / max(1, cv.size))


def _cooccurrence(x: np.ndarray, body: np.ndarray, levels: int = 8, distances: Sequence[int] = (1, 4)) -> np.ndarray:
    """The symmetric grey-level co-occurrence matrix itself (8 levels, inside the body, right and down neighbours):
    which grey levels touch which (on CT saturated bone borders grey tissue; on MR bright fat borders black bone)."""
    q = np.minimum((x * levels).astype(int), levels - 1)
    upper = np.triu_indices(levels)
    out = []
    for d in distances:
        m = np.zeros((levels, levels))
        for a, b, ok in ((q[:, :-d], q[:, d:], body[:, :-d] & body[:, d:]), (q[:-d], q[d:], body[:-d] & body[d:])):
            np.add.at(m, (a[ok], b[ok]), 1)
        m = m + m.T
        out.append(m[upper] / max(1.0, m.sum()))
    return np.concatenate(out)


def image_statistics(image) -> np.ndarray:
    """Features of one image (PIL image or MedicalImage) that tell modalities and planes apart.

    Grey levels: a 32-bin histogram and its cumulative sum, percentiles, the share of pure
    black / saturated / background pixels (CT windows clip air to 0 and bone to 255; MR
    backgrounds are noisy), the histogram and moments of the foreground. Layout: border
    and corner means, mostly-dark rows and columns, log aspect and size, a mean-centred
    16x16 thumbnail (an axial slice is round, a sagittal one tall). Texture: gradient and
    Laplacian statistics at three scales (noise grain differs between CT and MR), local
    binary patterns and grey-level co-occurrence properties. Added in v3 (on the body, the
    largest bright region): grey level and saturated / near-black shares against depth under
    the body outline, bright and dark structures and how thin they are, noise residuals and
    local coefficient of variation, the 8-level co-occurrence matrix itself. Last: colour
    (channel spread), so photographs separate from grey scans.
    """
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    g, colour, (width, height) = _gray_u8(image)
    x = g.astype(np.float32) / 255.0
    lo, hi = float(x.min()), float(x.max())
    hist = np.histogram(x, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] / x.size
    parts = [hist, np.cumsum(hist), np.percentile(x, [1, 5, 10, 25, 50, 75, 90, 95, 99])]
    dark = x <= lo + 0.04
    dark_values = x[dark]
    parts.append([np.mean(x <= lo + 0.01), dark.mean(), np.mean(x <= 0.1), np.mean(x >= 0.98), np.mean(x >= hi - 0.01),
                  np.mean(g == 0), np.mean(g == 255), lo, hi, dark_values.std() if dark_values.size else 0.0,
                  len(np.unique(g)) / 256, len(np.unique(g[g > int(g.min()) + 25])) / 256])
    fg = x[x > lo + 0.06]
    if fg.size < 10:
        fg = x.ravel()
    m, s = float(fg.mean()), float(fg.std()) + 1e-6
    z = (fg - m) / s
    parts += [np.histogram(fg, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] / fg.size,
              [m, s, np.mean(z**3), np.mean(z**4), fg.size / x.size, np.mean(fg > 0.9), np.mean(fg > 0.95), np.mean(fg < 0.2)]]
    h, w = x.shape
    b = max(1, min(h, w) // 16)
    parts.append([x[:b].mean(), x[-b:].mean(), x[:, :b].mean(), x[:, -b:].mean(), x[:b, :b].mean(), x[:b, -b:].mean(),
                  x[-b:, :b].mean(), x[-b:, -b:].mean(), x[:b].std(), x[-b:].std(), x[:, :b].std(), x[:, -b:].std(),
                  dark[: max(1, h // 8)].mean(), dark[-max(1, h // 8):].mean(), dark[:, : max(1, w // 8)].mean(),
                  dark[:, -max(1, w // 8):].mean(), dark[h // 4 : 3 * h // 4 + 1, w // 4 : 3 * w // 4 + 1].mean(),
                  np.mean(np.mean(x <= 0.1, axis=1) > 0.5), np.mean(np.mean(x <= 0.1, axis=0) > 0.5),
                  np.log(width / height), np.log(width * height)])
    texture = []
    lap_full = np.abs(4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]) if min(h, w) > 2 else np.zeros((1, 1))
    inner = x[1:-1, 1:-1] if min(h, w) > 2 else x[:1, :1]
    texture += _spread(lap_full[dark[1:-1, 1:-1]] if min(h, w) > 2 else lap_full.ravel())
    texture += _spread(lap_full[inner > lo + 0.1]) + _spread(lap_full.ravel())
    squares = {n: _square(g, n) for n in (64, 128, 256)}  # each size resized once, used by several features
    for sq in squares.values():
        gx, gy = np.diff(sq, axis=1), np.diff(sq, axis=0)
        lap = np.abs(4 * sq[1:-1, 1:-1] - sq[:-2, 1:-1] - sq[2:, 1:-1] - sq[1:-1, :-2] - sq[1:-1, 2:])
        mask = sq[1:-1, 1:-1] > lo + 0.06
        lap_fg = lap[mask] if mask.sum() > 10 else lap.ravel()
        texture += [np.abs(gx).mean(), np.abs(gy).mean(), lap.mean(), np.median(lap_fg), np.percentile(lap_fg, 90), lap_fg.mean()]
        magnitude = np.hypot(gx[:-1, :], gy[:, :-1]).ravel()
        texture += list(np.histogram(magnitude, bins=8, range=(0.0, 0.5))[0] / magnitude.size)
    parts.append(texture)
    s128 = (squares[128] * 255).astype(np.uint8)
    body = s128 > int(lo * 255) + 15
    for points, radius in ((8, 1), (8, 2)):
        codes = local_binary_pattern(s128, points, radius, method="uniform")
        values = codes[body] if body.sum() > 10 else codes.ravel()
        parts.append(np.bincount(values.astype(int), minlength=points + 2)[: points + 2] / values.size)
    co = graycomatrix((squares[256] * 31.99).astype(np.uint8), [1, 3], [0, np.pi / 2], levels=32, symmetric=True, normed=True)
    parts.append(np.concatenate([graycoprops(co, p).ravel() for p in ("contrast", "homogeneity", "energy", "correlation", "dissimilarity")]))
    # v3: structure under the body outline, bright/dark structures, noise, co-occurrence (see the helpers).
    x256, x128 = squares[256], squares[128]
    body256, body128 = _body_mask(x256), _body_mask(x128)
    parts += [_depth_profile(x256, body256), _bright_and_dark_structures(x256, body256), _noise(x128, body128),
              _cooccurrence(x256, body256)]
    thumb = _square(g, THUMBNAIL).ravel()
    parts += [thumb - thumb.mean(), [colour]]
    out = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def image_view(image, view: str):
    """One view of an image (PIL image or MedicalImage) as a PIL image: ``original``, ``hflip`` (mirrored left to
    right) or ``crop90`` (the central 90% of each side, a slightly closer framing).

    A classifier trained with several views learns from each of them (augmentation) and averages its class
    probabilities over the same views when it predicts (test-time augmentation).
    """
    from PIL import ImageOps

    pil = image.display if hasattr(image, "display") else image
    if view == "original":
        return pil
    if view == "hflip":
        return ImageOps.mirror(pil)
    if view == "crop90":
        w, h = pil.size
        dw, dh = round(w * (1 - CROP_FRACTION) / 2), round(h * (1 - CROP_FRACTION) / 2)
        return pil.crop((dw, dh, w - dw, h - dh)) if w - 2 * dw >= 2 and h - 2 * dh >= 2 else pil
    raise InputError(f"unknown image view {view!r}: use one of {list(VIEWS)}")


def _physics(g: np.ndarray, x: np.ndarray, body: np.ndarray) -> list[float]:
    """The cues of ``image_physics`` from the grey image at up to MAX_SIDE (uint8), its 256 px square and the body mask."""
    from scipy import ndimage

    out: list[float] = []
    # Soft tissue: one narrow grey band on CT (muscle, organs, brain lie within ~50 HU), spread out on MR.
    v = x[body & (x > 0.05) & (x < 0.95)]
    if v.size > 50:
        hist = np.histogram(v, bins=64, range=(0.0, 1.0))[0].astype(np.float64)
        mode = (np.argmax(np.convolve(hist, np.ones(3) / 3, mode="same")) + 0.5) / 64
        q = np.percentile(v, [10, 25, 75, 90])
        out += [np.mean(np.abs(v - mode) <= d) for d in (0.02, 0.05, 0.1)] + [q[2] - q[1], q[3] - q[0], mode]
    else:
        out += [0.0] * 6
    # Bias field: a slow change of brightness across the body (MR receive coils), none on CT.
    w = body.astype(np.float32)
    sigma = max(2.0, x.shape[0] / 12)
    low = ndimage.gaussian_filter(x * w, sigma) / np.maximum(ndimage.gaussian_filter(w, sigma), 1e-3)
    inner = ndimage.binary_erosion(body, iterations=int(sigma)) if body.sum() > 2000 else body
    if inner.sum() < 50:
        inner = body
    if inner.sum() >= 3:
        lv, xv = low[inner], x[inner]
        m = float(xv.mean()) + 0.02
        yy, xx = np.nonzero(inner)
        design = np.stack([np.ones(yy.size), yy / x.shape[0], xx / x.shape[1]], axis=1)
        coef = np.linalg.lstsq(design, xv, rcond=None)[0]
        out += [lv.std() / m, lv.std() / (xv.std() + 1e-3), np.hypot(coef[1], coef[2]) / m, (np.percentile(lv, 95) - np.percentile(lv, 5)) / m]
    else:
        out += [0.0] * 4
    # Flat plateaus at full resolution: CT windows clip air to exact black and bone to exact white; MR is rarely flat.
    if min(g.shape) > 4:
        flat = ndimage.maximum_filter(g, 3) == ndimage.minimum_filter(g, 3)
        lo = int(g.min())
        black = g <= lo + 2
        out += [np.mean(flat & black), np.mean(flat & (g >= 253)), np.mean(flat & ~black & (g < 253)), np.mean(flat[black])]
    else:
        out += [0.0] * 4
    # Background: MR magnitude noise is Rician (std / mean about 0.52 where there is no signal); CT air is flat.
    b = x[~ndimage.binary_dilation(body, iterations=3)]
    out += [b.std() / (b.mean() + 1e-3), np.mean(b == b.min()), np.mean(b > b.min() + 0.02)] if b.size > 50 else [0.0] * 3
    return [float(o) for o in out]


def image_physics(image) -> np.ndarray:
    """Physically motivated CT-vs-MR cues of one image (PIL image or MedicalImage), 17 numbers (image_physics_v1).

    How narrow the body's soft-tissue grey band is around its mode (CT: Hounsfield units put soft tissues
    close together; MR contrasts spread them), the slow brightness change across the body (the bias field of MR
    coils: spread of a heavily smoothed body and the slope of a plane fitted to it), exactly flat black, white and
    grey 3x3 patches (CT windows clip air and bone) and the background's noise (MR: Rician, never exactly flat).
    """
    g, _, _ = _gray_u8(image)
    x = _square(g, 256)
    out = np.asarray(_physics(g, x, _body_mask(x)), dtype=np.float64)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def image_texture(image) -> np.ndarray:
    """Local texture of one image (PIL image or MedicalImage): 76 numbers (image_texture_v1).

    Histograms of rotation-invariant uniform local binary patterns at three radii (``TEXTURE_PATTERNS``)
    over the body and over the brightest tenth of the image. Why: CT and MR differ in fine texture (CT
    quantum noise and sharp cortical bone edges; MR's smoother signal, bright fat and signal-free bone),
    which grey-level statistics on a thumbnail miss.
    """
    import warnings

    from skimage.feature import local_binary_pattern

    g, _, _ = _gray_u8(image)
    x = _square(g, 256)
    levels = (x * 255.0).round().astype(np.uint8)
    masks = (_body_mask(x), x >= np.percentile(x, 90))
    out: list[float] = []
    for neighbours, radius in TEXTURE_PATTERNS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage warns on flat images; their histogram is all one pattern
            codes = local_binary_pattern(levels, neighbours, radius, "uniform").astype(np.int64)
        for mask in masks:
            counts = np.bincount(codes[mask], minlength=neighbours + 2)[: neighbours + 2].astype(np.float64)
            out += list(counts / max(counts.sum(), 1.0))
    return np.asarray(out, dtype=np.float32)


def image_scattering(image) -> np.ndarray:
    """Wavelet scattering coefficients of one image (PIL image or MedicalImage) over its body: 834 numbers
    (image_scattering_v1).

    The 256 px square's scattering transform to order 2 (4 scales, 8 orientations: 417 channels, see
    ``medrag.vision.scattering``), each channel's mean and spread over the 16 x 16 cells inside the body,
    divided by the body's mean grey level (contrast-invariant) and log-compressed. Why: texture energy at each
    scale and orientation, and how it is modulated (order 2), separates CT from MR better than grey levels
    alone, and a linear model on it makes errors the grey-level model does not (so an ensemble gains).
    """
    from PIL import Image

    from medrag.vision.scattering import scattering

    g, _, _ = _gray_u8(image)
    x = _square(g, SCATTERING_SIDE)
    coefficients = scattering(x, SCATTERING_SCALES, SCATTERING_ORIENTATIONS)
    cells = coefficients.shape[-1]
    body = np.asarray(Image.fromarray(_body_mask(x).astype(np.uint8) * 255).resize((cells, cells), Image.BILINEAR)) > 127
    if body.sum() < 4:
        body = np.ones_like(body)
    inside = coefficients[:, body]
    scale = float(inside[0].mean()) + 1e-3  # order 0: the body's mean grey level
    out = np.concatenate([np.log1p(inside.mean(axis=1) / scale * 10), np.log1p(inside.std(axis=1) / scale * 10)])
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


IMAGE_FEATURES = {STATISTICS: image_statistics, PHYSICS: image_physics, TEXTURE: image_texture,
                  SCATTERING: image_scattering}  # per-image feature blocks by their saved name


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


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 0.01, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Multinomial logistic regression with L2 (as scikit-learn's C): weights (d + 1, k), bias last.

    L-BFGS on the (weighted) mean cross-entropy plus ||W||^2 / (2 C n); deterministic (starts at zero).
    """
    from scipy.optimize import minimize

    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1), dtype=x.dtype)]).astype(np.float64)
    onehot = np.eye(n_classes)[y]
    weight = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64) * n / np.sum(sample_weight)
    penalty = 1.0 / (c * n)

    def loss(flat: np.ndarray):
        w = flat.reshape(d + 1, n_classes)
        p = _softmax(xb @ w)
        value = -np.mean(weight * np.sum(onehot * np.log(p + 1e-12), axis=1)) + 0.5 * penalty * np.sum(w[:-1] ** 2)
        grad = xb.T @ (weight[:, None] * (p - onehot)) / n
        grad[:-1] += penalty * w[:-1]
        return value, grad.ravel()

    result = minimize(loss, np.zeros((d + 1) * n_classes), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return result.x.reshape(d + 1, n_classes).astype(np.float32)


def _fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, strength: float, sample_weight: np.ndarray | None) -> dict:
    return {"w": fit_softmax(x, y, n_classes, strength, sample_weight)}


def _logistic_logits(x: np.ndarray, params: dict) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)]) @ params["w"]


def _fit_mlp(x: np.ndarray, y: np.ndarray, n_classes: int, strength: float, sample_weight: np.ndarray | None) -> dict:
    """A one-hidden-layer perceptron (scikit-learn's, Adam, L2 ``strength``), kept as plain arrays: numpy predicts."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed budget of epochs is the point, not convergence
        net = MLPClassifier((MLP_HIDDEN,), alpha=strength, max_iter=MLP_MAX_ITER, random_state=0).fit(x, y, sample_weight=sample_weight)
    w2, b2 = net.coefs_[1], net.intercepts_[1]
    if len(net.classes_) == 2:  # scikit-learn gives two classes one logistic output: logits (0, z) mean the same
        w2, b2 = np.hstack([np.zeros_like(w2), w2]), np.array([0.0, b2[0]])
    full_w2, full_b2 = np.zeros((w2.shape[0], n_classes)), np.full(n_classes, -1e4)  # a class this fit never saw never wins
    full_w2[:, net.classes_], full_b2[net.classes_] = w2, b2
    return {"w1": net.coefs_[0].astype(np.float32), "b1": net.intercepts_[0].astype(np.float32),
            "w2": full_w2.astype(np.float32), "b2": full_b2.astype(np.float32)}


def _mlp_logits(x: np.ndarray, params: dict) -> np.ndarray:
    return np.maximum(x @ params["w1"] + params["b1"], 0.0) @ params["w2"] + params["b2"]


@dataclass(frozen=True)
class ClassifierHead:
    """One kind of classification head: how to fit it, its logits, its L2 strength grid and name."""

    fit: Callable[..., dict]
    logits: Callable[[np.ndarray, dict], np.ndarray]
    grid: tuple[float, ...]
    strength: str  # the config key of the L2 setting ("C": smaller is stronger; "alpha": larger is stronger)
    description: str

    def regularisation(self, value: float) -> float:
        """Larger means more regularised (ties in cross-validation go to the more regularised value)."""
        return -value if self.strength == "C" else value


HEADS = {
    "logistic": ClassifierHead(_fit_logistic, _logistic_logits, C_GRID, "C", "multinomial logistic regression (L-BFGS)"),
    "mlp": ClassifierHead(_fit_mlp, _mlp_logits, MLP_ALPHA_GRID, "alpha",
                          f"one-hidden-layer perceptron ({MLP_HIDDEN} ReLU units, Adam, {MLP_MAX_ITER} epochs, L2 alpha)"),
}


def _head(kind: str) -> ClassifierHead:
    if kind not in HEADS:
        raise InputError(f"unknown classifier head {kind!r}: use one of {list(HEADS)}")
    return HEADS[kind]


def _fold_of(group: str, folds: int) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"cv:{group}".encode()).digest()[:8], "big") % folds


def _as_views(x: np.ndarray) -> np.ndarray:
    """Features as (views, samples, dim): a plain (samples, dim) matrix is one view."""
    return x[None] if x.ndim == 2 else x


def _fit_views(x: np.ndarray, y: np.ndarray, n_classes: int, c: float, balanced: bool = True, head: str = "logistic") -> dict:
    """Fit a head on every view of every sample (x: (views, samples, dim), standardised), each view a training row."""
    views = x.shape[0]
    yy = np.tile(y, views)
    return _head(head).fit(x.reshape(-1, x.shape[-1]), yy, n_classes, c, balanced_weights_full(yy, n_classes) if balanced else None)


def _view_probabilities(x: np.ndarray, params: dict, head: str = "logistic") -> np.ndarray:
    """Class probabilities of (views, samples, dim) standardised features, averaged over the views: (samples, classes)."""
    x = _as_views(x)
    logits = _head(head).logits(x.reshape(-1, x.shape[-1]), params)
    return _softmax(logits).reshape(x.shape[0], x.shape[1], -1).mean(axis=0)


def _store_head(weights: dict, key: str, params: dict) -> None:
    # A logistic head stays one array under its key, as format 3 and 4 folders hold it; other heads: "key.name".
    if set(params) == {"w"}:
        weights[key] = params["w"]
    else:
        weights.update({f"{key}.{name}": value for name, value in params.items()})


def _stored_head(weights: dict, key: str) -> dict:
    if key in weights:
        return {"w": weights[key]}
    return {name[len(key) + 1:]: value for name, value in weights.items() if name.startswith(key + ".")}


def _one_blas_thread(fn: Callable) -> Callable:
    """Run FN with BLAS limited to one thread. Why: the regressions multiply matrices of a few thousand rows, where
    BLAS threads cost more than they give (a fit is about 2x faster on one), and the CV folds run in parallel threads
    instead. Applied to the functions callers enter from their own thread, never inside the fold threads: a limit set
    and restored by concurrent threads could leave BLAS at one thread for good."""

    @functools.wraps(fn)
    def limited(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return limited


@_one_blas_thread
def cv_probabilities(x: np.ndarray, y: np.ndarray, groups: Sequence[str], n_classes: int, c: float, folds: int = CV_FOLDS,
                     balanced: bool = True, head: str = "logistic") -> np.ndarray:
    """Out-of-fold class probabilities (samples, classes) of grouped cross-validation (whole groups per fold).

    ``x`` is (samples, dim) or (views, samples, dim): a fold trains on every view of its training samples and
    averages the probabilities over the views of each held-apart sample, as a classifier with those views predicts.
    Standardisation is refitted inside each fold. Rows of a fold that cannot be trained (one class) stay zero.
    Logistic folds are fitted in parallel threads (one per CPU; the fits are deterministic, so the result is the same).
    """
    from concurrent.futures import ThreadPoolExecutor

    x = _as_views(x)
    fold = np.array([_fold_of(g, folds) for g in groups])
    out = np.zeros((len(y), n_classes))

    def fit_fold(k: int) -> tuple[np.ndarray, np.ndarray] | None:
        train, test = fold != k, fold == k
        if not test.any() or len(np.unique(y[train])) < 2:
            return None
        flat = x[:, train].reshape(-1, x.shape[-1])
        mean, std = flat.mean(axis=0), flat.std(axis=0) + 1e-6
        params = _fit_views((x[:, train] - mean) / std, y[train], n_classes, c, balanced, head)
        return test, _view_probabilities((x[:, test] - mean) / std, params, head)

    # The perceptron's folds stay serial: it silences scikit-learn's convergence warning with warnings.catch_warnings,
    # which is not thread-safe.
    threads = min(folds, feature_workers()) if head == "logistic" else 1
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for fitted in pool.map(fit_fold, range(folds)):
            if fitted is not None:
                out[fitted[0]] = fitted[1]
    return out


def _accuracy(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Share of rows whose most probable class is y; rows left at zero (a fold that could not be trained) count as wrong."""
    return round(float(np.mean((probabilities.argmax(axis=1) == y) & (probabilities.sum(axis=1) > 0))), 4)


def choose_c(x: np.ndarray, y: np.ndarray, groups: Sequence[str], n_classes: int, grid: Sequence[float] | None = None,
             folds: int = CV_FOLDS, head: str = "logistic") -> tuple[float, dict[str, float]]:
    """The L2 strength (C, or alpha for the perceptron) with the best accuracy in grouped cross-validation (whole groups
    per fold), and every value's accuracy.

    Only the training samples take part, so the choice never sees held-out cases. ``x`` may hold several views
    (see ``cv_probabilities``). ``grid`` defaults to the head's. Ties go to the stronger regularisation.
    """
    kind = _head(head)
    grid = kind.grid if grid is None else grid
    scores: dict[str, float] = {}
    for c in grid:
        scores[str(c)] = _accuracy(cv_probabilities(x, y, groups, n_classes, c, folds, head=head), y)
    best = max(grid, key=lambda c: (scores[str(c)], kind.regularisation(c)))
    return best, scores


def balanced_weights_full(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample weights proportional to 1 / sqrt(count of its class), mean 1.

    Why the square root: a class of a dozen radiographs should still count next to hundreds of
    CT slices, but full inverse frequency would let each of them weigh as much as 40 slices.
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts[y], 1.0))
    return w * len(y) / w.sum()


class ModalityClassifier:
    """A saved modality (and plane) classifier; weights load on first use.

    Folder: config.json (labels, feature recipe, training data and held-out accuracy),
    weights.npz (feature mean/std, one weight matrix per head), manifest.json (sha256 of both).
    The recipe (``features``: which feature sources, which views) is applied as it was in training:
    with several views the class probabilities are averaged over them; an ensemble (``model.blocks``)
    averages the probabilities of one regression per feature source. v3 folders (one view, one
    regression) load as before. Train one with ``train_modality_classifier`` or ``medrag images train-modality``.
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
            if config.get("kind") != CLASSIFIER_KIND or config.get("format_version") not in READABLE_VERSIONS:
                raise ModelUnavailable(f"{self.folder} is not a {CLASSIFIER_KIND} v{'/v'.join(map(str, READABLE_VERSIONS))} "
                                       f"(format_version {config.get('format_version')}): train it again")
            unknown = [v for v in _recipe(config)["views"] if v not in VIEWS]
            if unknown:
                raise ModelUnavailable(f"{self.folder} asks for image views {unknown} this version does not know: update medrag or retrain")
            if config["model"].get("head", "logistic") not in HEADS:
                raise ModelUnavailable(f"{self.folder} has a {config['model']['head']!r} head this version does not know: "
                                       "update medrag or retrain")
            self._config = config
        return self._config

    @property
    def modalities(self) -> list[str]:
        return list(self.config["heads"]["modality"])

    @property
    def recipe(self) -> dict:
        """Which feature blocks (statistics, physics, texture, scattering: booleans) and views the classifier was trained on."""
        return _recipe(self.config)

    @property
    def views(self) -> tuple[str, ...]:
        return self.recipe["views"]

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
        """The classifier's input for PIL images or MedicalImages: (views, images, dim)."""
        self.setup()
        recipe = _recipe(self.config)
        return _features(images, self.embedder if self.config["features"].get("embedder") else None, _recipe_blocks(recipe),
                         recipe["views"])

    def probabilities(self, features: np.ndarray, head: str = "modality") -> np.ndarray:
        """Class probabilities (images, classes) of a head for features (images, dim) or (views, images, dim),
        averaged over the views and, for an ensemble's modality head, over its blocks."""
        self.setup()
        x = (_as_views(np.asarray(features, dtype=np.float32)) - self._weights["mean"]) / self._weights["std"]
        blocks = self.config["model"].get("blocks") if head == "modality" else None
        if not blocks:
            kind = self.config["model"].get("head", "logistic") if head == "modality" else "logistic"
            return _view_probabilities(x, _stored_head(self._weights, f"head_{head}"), kind)
        return np.mean([_view_probabilities(x[..., a:b], _stored_head(self._weights, f"head_{head}_{i}"))
                        for i, (a, b) in enumerate(block["columns"] for block in blocks)], axis=0)

    def predict_features(self, features: np.ndarray) -> list[ModalityPrediction]:
        """Predictions for features (images, dim) or (views, images, dim) as ``features`` returns them."""
        self.setup()
        heads = self.config["heads"]
        probs = {head: self.probabilities(features, head) for head in heads}
        out = []
        for i in range(len(probs["modality"])):
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


@_one_blas_thread
def train_modality_classifier(samples: Sequence[tuple[str, str, str | None, str]], out_dir: str | Path, *,
                              c: float | None = None, eval_samples: Sequence[tuple[str, str, str | None, str]] = (),
                              min_plane_examples: int = 20, min_modality_examples: int = 5, embedder=None,
                              statistics: bool = True, physics: bool = False, views: Sequence[str] = ("original",),
                              ensemble: bool = False, texture: bool = False, scattering: bool = False,
                              head: str = "logistic", progress: bool = False, workers: int | None = None) -> dict:
    """Fit the classifier on (image_path, modality, plane or None, group) samples and save it.

    Features: ``image_statistics``; with ``physics`` the cues of ``image_physics`` are appended; with
    ``texture`` the local-binary-pattern histograms of ``image_texture``; with ``scattering`` the wavelet
    scattering coefficients of ``image_scattering``; with
    ``embedder`` (an ImageTextEmbedder) its image vectors are appended (or used alone with ``statistics=False``),
    so an image index's own embedder helps routing (the classifier then only works with that embedder,
    checked by fingerprint). ``views`` (names in ``VIEWS``): every training image is seen in each view
    (augmentation) and predictions average the probabilities over the same views. ``ensemble``: instead of
    one regression on all features, one per member (the grey-level blocks: statistics, physics, texture; the
    scattering coefficients; the embedder's vectors), each with its own C, probabilities averaged (the plane
    head stays one regression). ``head``: the modality head, a key of
    ``HEADS``: "logistic" (multinomial logistic regression) or "mlp" (a perceptron with one hidden layer: it can
    combine cues non-linearly, and is slower to train; its L2 alpha is chosen like C; the plane head stays logistic).
    ``c`` is the inverse L2 strength; by default each head (and block) picks it from ``C_GRID`` by grouped
    cross-validation on ``samples`` (never on ``eval_samples``); the cross-validated accuracy of the whole
    model is stored as ``model.cv_modality_accuracy``. Classes are weighted by
    1/sqrt(frequency), so a small class (a dozen radiographs) is not drowned by hundreds of CT slices.
    Modalities with fewer than ``min_modality_examples`` images are left out (listed in the config).

    Planes seen fewer than ``min_plane_examples`` times are left out of the plane head.
    ``eval_samples`` (held apart, e.g. whole cases) give the accuracies stored in the config.
    Unreadable images are logged and skipped. ``progress`` shows a bar while image features are computed
    (the slow part: seconds per hundred images and view with scattering), by ``workers`` processes (default: one
    per CPU) when there are at least ``PARALLEL_FROM`` images.
    """
    import hashlib

    from medrag.storage import atomic_folder, utc_now, write_json

    blocks = _image_blocks(statistics, physics, texture, scattering)
    if embedder is None and not blocks:
        raise InputError("nothing to classify on: pass an embedder or keep statistics=True")
    views = tuple(views)
    if not views or len(set(views)) != len(views) or any(v not in VIEWS for v in views):
        raise InputError(f"views must be distinct names among {list(VIEWS)}, got {list(views)}")
    kind = _head(head)
    sources = _sources(blocks, embedder)
    members = _ensemble_members(sources)
    if ensemble and len(members) < 2:
        raise InputError("an ensemble needs at least two members among: grey-level blocks (statistics, physics, texture), "
                         f"scattering, an embedder; got {[m['features'] for m in members]}")
    if ensemble and head != "logistic":
        raise InputError("an ensemble is made of logistic regressions: leave head='logistic' or drop ensemble")
    feats, kept = _features_of(samples, embedder, blocks, views, progress=progress, workers=workers)  # (views, samples, dim)
    samples = [samples[i] for i in kept]
    counts = {m: sum(s[1] == m for s in samples) for m in sorted({s[1] for s in samples})}
    too_few = {m: n for m, n in counts.items() if n < min_modality_examples}
    if too_few:
        rows = [i for i, s in enumerate(samples) if s[1] not in too_few]
        feats, samples = feats[:, rows], [samples[i] for i in rows]
    modalities = sorted({s[1] for s in samples})
    if len(modalities) < 2:
        raise InputError(f"need images of at least two modalities to train, got {modalities}"
                         + (f" (left out with fewer than {min_modality_examples} images: {too_few})" if too_few else ""))
    plane_counts: dict[str, int] = {}
    for s in samples:
        if s[2]:
            plane_counts[s[2]] = plane_counts.get(s[2], 0) + 1
    planes = sorted(p for p, n in plane_counts.items() if n >= min_plane_examples)
    flat = feats.reshape(-1, feats.shape[-1])
    mean = flat.mean(axis=0)
    std = flat.std(axis=0) + 1e-6
    x = (feats - mean) / std
    weights = {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
    groups = [s[3] for s in samples]
    y = np.array([modalities.index(s[1]) for s in samples])
    chosen, cv, model_extra = {}, {}, {}
    if not ensemble:
        if c is None:
            chosen["modality"], cv["modality"] = choose_c(feats, y, groups, len(modalities), head=head)
            model_extra["cv_modality_accuracy"] = cv["modality"][str(chosen["modality"])]
        else:
            chosen["modality"] = c
        _store_head(weights, "head_modality", _fit_views(x, y, len(modalities), chosen["modality"], head=head))
    else:
        blocks = members
        cv_probs = []
        for i, block in enumerate(blocks):
            a, b = block["columns"]
            if c is None:
                block["C"], block["cv_accuracy"] = choose_c(feats[..., a:b], y, groups, len(modalities))
                cv_probs.append(cv_probabilities(feats[..., a:b], y, groups, len(modalities), block["C"]))
            else:
                block["C"] = c
            _store_head(weights, f"head_modality_{i}", _fit_views(x[..., a:b], y, len(modalities), block["C"]))
        chosen["modality"] = None
        model_extra["blocks"] = blocks
        if cv_probs:
            model_extra["cv_modality_accuracy"] = _accuracy(np.mean(cv_probs, axis=0), y)
    heads = {"modality": modalities}
    if len(planes) >= 2:
        rows = [i for i, s in enumerate(samples) if s[2] in planes]
        yp = np.array([planes.index(samples[i][2]) for i in rows])
        if c is None:
            chosen["plane"], cv["plane"] = choose_c(feats[:, rows], yp, [groups[i] for i in rows], len(planes))
        else:
            chosen["plane"] = c
        # The plane head is not class-weighted: axial dominates, and rare planes are better guessed axial.
        _store_head(weights, "head_plane", _fit_views(x[:, rows], yp, len(planes), chosen["plane"], balanced=False))
        heads["plane"] = planes
    digest = hashlib.sha256("\n".join(f"{s[0]}\t{s[1]}\t{s[2]}" for s in samples).encode()).hexdigest()[:16]
    features: dict = {"name": "+".join(src["name"] for src in sources), "dim": int(x.shape[-1]), "statistics": statistics,
                      "physics": physics, "texture": texture, "scattering": scattering, "views": list(views), "sources": sources}
    if statistics:
        features.update(histogram_bins=HISTOGRAM_BINS, thumbnail=THUMBNAIL, max_side=MAX_SIDE)
    if embedder is not None:
        features["embedder"] = embedder.info().to_dict()
    described = f"{kind.description}, classes weighted by 1/sqrt(frequency)"
    if ensemble:
        described = "ensemble: " + described + f", one per member ({', '.join(m['features'] for m in members)}), probabilities averaged"
    if len(views) > 1:
        described += f"; trained on {len(views)} views of each image, probabilities averaged over them"
    if head != "logistic":
        described += "; plane head: multinomial logistic regression"
    config = {
        "kind": CLASSIFIER_KIND, "format_version": CLASSIFIER_VERSION, "created": utc_now(),
        "features": features,
        "model": {"type": described, "head": head, kind.strength: chosen["modality"], "C_plane": chosen.get("plane"),
                  "C_chosen_by": (f"grouped {CV_FOLDS}-fold cross-validation on the training samples" if c is None else "the caller"),
                  **({"cv_accuracy": cv} if cv else {}), **model_extra},
        "heads": heads,
        "data": {"samples": len(samples), "modalities": {m: sum(s[1] == m for s in samples) for m in modalities},
                 "planes": plane_counts, "fingerprint": digest,
                 **({"left_out_too_few": too_few, "min_modality_examples": min_modality_examples} if too_few else {})},
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
    return {"samples": len(samples), "heads": heads, "model": config["model"], "heldout": config.get("heldout", {})}


def _image_blocks(statistics: bool, physics: bool, texture: bool = False, scattering: bool = False) -> list[str]:
    """The per-image feature blocks in column order (names of ``IMAGE_FEATURES``)."""
    return [name for name, on in ((STATISTICS, statistics), (PHYSICS, physics), (TEXTURE, texture), (SCATTERING, scattering)) if on]


def _ensemble_members(sources: Sequence[dict]) -> list[dict]:
    """An ensemble's members in column order: the sources not in ENSEMBLE_ALONE together (they come first), then
    each of the others alone, as {"features": names joined by "+", "columns": [start, end]}."""
    shared = [src for src in sources if src["name"] not in ENSEMBLE_ALONE]
    members = [{"features": "+".join(src["name"] for src in shared), "columns": [shared[0]["columns"][0], shared[-1]["columns"][1]]}] if shared else []
    return members + [{"features": src["name"], "columns": list(src["columns"])} for src in sources if src["name"] in ENSEMBLE_ALONE]


def _sources(blocks: Sequence[str], embedder) -> list[dict]:
    """The feature sources in column order, with their column ranges (the embedder's from its dimension)."""
    dims = [(name, _feature_dim(name)) for name in blocks]
    if embedder is not None:
        dims.append(("embedder", int(embedder.info().dim)))
    out, start = [], 0
    for name, dim in dims:
        out.append({"name": name, "columns": [start, start + dim]})
        start += dim
    return out


@functools.lru_cache(maxsize=len(IMAGE_FEATURES))
def _feature_dim(name: str) -> int:
    from PIL import Image

    return int(IMAGE_FEATURES[name](Image.new("L", (8, 8))).shape[0])


def _recipe(config: dict) -> dict:
    """Which features and views a saved classifier uses (v3 folders: from the feature name, the original view only)."""
    features = config["features"]
    return {"statistics": bool(features.get("statistics", features["name"].startswith(STATISTICS))),
            "physics": bool(features.get("physics", False)), "texture": bool(features.get("texture", False)),
            "scattering": bool(features.get("scattering", False)), "views": tuple(features.get("views", ("original",)))}


def _recipe_blocks(recipe: dict) -> list[str]:
    return _image_blocks(recipe["statistics"], recipe["physics"], recipe["texture"], recipe["scattering"])


def _features(images: Sequence, embedder=None, blocks: Sequence[str] = (STATISTICS,),
              views: Sequence[str] = ("original",)) -> np.ndarray:
    """(views, images, dim) features of PIL images or MedicalImages: the per-image ``blocks``, then the embedder's vectors."""
    out = []
    for view in views:
        shown = [image_view(im, view) for im in images]
        parts = [np.stack([IMAGE_FEATURES[name](im) for im in shown]) for name in blocks]
        if embedder is not None:
            parts.append(embedder.embed_images(shown))
        out.append(np.hstack(parts))
    return np.stack(out).astype(np.float32)


# (path, mtime, view, block) -> features: an evaluation fits several classifiers on the same images.
_FEATURE_CACHE: dict[tuple[str, float, str, str], np.ndarray] = {}
FEATURE_CACHE_LIMIT = 65536
PARALLEL_FROM = 64  # images: fewer are computed in this process (a worker pool takes a second to start)


def feature_workers() -> int:
    """Processes for image features: the CPUs this process may use (features are numpy work, one image at a time)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _file_features(path: str, views: tuple[str, ...], blocks: tuple[str, ...]) -> tuple[bool, object]:
    """(True, {(view, block): features}) of one image file, or (False, why it could not be read). Runs in workers."""
    from medrag.vision.image import load_image

    try:
        image = load_image(path, modality="unknown")
        return True, {(view, name): IMAGE_FEATURES[name](image_view(image, view)) for view in views for name in blocks}
    except (OSError, InputError, ValueError) as exc:
        return False, str(exc)


def _cache_file_features(paths: Sequence[str], views: tuple[str, ...], blocks: tuple[str, ...], progress: bool,
                         workers: int | None) -> tuple[dict[str, float], dict[str, str]]:
    """Compute the missing (view, block) features of PATHS into _FEATURE_CACHE, in a pool of worker processes when there
    are many. Returns ({path: the mtime its features are cached under}, {path: why it was skipped}): each file is
    stat'ed once, so the features are read back under the key they were stored with."""
    from tqdm.auto import tqdm

    mtime_of, missing, failed = {}, [], {}
    for path in dict.fromkeys(paths):
        try:
            mtime_of[path] = os.stat(path).st_mtime
        except OSError as exc:
            failed[path] = str(exc)
            continue
        if any((path, mtime_of[path], v, name) not in _FEATURE_CACHE for v in views for name in blocks):
            missing.append(path)
    workers = feature_workers() if workers is None else max(1, workers)
    computed = []
    with tqdm(total=len(missing), desc="image features", unit="image", disable=not progress) as bar:
        if workers > 1 and len(missing) >= PARALLEL_FROM:
            from joblib import Parallel, delayed

            # joblib's loky workers are fresh processes (a fork could deadlock on torch's thread pools held by the
            # caller) that, unlike multiprocessing's spawn, do not re-run a user's script lacking a __main__ guard.
            tasks = (delayed(_file_features)(path, views, blocks) for path in missing)
            for path, result in zip(missing, Parallel(n_jobs=min(workers, len(missing)), return_as="generator", batch_size=4)(tasks)):
                computed.append((path, result))
                bar.update(1)
        else:
            for path in missing:
                computed.append((path, _file_features(path, views, blocks)))
                bar.update(1)
    if len(_FEATURE_CACHE) + len(computed) * len(views) * len(blocks) > FEATURE_CACHE_LIMIT:
        wanted = set(paths)  # evict other images' features only: this call reads its cached ones next
        for stale in [k for k in _FEATURE_CACHE if k[0] not in wanted]:
            del _FEATURE_CACHE[stale]
    for path, (ok, payload) in computed:
        if not ok:
            failed[path] = payload
            continue
        for (view, name), value in payload.items():
            _FEATURE_CACHE[(path, mtime_of[path], view, name)] = value
    return mtime_of, failed


def _features_of(samples, embedder=None, blocks: Sequence[str] = (STATISTICS,),
                 views: Sequence[str] = ("original",), progress: bool = False,
                 workers: int | None = None) -> tuple[np.ndarray, list[int]]:
    """(views, readable samples, dim) features of the sample images (unreadable ones are logged and skipped).

    Images are read with ``load_image`` (PNG/JPEG/16-bit/DICOM, windowed for display), as intake reads them. The
    per-image blocks are computed by ``workers`` processes (default: one per CPU) when there are many images, and
    cached; the embedder's vectors in batches, in this process.
    """
    from medrag.vision.image import load_image

    views, blocks = tuple(views), tuple(blocks)
    mtime_of, failed = _cache_file_features([str(s[0]) for s in samples], views, blocks, progress, workers) if blocks else ({}, {})
    parts, kept, batch, rows = [], [], [], []
    for i, sample in enumerate(samples):
        path = str(sample[0])
        try:
            if path in failed:
                raise InputError(failed[path])
            row = [np.concatenate([_FEATURE_CACHE[(path, mtime_of[path], v, name)] for name in blocks]) for v in views] if blocks else None
            display = load_image(path, modality="unknown").display if embedder is not None else None
        except (OSError, InputError, ValueError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        kept.append(i)
        rows.append(row)
        if embedder is not None:
            batch.append(display)
            if len(batch) == 64:
                parts.append(np.stack([embedder.embed_images([image_view(im, v) for im in batch]) for v in views]))
                batch = []
    if embedder is not None and batch:
        parts.append(np.stack([embedder.embed_images([image_view(im, v) for im in batch]) for v in views]))
    if not kept:
        raise InputError("no readable images to train the modality classifier on")
    columns = []
    if blocks:
        columns.append(np.array(rows, dtype=np.float32).transpose(1, 0, 2))
    if embedder is not None:
        columns.append(np.concatenate(parts, axis=1))
    return np.concatenate(columns, axis=2).astype(np.float32), kept


def evaluate_modality_classifier(classifier: ModalityClassifier, samples, labels_as_published: dict[str, str] | None = None) -> dict:
    """Accuracy of modality and of plane (on samples whose plane the head knows), with the majority-class figure.

    ``labels_as_published`` (image path -> modality), given when the samples' labels were corrected by
    ``apply_label_audit``, adds ``modality_accuracy_as_labelled``: the same predictions scored against those labels.
    """
    classifier.setup()
    recipe = _recipe(classifier.config)
    feats, kept = _features_of(samples, classifier.embedder if classifier.config["features"].get("embedder") else None,
                               _recipe_blocks(recipe), recipe["views"])
    samples = [samples[i] for i in kept]
    predictions = classifier.predict_features(feats)
    out: dict = {"samples": len(samples)}
    truth = [s[1] for s in samples]
    out["modality_accuracy"] = round(float(np.mean([p.modality == t for p, t in zip(predictions, truth)])), 4)
    if labels_as_published is not None:
        published = [labels_as_published.get(s[0], s[1]) for s in samples]
        out["modality_accuracy_as_labelled"] = round(float(np.mean([p.modality == t for p, t in zip(predictions, published)])), 4)
    out["modality_majority"] = round(max(truth.count(m) for m in set(truth)) / len(truth), 4)
    out["per_class"] = {m: {"images": truth.count(m),
                            "recall": round(float(np.mean([p.modality == m for p, t in zip(predictions, truth) if t == m])), 4),
                            "predicted_as": {q: sum(1 for p, t in zip(predictions, truth) if t == m and p.modality == q)
                                             for q in sorted({p.modality for p, t in zip(predictions, truth) if t == m})}}
                        for m in sorted(set(truth))}
    planes = classifier.config["heads"].get("plane")
    if planes:
        pairs = [(p.plane, s[2]) for p, s in zip(predictions, samples) if s[2] in planes]
        if pairs:
            truth_planes = [t for _, t in pairs]
            out["plane_accuracy"] = round(float(np.mean([p == t for p, t in pairs])), 4)
            out["plane_majority"] = round(max(truth_planes.count(p) for p in set(truth_planes)) / len(truth_planes), 4)
            out["plane_samples"] = len(pairs)
    return out


def _listed_images(folder: str | Path, listing_name: str, example: str):
    """(folder, row) for each row of FOLDER/LISTING_NAME whose ``file`` exists in the folder."""
    from medrag.storage import iter_json_lines

    folder = Path(folder).expanduser()
    listing = folder / listing_name
    if not listing.is_file():
        raise InputError(f"{listing} not found: pass {example}")
    with listing.open(encoding="utf-8") as lines:
        for _, row in iter_json_lines(lines, listing):
            if row.get("file") and (folder / row["file"]).is_file():
                yield folder, row


def load_medpix_modality_samples(folder: str | Path) -> list[tuple[str, str, str | None, str]]:
    """(image path, modality, plane, case id) of every MedPix image present (modality from modality_type)."""
    from medrag.ingest.images import normalise_modality

    samples = []
    for root, row in _listed_images(folder, "images.jsonl", "the MedPix folder (e.g. ../shared/data/medpix)"):
        modality = normalise_modality(row.get("modality_type") or row.get("modality"))
        if modality:
            samples.append((str(root / row["file"]), modality, (row.get("plane") or "").lower() or None, str(row.get("case_id"))))
    return samples


def load_image_folder_samples(folder: str | Path) -> list[tuple[str, str, str | None, str]]:
    """(image path, modality, None, file) of the images listed in FOLDER/index.jsonl (as ../shared/data/images).

    The modality is read from the row's ``modality`` text: its first word (X-ray, CR, DX, CT, MR ...)
    or a photograph/fundus mention; rows whose modality cannot be read are left out.
    Each image is its own group (the sources are unrelated test files).
    """
    from medrag.ingest.images import normalise_modality

    samples = []
    for root, row in _listed_images(folder, "index.jsonl", "a folder with index.jsonl (e.g. ../shared/data/images)"):
        text = str(row.get("modality") or "")
        modality = normalise_modality(text) or ("photo" if any(w in text.lower() for w in ("photograph", "fundus")) else None)
        if modality:
            samples.append((str(root / row["file"]), modality, None, f"file:{row['file']}"))
    return samples


def apply_label_audit(samples: Sequence[tuple[str, str, str | None, str]], audit_path: str | Path
                      ) -> tuple[list[tuple[str, str, str | None, str]], list[str]]:
    """(samples with audited modalities, image ids changed): corrections from a label-audit file applied to samples.

    The file (e.g. evals/medpix_label_audit.jsonl) holds one JSON object a line: ``image_id``, ``label`` (the
    published modality, e.g. "CT"), ``corrected`` (a class name: "ct", "mr", "xray", "photo") and a ``reason``.
    A sample matches by image id = its file's stem. Rows whose image is not among the samples are ignored; a
    sample whose modality is neither the row's published label nor its correction is left alone with a warning
    (the data changed since the audit). Samples are (path, modality, plane, group) as the loaders return them.
    A malformed line is an InputError naming the file and line.
    """
    from medrag.errors import SourceFileError
    from medrag.ingest.images import MODALITY_WORDS, normalise_modality
    from medrag.storage import iter_json_lines, read_text_lines

    path = Path(audit_path).expanduser()
    lines = read_text_lines(path, missing="label audit file not found")
    classes = set(MODALITY_WORDS.values())
    corrections: dict[str, tuple[str, str]] = {}
    for line_no, row in iter_json_lines(lines, path):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) and row[k].strip() for k in ("image_id", "label", "corrected")):
            raise SourceFileError(f"{path}:{line_no}", 'each line must be an object with non-empty "image_id", "label" and "corrected"')
        original = normalise_modality(row["label"])
        if original is None or row["corrected"] not in classes:
            raise SourceFileError(f"{path}:{line_no}", f'unknown modality: label {row["label"]!r}, corrected {row["corrected"]!r} '
                                                       f"(corrected must be one of {sorted(classes)})")
        if row["image_id"] in corrections:
            raise SourceFileError(f"{path}:{line_no}", f'{row["image_id"]} is listed twice')
        corrections[row["image_id"]] = (original, row["corrected"])
    out, applied = [], []
    for sample in samples:
        image_id = Path(sample[0]).stem
        if image_id in corrections:
            original, corrected = corrections[image_id]
            if sample[1] == original and corrected != original:
                sample = (sample[0], corrected, *sample[2:])
                applied.append(image_id)
            elif sample[1] != corrected:
                log.warning("label audit %s: %s is labelled %s, not %s as audited; left as it is", path, image_id, sample[1], original)
        out.append(sample)
    return out, applied
