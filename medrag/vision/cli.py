"""`medrag tool ...`: list the registered agent tools and run one on an image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from medrag.errors import InputError, ToolError
from medrag.tools import describe_tool, load_builtin_tools

tool_app = typer.Typer(help="List agent tools and run image tools on a file.", no_args_is_help=True)


def _load_tools():
    return load_builtin_tools()  # importing the built-in tool modules registers their tools


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--arg takes KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)  # numbers, lists, booleans
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@tool_app.command("list")
def list_tools(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Every registered tool with its modalities and inputs."""
    registry = _load_tools()
    rows = [describe_tool(registry.get(name)) | {"name": name} for name in registry.names()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for row in rows:
        typer.echo(f"{row['name']}\t[{', '.join(row['modalities'])}]\t{row['description']}")


@tool_app.command("run")
def run_tool(
    name: Annotated[str, typer.Argument(help="tool name (see: medrag tool list)")],
    image: Annotated[Path, typer.Option("--image", help="image file (PNG, JPEG, TIFF, DICOM)")],
    arg: Annotated[Optional[list[str]], typer.Option("--arg", help="tool input KEY=VALUE (JSON values allowed), repeatable")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    model: Annotated[Optional[str], typer.Option("--model", help="model folder or weights file, for tools that load a model")] = None,
    setup: Annotated[Optional[list[str]], typer.Option("--setup", help="tool construction option KEY=VALUE (e.g. weights=densenet121-res224-all), repeatable")] = None,
) -> None:
    """Run an image tool on one image; a modality mismatch is an error, not a result."""
    from medrag.tools.vision import ImageTool

    factory = _load_tools().get(name)
    if not (isinstance(factory, type) and issubclass(factory, ImageTool)):
        raise InputError(f"'{name}' is not an image tool; `medrag tool run` runs image tools only (see: medrag tool list)")
    options = _parse_args(setup or [])
    if model is not None:
        options["model"] = model
    try:
        tool = factory(**options)
    except TypeError as exc:
        raise InputError(f"{name} does not take the options {sorted(options)}: {exc}") from None
    inputs = _parse_args(arg or [])
    # Load and check here so a mismatch raises (one error line, non-zero exit) instead of a failed result.
    img = tool.load(image, inputs.pop("modality", None), inputs.pop("body_part", None), inputs.pop("frame", 0), inputs.pop("window", None))
    tool.check(img)
    result = tool(image=img, **inputs)
    if not result.ok:
        raise ToolError(result.error or f"{name} failed")
    if as_json:
        payload = {
            "tool": result.tool,
            "ok": result.ok,
            "evidence": [e.to_dict() for e in result.evidence],
            "output": result.output,
            "overlay": result.output.get("overlay"),
            "duration_s": round(result.duration_s, 4),
        }
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
        return
    for ev in result.evidence:
        typer.echo(ev.text)
    if result.output.get("overlay"):
        typer.echo(f"overlay: {result.output['overlay']}")


def _split_list(value: str | None) -> list[str]:
    return [v.strip().lower() for v in (value or "").split(",") if v.strip()]


def train_classifier_command(
    data: Annotated[Path, typer.Option("--data", help="folder of per-label subfolders, a JSONL file, or a folder holding images.jsonl (MedPix)")],
    out: Annotated[Path, typer.Option("--out", help="model folder to write (config.json, labels.txt, weights, manifest.json)")],
    label_field: Annotated[str, typer.Option("--label-field", help="JSONL field holding the label (MedPix: modality_type, location, plane)")] = "label",
    image_field: Annotated[Optional[str], typer.Option("--image-field", help="JSONL field holding the image path (default: image or file)")] = None,
    group_field: Annotated[Optional[str], typer.Option("--group-field", help="JSONL field grouping images of one patient/case (default: group or case_id)")] = None,
    modalities: Annotated[Optional[str], typer.Option("--modalities", help="comma-separated modalities the tool accepts, e.g. ct,mr,unknown (default: all)")] = None,
    body_regions: Annotated[Optional[str], typer.Option("--body-regions", help="comma-separated body regions the tool accepts (default: any)")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="passes over the training images")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    image_size: Annotated[int, typer.Option("--image-size", help="model input side in pixels")] = 96,
    min_count: Annotated[int, typer.Option("--min-count", help="drop labels with fewer training images")] = 10,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="share of groups held out for evaluation (0: none)")] = 0.2,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="no horizontal flips (when left/right matters to the label)")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
) -> None:
    """Train a small CNN image classifier on CPU and save it as a model folder usable by the classify_image tool."""
    from medrag.vision.classifier import read_labelled_images, split_by_group, train_classifier

    items = read_labelled_images(data, label_field=label_field, image_field=image_field, group_field=group_field)
    train, test = split_by_group(items, test_fraction, seed=seed)
    if not train:
        raise InputError(f"no training images left in {data} after holding out {test_fraction:.0%} of groups")
    metrics = train_classifier(
        train, out, test_items=test, epochs=epochs, batch_size=batch_size, image_size=image_size, min_count=min_count,
        flip=not no_flip, modalities=_split_list(modalities), body_regions=_split_list(body_regions), seed=seed,
        source=f"{data} (label field {label_field})", progress=not no_progress,
    )
    tr = metrics["train"]
    typer.echo(f"trained on {tr['n']} images, {len(tr['confusion']['labels'])} labels, in {metrics['train_seconds']} s -> {out}")
    held = metrics.get("heldout")
    if held:
        typer.echo(f"held-out ({held['n']} images, {held['groups']} groups): accuracy {held['accuracy']:.3f}, "
                   f"balanced {held['balanced_accuracy']:.3f}; majority baseline ({held['majority_label']}) {held['majority_baseline']:.3f}")
    else:
        typer.echo("no held-out images to evaluate on")
    typer.echo(f"use it: medrag tool run classify_image --model {out} --image IMAGE")
