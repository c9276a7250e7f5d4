"""A suite: several run configs run in turn, summarised in one Markdown baseline table.

    # evals/baselines.yaml
    name: baselines
    runs: [textbook_retrieval.yaml, mirage_retrieval.yaml, textbook_answers.yaml, mirage_mcq.yaml, vqa_smollm2.yaml]

``medrag eval suite evals/baselines.yaml --out runs/baselines [--results results]`` runs each
into OUT/<run name> (resumable: finished questions are kept), builds indexes once in
OUT/home (unless a run names its own home), and writes OUT/baselines.md. With
``--results DIR`` the table also goes to DIR/baselines.md and each run's summary to
DIR/runs/<name>.json and .md (the figures the README quotes). ``--table-only`` rebuilds the
table from the runs' finished summaries without running anything (runs done separately).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from medrag.errors import ConfigError, InputError
from medrag.eval.runner import Run, RunConfig, load_run_config
from medrag.storage import write_json


class SuiteConfig(BaseModel):
    name: str = "baselines"
    runs: list[Path] = Field(min_length=1)


def load_suite(path: str | Path) -> tuple[SuiteConfig, list[RunConfig]]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        suite = SuiteConfig.model_validate(raw if isinstance(raw, dict) else {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid suite config {path}: {exc} (expected: name, runs: [run config files])") from exc
    configs = [load_run_config((path.resolve().parent / run).resolve()) for run in suite.runs]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"suite {path}: run names must be unique (got {', '.join(names)})")
    return suite, configs


def run_suite(
    path: str | Path, out: str | Path, *, results: str | Path | None = None, progress: bool = True, table_only: bool = False
) -> dict[str, Any]:
    """Run every run of the suite (or, ``table_only``, read their finished summaries) and write the table."""
    suite, configs = load_suite(path)
    out = Path(out)
    summaries = []
    for config in configs:
        if table_only:
            summaries.append(_finished_summary(out / config.name))
            continue
        if config.home is None:
            config.home = out / "home"  # one index cache for every run of the suite
        summaries.append(Run(config, out / config.name, progress=progress).run())
    table = baseline_table(suite.name, summaries)
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.md").write_text(table, encoding="utf-8")
    write_json(out / "suite.json", {"name": suite.name, "runs": summaries})
    if results is not None:
        results = Path(results)
        (results / "runs").mkdir(parents=True, exist_ok=True)
        (results / "baselines.md").write_text(table, encoding="utf-8")
        for summary in summaries:
            shutil.copyfile(out / summary["name"] / "summary.json", results / "runs" / f"{summary['name']}.json")
            shutil.copyfile(out / summary["name"] / "summary.md", results / "runs" / f"{summary['name']}.md")
    return {"name": suite.name, "runs": summaries, "table": table}


def _finished_summary(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    if not path.is_file():
        raise InputError(f"{folder} has no summary.json: run the suite without --table-only first")
    return json.loads(path.read_text(encoding="utf-8"))


# -- the table ------------------------------------------------------------------------
def _ci(metrics: dict, key: str) -> str:
    v = metrics.get(key)
    return f"{v['mean']:.3f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" if isinstance(v, dict) else "–"


def _mean(metrics: dict, key: str, digits: int = 3) -> str:
    v = metrics.get(key)
    return f"{v['mean']:.{digits}f}" if isinstance(v, dict) else "–"


def _plain(metrics: dict, key: str) -> str:
    v = metrics.get(key)
    return f"{v:.0f}" if isinstance(v, (int, float)) else "–"


def _n(metrics: dict, key: str) -> str:
    v = metrics.get(key)
    return str(v["n"]) if isinstance(v, dict) else "–"


def _retrieval(summary: dict) -> list[list[str]]:
    rows = []
    groups = [("all", summary["conditions"])] + list(summary.get("by_dataset", {}).items())
    for dataset, conditions in groups:
        for mode, m in conditions.items():
            rows.append([summary["name"], dataset, mode, _mean(m, "recall@1"), _mean(m, "recall@5"), _mean(m, "recall@10"),
                         _mean(m, "mrr@10"), _ci(m, "ndcg@10"), _plain(m, "latency_p50_ms"), _plain(m, "latency_p95_ms"), _n(m, "recall@1")])
    return rows


def _answer(summary: dict) -> list[list[str]]:
    return [[summary["name"], condition, _ci(m, "citation_recall"), _ci(m, "citation_precision"), _mean(m, "sentence_support"),
             _ci(m, "abstained"), _plain(m, "latency_p50_ms"), _plain(m, "latency_p95_ms"), _n(m, "abstained")]
            for condition, m in summary["conditions"].items()]


def _mcq(summary: dict) -> list[list[str]]:
    rows = [[summary["name"], condition, _ci(m, "correct"), _mean(m, "parsed"), _mean(m, "tokens", 1),
             _plain(m, "latency_p50_ms"), _plain(m, "latency_p95_ms"), _n(m, "correct")]
            for condition, m in summary["conditions"].items()]
    b = summary.get("baselines") or {}
    if b:
        rows.append([summary["name"], "random answer (expected)", f"{b['random']:.3f}", "–", "–", "–", "–", str(summary["n_questions"])])
        rows.append([summary["name"], f"majority answer ('{b['majority_letter']}')", f"{b['majority']:.3f}", "–", "–", "–", "–", str(summary["n_questions"])])
    return rows


def _vqa(summary: dict) -> list[list[str]]:
    return [[summary["name"], condition, _ci(m, "closed_correct"), _mean(m, "parsed"), _ci(m, "open_f1"), _mean(m, "open_em"),
             _mean(m, "tokens", 1), _plain(m, "latency_p50_ms"), _plain(m, "latency_p95_ms"), f"{_n(m, 'closed_correct')}/{_n(m, 'open_f1')}"]
            for condition, m in summary["conditions"].items()]


# task -> (section title, column headers, row builder)
SECTIONS = {
    "retrieval": ("Retrieval", ["run", "dataset", "mode", "R@1", "R@5", "R@10", "MRR@10", "nDCG@10 [95% CI]", "p50 ms", "p95 ms", "n"], _retrieval),
    "answer": ("Answers and citations", ["run", "gold source", "citation recall", "citation precision", "sentence support", "abstained", "p50 ms", "p95 ms", "n"], _answer),
    "mcq": ("Multiple choice", ["run", "condition", "accuracy [95% CI]", "parsed", "tokens", "p50 ms", "p95 ms", "n"], _mcq),
    "vqa": ("Visual question answering", ["run", "condition", "closed acc. [95% CI]", "parsed", "open F1 [95% CI]", "open EM", "tokens", "p50 ms", "p95 ms", "n closed/open"], _vqa),
}


def _markdown(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(r) + " |" for r in rows]


def baseline_table(name: str, summaries: list[dict]) -> str:
    lines = [f"# {name}", "", "Produced by `medrag eval suite` (see docs/eval.md). Means with 95% bootstrap intervals; "
             "latency is wall time per question; tokens are generated tokens per question.", ""]
    for task, (title, headers, build) in SECTIONS.items():
        chosen = [s for s in summaries if s["task"] == task]
        if not chosen:
            continue
        lines += [f"## {title}", ""]
        lines += _markdown(headers, [row for s in chosen for row in build(s)])
        for s in chosen:
            notes = ([s["note"]] if "note" in s else []) + list(s.get("notes", []))
            lines += [f"- {s['name']}: {n}" for n in notes]
        lines.append("")
    return "\n".join(lines)
