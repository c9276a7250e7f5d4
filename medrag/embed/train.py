"""Contrastive training of a small image-text dual encoder on CPU.

Image tower: a few conv blocks, global average pooling and a projection.
Text tower: a frozen sentence model (MiniLM by default) whose caption vectors
are computed once, followed by a trained linear projection. Loss: symmetric
InfoNCE (CLIP) with a learned temperature; pairs sharing a group (a case) count
as positives of each other, so images of one case are not pushed apart.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from medrag.embed.image_text import FORMAT_VERSION, GRAY_MEAN, GRAY_STD, MODEL_KIND, resize_square, to_gray_array
from medrag.errors import InputError, ModelUnavailable
from medrag.storage import atomic_folder, read_json, utc_now, write_json

log = logging.getLogger(__name__)

DEFAULT_WIDTHS = (16, 32, 64, 128, 256)
KS = (1, 5, 10)


class ImageCaptionPair(NamedTuple):
    image_path: str
    caption: str
    group_id: str


# --- the model -------------------------------------------------------------------


def make_config(text_spec: str, text_info: dict, *, image_size: int = 128, embed_dim: int = 128, widths: Sequence[int] = DEFAULT_WIDTHS) -> dict:
    """The config that describes a model folder (training adds data, training and metrics entries).

    ``text_spec`` is what make_embedder() takes to rebuild the frozen text model;
    ``text_info`` its EmbedderInfo as a dict (the fingerprint is checked on load).
    """
    return {
        "kind": MODEL_KIND,
        "format_version": FORMAT_VERSION,
        "architecture": {"type": "cnn-dual-encoder", "widths": list(widths), "pooling": "mean", "input": "gray-as-3ch"},
        "image_size": image_size,
        "resize": int(round(image_size * 1.15)),  # training takes random image_size crops of this view
        "normalise": {"mean": GRAY_MEAN, "std": GRAY_STD},
        "embed_dim": embed_dim,
        "text_model": {**text_info, "spec": text_spec},
    }


def _torch():
    import torch

    return torch


def conv_features(widths: Sequence[int]):
    """The small CNN image tower shared by our dual encoder and our classifier: (layers, output width).

    The first block downsamples by stride, the rest by pooling: cheap on CPU.
    """
    nn = _torch().nn
    layers: list = []
    prev = 3
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(prev, width, 3, stride=2 if i == 0 else 1, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        if i > 0:
            layers.append(nn.MaxPool2d(2))
        prev = width
    return nn.Sequential(*layers), prev


def build_model(config: dict):
    """The dual encoder described by a config (random weights)."""
    torch = _torch()
    nn = torch.nn

    class DualEncoder(nn.Module):
        def __init__(self, widths: Sequence[int], text_dim: int, embed_dim: int) -> None:
            super().__init__()
            self.image_features, prev = conv_features(widths)
            self.image_proj = nn.Linear(prev, embed_dim)
            self.text_proj = nn.Linear(text_dim, embed_dim)
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

        def encode_image(self, x):
            return self.image_proj(self.image_features(x).mean(dim=(2, 3)))

        def encode_text(self, x):
            return self.text_proj(x)

    arch = config["architecture"]
    return DualEncoder(arch["widths"], int(config["text_model"]["dim"]), int(config["embed_dim"]))


def _weights_name() -> str:
    # safetensors when installed (no pickle on load), else torch.save.
    return "model.safetensors" if importlib.util.find_spec("safetensors") else "model.pt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_dual_encoder(model, config: dict, out_dir: str | Path) -> Path:
    """Write config.json, the weights and manifest.json into ``out_dir`` atomically."""
    torch = _torch()
    config = dict(config, weights=_weights_name())
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(out_dir) as tmp:
        weights = tmp / config["weights"]
        if config["weights"].endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, str(weights))
        else:
            torch.save(state, weights)
        write_json(tmp / "config.json", config)
        write_json(
            tmp / "manifest.json",
            {
                "kind": MODEL_KIND,
                "format_version": FORMAT_VERSION,
                "created": utc_now(),
                "files": {name: _sha256(tmp / name) for name in (config["weights"], "config.json")},
            },
        )
    return Path(out_dir)


def load_state_dict(folder: str | Path, config: dict) -> dict:
    """The weights of a saved model, checked against the manifest's sha256."""
    torch = _torch()
    folder = Path(folder)
    weights = folder / config["weights"]
    try:
        expected = read_json(folder / "manifest.json")["files"][config["weights"]]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(f"{folder}: manifest.json is missing or does not list {config['weights']}: retrain the model") from exc
    if not weights.is_file() or _sha256(weights) != expected:
        raise ModelUnavailable(f"{weights} is missing or differs from the manifest (a partial copy?): copy the folder again or retrain")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(weights))
    return torch.load(weights, map_location="cpu", weights_only=True)


