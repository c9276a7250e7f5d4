"""`medrag eval RUN.yaml --out DIR` and `medrag eval compare DIR_A DIR_B`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from medrag.errors import InputError


def eval_command(
    target: Annotated[str, typer.Argument(help="a run config (YAML), or 'compare'")],
    runs: Annotated[Optional[list[Path]], typer.Argument(help="compare: the two run folders")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="run folder to write (resumes if it exists)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary/comparison as JSON")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Evaluate retrieval, answers or multiple choice on a dataset; or compare two runs."""
    from medrag.eval.runner import Run, compare, load_run_config

    if target == "compare":
        if not runs or len(runs) != 2:
            raise InputError("usage: medrag eval compare RUN_DIR_A RUN_DIR_B")
        result = compare(runs[0], runs[1])
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        for condition, metrics in result.items():
            typer.echo(condition or "(all)")
            for metric, d in metrics.items():
                typer.echo(f"  {metric:20s} {d['a']:.3f} -> {d['b']:.3f}  delta {d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]  n={d['n']}")
        return
    if runs:
        raise InputError("give one run config, or: medrag eval compare RUN_DIR_A RUN_DIR_B")
    config = load_run_config(Path(target))
    out = out or Path("runs") / config.name
    summary = Run(config, out, progress=progress).run()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo((out / "summary.md").read_text(encoding="utf-8"))
        typer.echo(f"run folder: {out}")
