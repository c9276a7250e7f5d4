"""Train medrag's own image classifiers on MedPix and report held-out accuracy against the majority baseline.

    .venv/bin/python tools/eval_classifier.py --out results/classifier.json --models-dir ~/.medrag/models

Tasks (labels from ../shared/data/medpix/images.jsonl; split by case, so no case
has images on both sides; 20% of cases held out, chosen by a seeded hash):
- modality: modality_type, CT vs MR  -> model folder medpix-modality (the classify_image default)
- region:   location_category, 5 body regions (Head, Thorax, Abdomen, Spine and Muscles, Reproductive and Urinary)
            -> model folder medpix-region
Each model is trained exactly as `medrag train-classifier` trains it (same function, same defaults).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "medpix"
TASKS = {
    "modality": {"label_field": "modality_type", "folder": "medpix-modality", "modalities": ["ct", "mr", "unknown"],
                 "description": "CT vs MR from one MedPix slice (PNG, display grey levels)"},
    "region": {"label_field": "location_category", "folder": "medpix-region", "modalities": ["ct", "mr", "unknown"],
               "description": "body region (MedPix location category) of a CT or MR slice"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("results/classifier.json"))
    parser.add_argument("--models-dir", type=Path, default=None, help="where to save the trained models (default $MEDRAG_HOME/models)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from medrag.config import load_settings
    from medrag.vision.classifier import read_labelled_images, split_by_group, train_classifier

    models_dir = args.models_dir or load_settings().models_dir
    report = {"data": str(args.data), "split": f"by case_id, {args.test_fraction:.0%} of cases held out (seed {args.seed})",
              "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "cpu": platform.processor() or platform.machine()},
              "tasks": {}}
    for task in args.tasks.split(","):
        spec = TASKS[task]
        items = read_labelled_images(args.data, label_field=spec["label_field"])
        train, test = split_by_group(items, args.test_fraction, seed=args.seed)
        metrics = train_classifier(train, models_dir / spec["folder"], test_items=test, epochs=args.epochs, image_size=args.image_size,
                                   min_count=10, modalities=spec["modalities"], name=f"medpix-{task}", description=spec["description"],
                                   source=f"MedPix 2.0 images.jsonl, label {spec['label_field']}", seed=args.seed, progress=False)
        held = metrics["heldout"]
        report["tasks"][task] = {
            "description": spec["description"], "label_field": spec["label_field"], "model": str(models_dir / spec["folder"]),
            "train_images": metrics["train"]["n"], "train_seconds": metrics["train_seconds"], "epochs": args.epochs,
            "heldout_images": held["n"], "heldout_cases": held["groups"],
            "accuracy": held["accuracy"], "balanced_accuracy": held["balanced_accuracy"],
            "majority_label": held["majority_label"], "majority_baseline": held["majority_baseline"],
            "best_constant_baseline": held["best_constant_baseline"],
            "chance_balanced_accuracy": round(1 / len(held["confusion"]["labels"]), 4),
            "per_class": held["per_class"], "confusion": held["confusion"], "train_accuracy": metrics["train"]["accuracy"],
            "loss": metrics["loss"],
        }
        print(f"{task:9s} held-out {held['n']} images: accuracy {held['accuracy']:.3f} (balanced {held['balanced_accuracy']:.3f}) "
              f"vs majority '{held['majority_label']}' {held['majority_baseline']:.3f}; trained in {metrics['train_seconds']} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
