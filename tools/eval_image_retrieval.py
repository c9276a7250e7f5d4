"""Image-text retrieval of our own dual encoder on MedPix, evaluated on cases held apart.

    python tools/eval_image_retrieval.py --data ../shared/data/medpix --out results/image_retrieval.json --epochs 20 --threads 1
    python tools/eval_image_retrieval.py --model DIR ...     # evaluate a trained folder, no training

Trains on the train split (whole cases), then embeds the held-out images and
captions through DualEncoderEmbedder (the path users take) and reports
image->text and text->image recall@1/5/10 and image->same-case recall@10,
each next to the recall a random ranking gets. A raw-pixel baseline (32x32
thumbnails, cosine) shows how much of the same-case figure plain image
similarity already gives.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def pixel_baseline(pairs) -> np.ndarray:
    from medrag.embed.base import l2_normalise
    from medrag.embed.image_text import resize_square, to_gray_array

    rows = []
    for pair in pairs:
        with Image.open(pair.image_path) as image:
            thumb = resize_square(to_gray_array(image), 32).ravel()
        rows.append(thumb - thumb.mean())
    return l2_normalise(np.stack(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/medpix", help="MedPix folder with images.jsonl")
    parser.add_argument("--out", default="results/image_retrieval.json")
    parser.add_argument("--model", help="evaluate this trained folder instead of training")
    parser.add_argument("--save", help="where to save the trained model (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--threads", type=int, help="torch threads (on a busy shared machine 1 can be several times faster than 2)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from medrag.embed.image_text import DualEncoderEmbedder
    from medrag.embed.medpix import load_medpix_pairs, split_by_group
    from medrag.embed.train import retrieval_metrics, train_dual_encoder

    pairs = load_medpix_pairs(args.data)
    train, test = split_by_group(pairs, args.test_fraction, seed=args.seed)
    assert not {p.group_id for p in train} & {p.group_id for p in test}
    result: dict = {
        "data": {"folder": str(args.data), "pairs": len(pairs), "train_pairs": len(train), "test_pairs": len(test),
                 "train_cases": len({p.group_id for p in train}), "test_cases": len({p.group_id for p in test}),
                 "split": f"by case, hash of seed {args.seed}, test fraction {args.test_fraction}"},
    }
    tmp = None
    folder = args.model
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = args.save or str(Path(tmp.name) / "model")
        started = time.perf_counter()
        training = train_dual_encoder(train, folder, epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
                                      seed=args.seed, progress=not args.no_progress)
        result["training"] = {"wall_seconds": round(time.perf_counter() - started, 1), **training}

    embedder = DualEncoderEmbedder(folder)
    started = time.perf_counter()
    images = []
    for pair in test:
        with Image.open(pair.image_path) as image:
            image.load()
            images.append(image.copy())
    image_vecs = embedder.embed_images(images)
    text_vecs = embedder.embed_queries([p.caption for p in test])
    captions, groups = [p.caption for p in test], [p.group_id for p in test]
    result["model"] = {"folder": folder if tmp is None or args.save else "(temporary)", "config": {
        k: v for k, v in embedder.config.items() if k not in {"metrics"}}}
    result["heldout"] = retrieval_metrics(image_vecs, text_vecs, captions, groups)
    result["heldout"]["embed_seconds"] = round(time.perf_counter() - started, 1)
    pixels = pixel_baseline(test)
    result["pixel_baseline_heldout"] = {"image_to_same_case": retrieval_metrics(pixels, pixels, captions, groups)["image_to_same_case"]}
    same_case = result["heldout"]["image_to_same_case"]
    result["target"] = {"image_to_same_case_recall@10": 0.30, "met": same_case["recall@10"] >= 0.30}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for direction in ("image_to_text", "text_to_image"):
        figures = result["heldout"][direction]
        print(direction, "  ".join(f"R@{k} {figures[f'recall@{k}']:.3f} (chance {figures[f'chance@{k}']:.3f})" for k in (1, 5, 10)))
    print(f"image_to_same_case R@10 {same_case['recall@10']:.3f} (chance {same_case['chance@10']:.3f}, "
          f"pixel baseline {result['pixel_baseline_heldout']['image_to_same_case']['recall@10']:.3f}, {same_case['queries']} queries)")
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