# --- data ----------------------------------------------------------------------


def load_pair_images(pairs: Sequence[ImageCaptionPair], resize: int) -> tuple[np.ndarray, list[int], str]:
    """Images as (n, resize, resize) float32 in [0, 1], the indices of pairs kept, and a data fingerprint.

    Unreadable images are logged and skipped; the fingerprint covers the bytes,
    caption and group of every kept pair.
    """
    arrays, kept = [], []
    digest = hashlib.sha256()
    for i, pair in enumerate(pairs):
        try:
            data = Path(pair.image_path).read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                arrays.append(resize_square(to_gray_array(image), resize))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            log.warning("skipping %s: %s", pair.image_path, exc)
            continue
        kept.append(i)
        digest.update(hashlib.sha256(data).digest())
        digest.update(f"\x00{pair.caption}\x00{pair.group_id}\n".encode())
    images = np.stack(arrays) if arrays else np.zeros((0, resize, resize), dtype=np.float32)
    return images, kept, digest.hexdigest()[:16]


def augment(images: np.ndarray, image_size: int, rng: np.random.Generator):
    """Random crop, horizontal flip and intensity jitter (contrast, brightness, gamma); returns a (n, 3, s, s) tensor."""
    n, full, _ = images.shape
    out = np.empty((n, image_size, image_size), dtype=np.float32)
    for i in range(n):
        top, left = rng.integers(0, full - image_size + 1, size=2)
        crop = images[i, top : top + image_size, left : left + image_size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gamma, contrast, brightness = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
        out[i] = np.clip(crop, 0.0, 1.0) ** gamma * contrast + brightness
    return _to_input(out)


def center_crop(images: np.ndarray, image_size: int):
    """The evaluation view (as DualEncoderEmbedder preprocesses): the centre crop, normalised."""
    offset = (images.shape[1] - image_size) // 2
    return _to_input(images[:, offset : offset + image_size, offset : offset + image_size])


def _to_input(gray: np.ndarray):
    torch = _torch()
    normalised = (np.asarray(gray, dtype=np.float32) - GRAY_MEAN) / GRAY_STD
    return torch.from_numpy(np.ascontiguousarray(np.repeat(normalised[:, None], 3, axis=1)))


# --- loss and metrics ---------------------------------------------------------------


def clip_loss(image_vecs, text_vecs, logit_scale, groups):
    """Symmetric InfoNCE; pairs of the same group are all positives (targets spread evenly)."""
    torch = _torch()
    F = torch.nn.functional
    image_vecs = F.normalize(image_vecs, dim=1)
    text_vecs = F.normalize(text_vecs, dim=1)
    logits = logit_scale.clamp(max=math.log(100)).exp() * image_vecs @ text_vecs.T
    same = (groups[:, None] == groups[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)  # symmetric, so it serves both directions
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _chance(n: int, positives: np.ndarray, k: int) -> float:
    """Expected recall@k of a random ranking: 1 - P(no positive among k of n), averaged over queries."""
    values = []
    for p in positives:
        miss = 1.0
        for j in range(min(k, n)):
            miss *= max(n - p - j, 0) / (n - j)
        values.append(1.0 - miss)
    return float(np.mean(values)) if values else 0.0


def _recall(sims: np.ndarray, positive: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    order = np.argsort(-sims, axis=1, kind="stable")
    hits = np.take_along_axis(positive, order, axis=1)
    out = {}
    for k in ks:
        out[f"recall@{k}"] = round(float(hits[:, :k].any(axis=1).mean()), 4)
        out[f"chance@{k}"] = round(_chance(sims.shape[1], positive.sum(axis=1), k), 4)
    return out


def retrieval_metrics(image_vecs: np.ndarray, text_vecs: np.ndarray, captions: Sequence[str], groups: Sequence[str], ks=KS) -> dict:
    """image->text and text->image recall@k (a hit is the paired caption, or an identical one),
    and image->same-case recall@10 among the other images, each with its chance figure."""
    n = len(captions)
    if n < 2:
        return {"pairs": n}
    caption_array, group_array = np.asarray(captions, dtype=object), np.asarray(groups, dtype=object)
    same_caption = caption_array[:, None] == caption_array[None, :]
    sims = image_vecs @ text_vecs.T
    out = {
        "pairs": n,
        "image_to_text": _recall(sims, same_caption, ks),
        "text_to_image": _recall(sims.T, same_caption.T, ks),
    }
    # Image -> image: each query ranks the other n-1 images; queries whose case has no other image are left out.
    same_group = group_array[:, None] == group_array[None, :]
    np.fill_diagonal(same_group, False)
    queries = same_group.any(axis=1)
    if queries.any():
        image_sims = image_vecs @ image_vecs.T
        keep = ~np.eye(n, dtype=bool)
        others = image_sims[keep].reshape(n, n - 1)[queries]
        positives = same_group[keep].reshape(n, n - 1)[queries]
        out["image_to_same_case"] = {"queries": int(queries.sum()), **_recall(others, positives, (10,))}
    return out


# --- training -----------------------------------------------------------------------


class AdamW:
    """Adam with decoupled weight decay, as torch.optim.AdamW computes it.

    Written out because torch.optim imports torch._dynamo on first use, which
    costs 5-10 s per process on a CPU machine: longer than a small training run.
    """

    def __init__(self, params, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-4) -> None:
        torch = _torch()
        self.params, self.betas, self.eps, self.weight_decay = params, betas, eps, weight_decay
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def step(self, lr: float) -> None:
        torch = _torch()
        self.t += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                if p.grad is None:
                    continue
                p.mul_(1 - lr * self.weight_decay)
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (v / (1 - b2**self.t)).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-lr / (1 - b1**self.t))
                p.grad = None


def _resolve_text_embedder(text_model):
    if isinstance(text_model, str):
        from medrag.embed.text import make_embedder

        return make_embedder(text_model)
    return text_model


def _embed_all(model, images: np.ndarray, text_base: np.ndarray, image_size: int, batch: int = 64):
    torch = _torch()
    model.eval()
    with torch.no_grad():
        image_vecs = torch.cat([model.encode_image(center_crop(images[i : i + batch], image_size)) for i in range(0, len(images), batch)])
        text_vecs = model.encode_text(torch.from_numpy(text_base))
    norm = torch.nn.functional.normalize
    return norm(image_vecs, dim=1).numpy(), norm(text_vecs, dim=1).numpy()


def train_dual_encoder(
    pairs: Sequence[tuple[str, str, str]],
    out_dir: str | Path,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    image_size: int = 128,
    seed: int = 0,
    progress: bool = True,
    eval_pairs: Sequence[tuple[str, str, str]] | None = None,
    text_model="all-MiniLM-L6-v2",
    embed_dim: int = 128,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
) -> dict:
    """Train on (image_path, caption, group_id) pairs, save a model folder to ``out_dir``, return metrics.

    ``text_model`` is a text-embedder spec (as make_embedder takes) or an
    embedder object whose ``name`` is such a spec; it stays frozen.
    ``eval_pairs`` (held apart from ``pairs``) add held-out metrics.
    Deterministic for a given seed, thread count and machine.
    """
    torch = _torch()
    from tqdm.auto import tqdm

    if epochs < 1 or batch_size < 2 or image_size < 16:
        raise InputError("epochs must be >= 1, batch size >= 2 and image size >= 16")
    pairs = [ImageCaptionPair(*p) for p in pairs]
    resize = int(round(image_size * 1.15))  # as make_config records it
    started = time.perf_counter()
    images, kept, data_fingerprint = load_pair_images(pairs, resize)
    pairs = [pairs[i] for i in kept]
    if len(pairs) < 2:
        raise InputError(f"need at least 2 readable image-caption pairs to train, got {len(pairs)}")

    text_embedder = _resolve_text_embedder(text_model)
    text_info = text_embedder.info()
    text_base = text_embedder.embed_texts([p.caption for p in pairs])
    group_index = {g: i for i, g in enumerate(sorted({p.group_id for p in pairs}))}
    groups = torch.tensor([group_index[p.group_id] for p in pairs])

    config = make_config(text_embedder.name, text_info.to_dict(), image_size=image_size, embed_dim=embed_dim, widths=widths)
    config["data"] = {"fingerprint": data_fingerprint, "pairs": len(pairs), "groups": len(group_index)}
    config["training"] = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                          "loss": "symmetric InfoNCE, same-group pairs positive", "threads": torch.get_num_threads()}

    rng = np.random.default_rng(seed)
    # fork_rng: seeding must not change the caller's global torch random state.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(config)
    optimiser = AdamW(list(model.parameters()), weight_decay=weight_decay)
    steps_per_epoch = max(1, len(pairs) // batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, total_steps // 20)
    step_count = 0
    text_tensor = torch.from_numpy(text_base)
    losses = []
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = rng.permutation(len(pairs))
        epoch_loss = 0.0
        for step in range(steps_per_epoch):
            # The last batch also takes the remainder, so every pair is seen each epoch.
            idx = order[step * batch_size : (step + 1) * batch_size if step < steps_per_epoch - 1 else len(order)]
            loss = clip_loss(
                model.encode_image(augment(images[idx], image_size, rng)), model.encode_text(text_tensor[idx]), model.logit_scale, groups[idx]
            )
            loss.backward()
            # Linear warm-up, then cosine decay to zero.
            optimiser.step(lr * min(1.0, (step_count + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step_count / total_steps)))
            step_count += 1
            epoch_loss += loss.item()
        losses.append(round(epoch_loss / steps_per_epoch, 4))
        bar.set_postfix(loss=losses[-1])
    train_seconds = time.perf_counter() - started

    # Train-set figures on at most 500 pairs (chance grows with smaller sets; both are reported).
    sub = np.arange(len(pairs))[:500]
    image_vecs, text_vecs = _embed_all(model, images[sub], text_base[sub], image_size)
    metrics = {
        "train_seconds": round(train_seconds, 1),
        "epochs": epochs,
        "loss": losses,
        "temperature": round(float(1 / model.logit_scale.detach().exp()), 4),
        "train": retrieval_metrics(image_vecs, text_vecs, [pairs[i].caption for i in sub], [pairs[i].group_id for i in sub]),
    }
    if eval_pairs:
        held = [ImageCaptionPair(*p) for p in eval_pairs]
        held_images, held_kept, _ = load_pair_images(held, resize)
        held = [held[i] for i in held_kept]
        if held:
            image_vecs, text_vecs = _embed_all(model, held_images, text_embedder.embed_texts([p.caption for p in held]), image_size)
            metrics["heldout"] = retrieval_metrics(image_vecs, text_vecs, [p.caption for p in held], [p.group_id for p in held])
    config["metrics"] = metrics
    save_dual_encoder(model, config, out_dir)
    log.info("trained dual encoder on %d pairs in %.1f s -> %s", len(pairs), train_seconds, out_dir)
    return metrics
