"""Benchmark image embedding: medrag's DualEncoderEmbedder.embed_images against the raw torch forward pass.

    flock /tmp/medrag-bench.lock .venv/bin/python tools/bench_image_embed.py --model DIR --out results/bench_image_embed.json

Images: --images (a MedPix folder's PNGs by default), decoded once into PIL images in memory.

1. medrag path: ``embed_images`` on the PIL images: preprocessing (grey, resize, centre crop,
   normalise; the next batch prepared in a helper thread while the model runs), batching, forward,
   L2 normalising; images/s. Also reported: the same path with that prefetch off (one core).
2. raw forward: the same model's ``encode_image`` on the same batches, already preprocessed
   into tensors (preprocessing not timed), under torch.inference_mode; images/s.
Target: medrag path >= 0.8 of the raw forward. Also reported, not part of the target: the same
path including PNG decoding from disk (what an ingest pays once per image).

Without --model a randomly initialised model of the default architecture is saved to a temporary
folder: speed depends on the architecture and input size, not on the weight values.
Both sides run on the same torch thread count (--threads, default 1: stable on a shared machine).
Each figure is the best of --repeats runs over all images.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.8


def random_model(folder: Path) -> Path:
    """A dual-encoder folder with random weights and the default architecture (text side from the hashing fake)."""
    from medrag.embed.train import build_model, make_config, save_dual_encoder
    from medrag.testing.fakes import HashingEmbedder

    text = HashingEmbedder(dim=384)
    config = make_config("hashing", text.info().to_dict())
    save_dual_encoder(build_model(config), config, folder)
    return folder


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained dual-encoder folder (default: random weights, default architecture)")
    parser.add_argument("--images", default="../shared/data/medpix/images", help="folder of PNG/JPEG images")
    parser.add_argument("--n", type=int, default=256, help="images to embed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/bench_image_embed.json")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from medrag.embed.image_text import DualEncoderEmbedder, preprocess_batch

    torch.set_num_threads(args.threads)
    files = sorted(p for p in Path(args.images).expanduser().iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[: args.n]
    if not files:
        sys.exit(f"no PNG/JPEG images in {args.images}")
    tmp = tempfile.TemporaryDirectory()
    folder = Path(args.model) if args.model else random_model(Path(tmp.name) / "model")
    embedder = DualEncoderEmbedder(folder, device="cpu", batch_size=args.batch_size)
    if not args.model:
        from medrag.testing.fakes import (
            HashingEmbedder,  # the random model's text side: never used for images
        )

        embedder._text_embedder = HashingEmbedder(dim=384)
    config = embedder.config
    if args.model:
        embedder.setup()
    else:  # no text model to check: load the image tower directly
        from medrag.embed.train import build_model, load_state_dict

        model = build_model(config)
        model.load_state_dict(load_state_dict(folder, config))
        embedder._device, embedder._model = "cpu", model.eval()
    model = embedder._model

    def decode() -> list:
        out = []
        for path in files:
            with Image.open(path) as image:
                image.load()
                out.append(image.copy())
        return out

    images = decode()
    batches = [torch.from_numpy(preprocess_batch(images[i : i + args.batch_size], config["image_size"], config["resize"]))
               for i in range(0, len(images), args.batch_size)]

    def raw() -> None:
        with torch.inference_mode():
            for batch in batches:
                model.encode_image(batch)

    embedder.embed_images(images[: args.batch_size])  # warm-up
    raw()
    medrag_s = best_of(lambda: embedder.embed_images(images), args.repeats)
    embedder.prefetch = False
    serial_s = best_of(lambda: embedder.embed_images(images), args.repeats)
    embedder.prefetch = True
    raw_s = best_of(raw, args.repeats)
    with_decode_s = best_of(lambda: embedder.embed_images(decode()), max(1, args.repeats - 1))
    # The two paths compute the same vectors (up to float rounding).
    with torch.inference_mode():
        reference = torch.cat([model.encode_image(b) for b in batches]).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    max_diff = float(np.abs(embedder.embed_images(images) - reference).max())

    n = len(images)
    result = {
        "images": n, "source": str(args.images), "batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
        "model": {"folder": str(folder) if args.model else "(random weights, default architecture)",
                  "architecture": config["architecture"], "image_size": config["image_size"], "resize": config["resize"]},
        "medrag_embed_images_per_s": round(n / medrag_s, 1),
        "raw_forward_images_per_s": round(n / raw_s, 1),
        "ratio": round(raw_s / medrag_s, 3),
        "medrag_without_prefetch_images_per_s": round(n / serial_s, 1),
        "ratio_without_prefetch": round(raw_s / serial_s, 3),
        "medrag_with_png_decoding_images_per_s": round(n / with_decode_s, 1),
        "preprocessing_ms_per_image": round(1000 * (medrag_s - raw_s) / n, 3),
        "max_abs_difference_vs_raw": max_diff,
        "targets": {"ratio_min": TARGET_RATIO, "met": raw_s / medrag_s >= TARGET_RATIO},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "processor": platform.machine()},
        "note": ("best of repeats; raw forward excludes preprocessing; prefetch overlaps the next batch's preprocessing "
                 "with the forward pass on a second core; the PNG-decoding figure is informative, not targeted"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("medrag_embed_images_per_s", "raw_forward_images_per_s", "ratio", "ratio_without_prefetch",
                                             "medrag_with_png_decoding_images_per_s", "targets")}))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
