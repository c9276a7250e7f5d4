"""`medrag train-retriever`: train our own image-text dual encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import medrag.embed.image_text  # noqa: F401  registers the "dual-encoder" embedder for every CLI command (light: PIL, numpy)
from medrag.errors import InputError


def train_retriever(
    data: Annotated[Path, typer.Option("--data", help="MedPix folder holding images.jsonl (e.g. ../shared/data/medpix)")],
    out: Annotated[Path, typer.Option("--out", help="folder to save the trained model to")],
    epochs: Annotated[int, typer.Option("--epochs", help="passes over the training pairs")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", help="pairs per contrastive batch")] = 32,
    image_size: Annotated[int, typer.Option("--image-size", help="input size in pixels (square)")] = 128,
    seed: Annotated[int, typer.Option("--seed", help="random seed (split, initialisation, augmentation)")] = 0,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="share of cases held apart for evaluation")] = 0.2,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
) -> None:
    """Train an image-text retriever on MedPix (split by case) and print held-out recall."""
    from medrag.embed.medpix import load_medpix_pairs, split_by_group
    from medrag.embed.train import train_dual_encoder

    if not data.is_dir():
        raise InputError(f"data folder not found: {data} (pass the MedPix folder, e.g. ../shared/data/medpix)")
    train, test = split_by_group(load_medpix_pairs(data), test_fraction, seed=seed)
    if not train:
        raise InputError(f"no training pairs left in {data} after holding out {test_fraction:.0%} of cases")
    metrics = train_dual_encoder(
        train, out, epochs=epochs, batch_size=batch_size, image_size=image_size, seed=seed, progress=not no_progress, eval_pairs=test
    )
    typer.echo(f"trained on {len(train)} pairs in {metrics['train_seconds']} s -> {out}")
    held = metrics.get("heldout")
    if not held or "image_to_text" not in held:
        typer.echo("no held-out pairs to evaluate on")
        return
    typer.echo(f"held-out: {held['pairs']} pairs of {len({p.group_id for p in test})} cases")
    for direction in ("image_to_text", "text_to_image"):
        figures = held[direction]
        typer.echo(f"  {direction}: " + "  ".join(f"R@{k} {figures[f'recall@{k}']:.3f} (chance {figures[f'chance@{k}']:.3f})" for k in (1, 5, 10)))
    if "image_to_same_case" in held:
        same = held["image_to_same_case"]
        typer.echo(f"  image_to_same_case: R@10 {same['recall@10']:.3f} (chance {same['chance@10']:.3f}, {same['queries']} queries)")
