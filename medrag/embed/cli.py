"""`medrag train-retriever`: train our own image-text dual encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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


# --- `medrag images ...`: search image indexes, train the modality classifier -------------------

images_app = typer.Typer(help="Image indexes: similar-case and text-to-image search, modality classifier.", no_args_is_help=True)


def _cli_settings():
    from medrag.cli import _quiet_libraries, _settings

    _quiet_libraries()
    return _settings()


@images_app.command("search")
def images_search(
    query: Annotated[str, typer.Argument(help="a query image (PNG/JPEG/DICOM path) or a text description")],
    index: Annotated[str, typer.Option("--index", "-i", help="image index name (made by medrag ingest IMAGE_FOLDER)")],
    k: Annotated[int, typer.Option("--top-k", "-k", help="how many images")] = 5,
    modality: Annotated[str, typer.Option(help="image queries: auto (route by detected modality), any, or ct|mr|xray|photo")] = "auto",
    where: Annotated[Optional[list[str]], typer.Option("--where", help="metadata filter, e.g. 'plane=Axial; case_id=MPX1009'")] = None,
    modality_model: Annotated[Optional[Path], typer.Option(help="modality classifier folder (default: $MEDRAG_HOME/models/modality)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
) -> None:
    """Search an image index with an image (similar cases) or with text (images matching a description)."""
    import json

    from medrag.index.filters import parse_where
    from medrag.tools.image_search import ImageSearcher

    if k < 1:
        raise InputError(f"--top-k must be at least 1, got {k}")
    settings = _cli_settings()
    searcher = ImageSearcher.open(index, settings, classifier_dir=modality_model)
    filters = parse_where("; ".join(where)) if where else None
    path = Path(query).expanduser()
    if path.is_file():
        hits, details = searcher.search_image(path, k, modality=modality, where=filters)
    else:
        hits, details = searcher.search_text(query, k, where=filters), {}
    evidence = [h.evidence(index) for h in hits]
    if as_json:
        typer.echo(json.dumps({"query": query, **details, "results": [e.to_dict() for e in evidence]}, ensure_ascii=False, indent=2))
        return
    route = details.get("route")
    if route:
        how = f"{route.get('modality')} by {route.get('by')}" + (f" ({route['confidence']:.2f})" if route.get("confidence") is not None else "")
        typer.echo(f"route: {how}" + (f"; {route['note']}" if route.get("note") else ""))
    if not evidence:
        typer.echo("no matching images")
    for n, (hit, ev) in enumerate(zip(hits, evidence), start=1):
        r = hit.record
        typer.echo(f"[{n}] {hit.score:.3f}  {r.case_id or '-'}  {r.modality}/{r.plane or '-'}  {r.path}")
        if r.caption:
            typer.echo(f"     {r.caption[:160]}")
        if r.diagnosis:
            typer.echo(f"     diagnosis: {r.diagnosis}")


@images_app.command("train-modality")
def images_train_modality(
    data: Annotated[Path, typer.Option("--data", help="MedPix-layout folder holding images.jsonl (modality_type, plane)")],
    out: Annotated[Optional[Path], typer.Option("--out", help="folder to save to (default: $MEDRAG_HOME/models/modality, used by image search)")] = None,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="share of cases held apart to measure accuracy")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="seed of the case split")] = 0,
    embedder: Annotated[Optional[str], typer.Option("--embedder", help="classify this image embedder's vectors (the image index's, e.g. dual-encoder:DIR) as well as image statistics")] = None,
    views: Annotated[str, typer.Option("--views", help="comma-separated views each image is trained on and predicted over (probabilities averaged): original, hflip, crop90")] = "original",
    physics: Annotated[bool, typer.Option("--physics", help="add the image_physics CT-vs-MR cues to the features")] = False,
    ensemble: Annotated[bool, typer.Option("--ensemble", help="one regression on the grey-level features, one on the scattering coefficients (--scattering), one on the vectors (--embedder), probabilities averaged")] = False,
    texture: Annotated[bool, typer.Option("--texture", help="add the image_texture local-binary-pattern histograms to the features")] = False,
    scattering: Annotated[bool, typer.Option("--scattering", help="add the image_scattering wavelet coefficients to the features")] = False,
    head: Annotated[str, typer.Option("--head", help="modality head: logistic (regression) or mlp (one hidden layer; slower to train)")] = "logistic",
) -> None:
    """Train the modality/plane classifier that routes image queries, and print its held-out accuracy."""
    from medrag.embed.medpix import split_by_group
    from medrag.embed.train import ImageCaptionPair
    from medrag.vision.modality import load_medpix_modality_samples, train_modality_classifier

    settings = _cli_settings()
    samples = load_medpix_modality_samples(data)
    if not samples:
        raise InputError(f"{data} lists no present image with a known modality")
    pairs = [ImageCaptionPair(str(i), "", s[3]) for i, s in enumerate(samples)]
    train, test = split_by_group(pairs, test_fraction, seed=seed)
    target = out or (Path(settings.home) / "models" / "modality")
    image_embedder = None
    if embedder:
        from medrag.embed.image_text import make_image_embedder

        image_embedder = make_image_embedder(embedder, device=settings.device)
    metrics = train_modality_classifier([samples[int(p.image_path)] for p in train], target,
                                        eval_samples=[samples[int(p.image_path)] for p in test], embedder=image_embedder,
                                        views=[v.strip() for v in views.split(",") if v.strip()], physics=physics, ensemble=ensemble,
                                        texture=texture, scattering=scattering, head=head, progress=settings.progress)
    typer.echo(f"trained on {metrics['samples']} images ({', '.join(metrics['heads']['modality'])}) -> {target}")
    held = metrics.get("heldout") or {}
    if held:
        line = f"held-out ({held['samples']} images of cases not trained on): modality accuracy {held['modality_accuracy']:.3f} (majority {held['modality_majority']:.3f})"
        if "plane_accuracy" in held:
            line += f", plane accuracy {held['plane_accuracy']:.3f} (majority {held['plane_majority']:.3f})"
        typer.echo(line)
