"""`medrag eval suite`: several runs, one baseline table, published copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_medical_pdf
from medrag.errors import ConfigError
from medrag.eval.suite import load_suite


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A suite of a textbook retrieval run and an extractive MCQ run (baselines only), on small real-format data."""
    book = tmp_path / "data" / "textbook"
    book.mkdir(parents=True)
    write_medical_pdf(book / "anatomy.pdf")
    questions = [{"qid": "q1", "question": "Which cells break down old bone?", "gold_pdf": "anatomy.pdf", "gold_pages": [1]},
                 {"qid": "q2", "question": "What is the pacemaker of the heart?", "gold_pdf": "anatomy.pdf", "gold_pages": [2]}]
    (book / "questions_dev.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    mirage = tmp_path / "data" / "mirage"
    mirage.mkdir()
    bench = {"pubmedqa": {"p1": {"question": "Is it?", "options": {"A": "yes", "B": "no", "C": "maybe"}, "answer": "A"}},
             "bioasq": {"b1": {"question": "Is that?", "options": {"A": "yes", "B": "no"}, "answer": "B"}}}
    (mirage / "benchmark_dev.json").write_text(json.dumps(bench))
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "retrieval.yaml").write_text(json.dumps({"name": "book", "task": "retrieval", "modes": ["bm25", "dense"], "embedder": "hashing:128",
                                                      "dataset": {"kind": "textbook", "path": "../data/textbook"}}))
    (evals / "mcq.yaml").write_text(json.dumps({"name": "mc", "task": "mcq", "dataset": {"kind": "mirage", "path": "../data/mirage"}}))
    (evals / "suite.yaml").write_text("name: small\nruns: [retrieval.yaml, mcq.yaml]\n")
    return evals / "suite.yaml"


def test_suite_writes_one_table_and_publishes_it(tmp_path: Path, suite: Path, cli) -> None:
    out, results = tmp_path / "out", tmp_path / "results"
    code, stdout, _ = cli("eval", "suite", suite, "--out", out, "--results", results, "--no-progress")
    assert code == 0
    table = (out / "baselines.md").read_text()
    assert stdout.strip() == table.strip() and (results / "baselines.md").read_text() == table
    assert "## Retrieval" in table and "## Multiple choice" in table and "## Visual" not in table
    row = next(line for line in table.splitlines() if line.startswith("| book | all | bm25 |"))
    assert row.split(" | ")[3] == "1.000"  # bm25 finds both pages at rank 1
    assert "| mc | majority answer ('A') | 0.500 |" in table and "| mc | random answer (expected) | 0.417 |" in table
    assert "cannot pick an option letter" in table
    assert {p.name for p in (results / "runs").iterdir()} == {"book.json", "book.md", "mc.json", "mc.md"}
    assert (out / "home" / "indexes").is_dir()  # one index cache for the whole suite
    summaries = json.loads((out / "suite.json").read_text())["runs"]
    assert [s["name"] for s in summaries] == ["book", "mc"]
    # the table again from the finished runs, nothing run
    (out / "baselines.md").unlink()
    assert cli("eval", "suite", suite, "--out", out, "--table-only")[0] == 0
    assert (out / "baselines.md").read_text() == table
    code, _, err = cli("eval", "suite", suite, "--out", tmp_path / "nothing", "--table-only")
    assert code != 0 and "no summary.json" in err


def test_bad_suites(tmp_path: Path, suite: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: x\nruns: []\n")
    with pytest.raises(ConfigError, match="invalid suite config"):
        load_suite(empty)
    twice = suite.parent / "twice.yaml"
    twice.write_text("runs: [retrieval.yaml, retrieval.yaml]\n")
    with pytest.raises(ConfigError, match="run names must be unique"):
        load_suite(twice)
