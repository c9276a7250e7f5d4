"""`medrag tool ...`: list the registered agent tools and run one on an image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from medrag.errors import InputError, ToolError

tool_app = typer.Typer(help="List agent tools and run image tools on a file.", no_args_is_help=True)


def _load_tools():
    # Importing the modules registers their tools.
    import medrag.tools.kg_lookup  # noqa: F401
    import medrag.tools.retrieval  # noqa: F401
    import medrag.tools.vision  # noqa: F401
    from medrag.registry import tools

    return tools


def describe(factory) -> dict[str, Any]:
    return {
        "name": getattr(factory, "name", ""),
        "description": getattr(factory, "description", ""),
        "modalities": sorted(getattr(factory, "modalities", ())),
        "body_regions": sorted(getattr(factory, "body_regions", ())),
        "inputs": dict(getattr(factory, "inputs", {})),
    }


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
    rows = [describe(registry.get(name)) | {"name": name} for name in registry.names()]
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
) -> None:
    """Run an image tool on one image; a modality mismatch is an error, not a result."""
    from medrag.tools.vision import ImageTool

    factory = _load_tools().get(name)
    if not (isinstance(factory, type) and issubclass(factory, ImageTool)):
        raise InputError(f"'{name}' is not an image tool; `medrag tool run` runs image tools only (see: medrag tool list)")
    tool = factory()
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
