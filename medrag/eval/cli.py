"""`medrag eval RUN.yaml --out DIR`, `medrag eval compare DIR_A DIR_B` and `medrag eval suite SUITE.yaml --out DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from medrag.errors import InputError


def eval_command(
    target: Annotated[str, typer.Argument(help="a run config (YAML), 'compare' or 'suite'")],
    runs: Annotated[Optional[list[Path]], typer.Argument(help="compare: the two run folders; suite: the suite config")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="run folder to write (resumes a run of the same config)")] = None,
    results: Annotated[Optional[Path], typer.Option(help="suite: also write DIR/baselines.md and DIR/runs/<name>.json|md")] = None,
    table_only: Annotated[bool, typer.Option("--table-only", help="suite: rebuild the table from finished runs, run nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary/comparison as JSON")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Evaluate retrieval, answers, multiple choice or VQA on a dataset; compare two runs; or run a suite into one table."""
    from medrag.eval.runner import Run, compare, load_run_config

    if target == "suite":
        from medrag.eval.suite import load_suite, run_suite

        if not runs or len(runs) != 1:
            raise InputError("usage: medrag eval suite SUITE.yaml --out DIR [--results results]")
        result = run_suite(runs[0], out or Path("runs") / load_suite(runs[0])[0].name, results=results, progress=progress, table_only=table_only)
        typer.echo(json.dumps(result["runs"], indent=2) if as_json else result["table"])
        return

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
