"""Where a classifier looked: Grad-CAM and occlusion maps, mapped back onto the original image.

Grad-CAM (Selvaraju et al. 2017): weight each channel of a convolutional layer
by the mean gradient of the class score, sum, keep the positive part. It shows
which regions raised the score of one class for this model; it is not a
segmentation of a finding and can highlight shortcuts (text markers, borders).
Occlusion: grey out patches one at a time and record how much the score drops;
slower, needs no gradients, works for any classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from medrag.vision.segment import Box, mask_box

PEAK_LEVEL = 0.5  # the peak region: the connected part of the map at >= this share of its maximum


def grad_cam(model, layer, x, class_index: int, output: Callable | None = None) -> np.ndarray:
    """Grad-CAM of ``class_index`` at ``layer`` for a batch of one; (S, S) in [0, 1] at the input's size.

    ``output`` maps the model's output to per-class scores (default: the output itself).
    """
    import torch

    store: dict = {}

    def keep(_module, _inputs, out):
        out.retain_grad()
        store["act"] = out

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(False)
            scores = model(x)
            if output is not None:
                scores = output(scores)
            model.zero_grad(set_to_none=True)
            scores[0, class_index].backward()
    finally:
        handle.remove()
    act, grad = store["act"], store["act"].grad
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * act).sum(dim=1))[0].detach()
    cam = torch.nn.functional.interpolate(cam[None, None], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    cam = cam.cpu().numpy().astype(np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam


def occlusion(score: Callable[[np.ndarray], float], gray: np.ndarray, *, patch: int = 16, stride: int | None = None) -> np.ndarray:
    """Occlusion map of a (H, W) model input: score drop when a patch is set to the image mean; [0, 1]."""
    stride = stride or patch
    base = score(gray)
    heat = np.zeros(gray.shape, dtype=np.float32)
    hits = np.zeros(gray.shape, dtype=np.float32)
    fill = float(gray.mean())
    for top in range(0, max(1, gray.shape[0] - patch + 1), stride):
        for left in range(0, max(1, gray.shape[1] - patch + 1), stride):
            occluded = gray.copy()
            occluded[top : top + patch, left : left + patch] = fill
            heat[top : top + patch, left : left + patch] += max(0.0, base - score(occluded))
            hits[top : top + patch, left : left + patch] += 1
    heat = np.divide(heat, hits, out=np.zeros_like(heat), where=hits > 0)
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def to_image_space(cam: np.ndarray, transform: tuple[float, float, float], shape: tuple[int, ...], size: int) -> np.ndarray:
    """A map over the model's (size x size) view as an (H, W) map over the original image; 0 where the model saw nothing."""
    scale, ox, oy = transform
    height, width = int(shape[0]), int(shape[1])
    x0, y0 = ox / scale, oy / scale
    x1, y1 = (ox + size) / scale, (oy + size) / scale
    out = np.zeros((height, width), dtype=np.float32)
    w, h = max(1, round(x1 - x0)), max(1, round(y1 - y0))
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32), "F").resize((w, h), Image.BILINEAR))
    left, top = round(x0), round(y0)
    ys, xs = slice(max(0, top), min(height, top + h)), slice(max(0, left), min(width, left + w))
    out[ys, xs] = resized[ys.start - top : ys.stop - top, xs.start - left : xs.stop - left]
    return np.clip(out, 0.0, 1.0)


def seen_box(transform: tuple[float, float, float], shape: tuple[int, ...], size: int) -> Box:
    """The part of the original image the model's square view covers."""
    scale, ox, oy = transform
    return (max(0, round(ox / scale)), max(0, round(oy / scale)),
            min(int(shape[1]), round((ox + size) / scale)), min(int(shape[0]), round((oy + size) / scale)))


def peak_region(heat: np.ndarray, level: float = PEAK_LEVEL) -> Box | None:
    """Box of the connected region around the map's maximum where it stays >= ``level`` x maximum."""
    peak = float(heat.max()) if heat.size else 0.0
    if peak <= 0:
        return None
    labels, _ = ndi.label(heat >= level * peak)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return mask_box(labels == labels[y, x])
