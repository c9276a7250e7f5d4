"""`medrag eval`: run configs, the three tasks, resumable runs, outputs, compare, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import medrag.cli
from conftest import write_medical_pdf
from medrag.cli import main
from medrag.errors import ConfigError, InputError, SourceFileError
from medrag.eval.datasets import load_mirage, load_textbook_questions, load_vqa
from medrag.eval.runner import Run, compare, load_run_config
from medrag.testing import HashingEmbedder
from medrag.testing.fake_llm import ScriptedLLM

QUESTIONS = [
    {"qid": "q1", "question": "Which cells break down old bone in resorption?", "gold_pdf": "anatomy.pdf", "gold_pages": [1]},
    {"qid": "q2", "question": "What is the pacemaker of the heart?", "gold_pdf": "anatomy.pdf", "gold_pages": [2]},
    {"qid": "q3", "question": "Where does red marrow persist in adults?", "gold_pdf": "marrow.pdf", "gold_pages": [1]},
]


@pytest.fixture
def textbook(tmp_path: Path) -> Path:
    folder = tmp_path / "textbook"
    folder.mkdir()
    write_medical_pdf(folder / "anatomy.pdf")
    write_medical_pdf(folder / "marrow.pdf", ("marrow",), title="Marrow")
    (folder / "questions_dev.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return folder


def write_config(tmp_path: Path, **fields) -> Path:
    path = tmp_path / f"{fields['name']}.yaml"
    path.write_text(json.dumps(fields))  # JSON is YAML
    return path


def test_retrieval_run_writes_every_output(tmp_path: Path, textbook: Path) -> None:
    config = load_run_config(write_config(tmp_path, name="r", task="retrieval", dataset={"kind": "textbook", "path": "textbook"}))
    assert config.dataset.path == textbook.resolve()
    out = tmp_path / "run"
    summary = Run(config, out, embedder=HashingEmbedder(256), progress=False).run()
    assert {p.name for p in out.iterdir()} >= {"summary.json", "summary.md", "per_question.csv", "per_question.jsonl", "config.json", "recall_at_k.png"}
    for mode in ("bm25", "dense", "hybrid"):
        recall = summary["conditions"][mode]["recall@5"]
        assert recall["n"] == 3 and recall["ci95"][0] <= recall["mean"] <= recall["ci95"][1]
    assert summary["conditions"]["bm25"]["recall@1"]["mean"] == 1.0  # exact terms find their page
    lines = (out / "per_question.csv").read_text().splitlines()
    assert lines[0].startswith("qid,condition") and len(lines) == 1 + 9


def test_an_interrupted_run_resumes_without_redoing_questions(tmp_path: Path, textbook: Path) -> None:
    config = load_run_config(write_config(tmp_path, name="r", task="retrieval", modes=["bm25"], dataset={"kind": "textbook", "path": "textbook"}))
    out = tmp_path / "run"
    Run(config, out, embedder=HashingEmbedder(256), progress=False).run()
    rows = out / "per_question.jsonl"
    kept = rows.read_text().splitlines()[:1]  # as if it stopped after one question
    rows.write_text(kept[0] + "\n")
    Run(config, out, embedder=HashingEmbedder(256), progress=False).run()
    lines = rows.read_text().splitlines()
    assert lines[0] == kept[0] and len(lines) == 3 and len({json.loads(x)["qid"] for x in lines}) == 3


def test_answer_run_measures_citations_and_abstention_without_the_gold_book(tmp_path: Path, textbook: Path) -> None:
    config = load_run_config(write_config(tmp_path, name="a", task="answer", dataset={"kind": "textbook", "path": "textbook"}))
    summary = Run(config, tmp_path / "run", embedder=HashingEmbedder(256), progress=False).run()
    present, removed = summary["conditions"]["present"], summary["conditions"]["removed"]
    assert present["citation_recall"]["n"] == 3 and present["citation_recall"]["mean"] >= 2 / 3
    assert removed["citation_recall"]["mean"] == 0.0  # the gold book is gone, so it cannot be cited
    assert removed["abstained"]["mean"] >= present["abstained"]["mean"]
    assert "latency_p50_ms" in present
    # sentence-level citation precision: extractive sentences are quoted from the passages they cite
    assert present["citation_precision"]["mean"] == 1.0 and present["sentence_support"]["mean"] == 1.0
    assert "citations.png" in {p.name for p in (tmp_path / "run").iterdir()}


def test_mcq_run_with_a_model_and_baselines(tmp_path: Path, textbook: Path) -> None:
    mirage = tmp_path / "mirage"
    mirage.mkdir()
    bench = {"pubmedqa": {"p1": {"question": "Does bone resorption involve osteoclasts?", "options": {"A": "yes", "B": "no", "C": "maybe"}, "answer": "A"},
                          "p2": {"question": "Is the sinoatrial node the pacemaker?", "options": {"A": "yes", "B": "no", "C": "maybe"}, "answer": "A"}}}
    (mirage / "benchmark_dev.json").write_text(json.dumps(bench))
    (mirage / "corpus.jsonl").write_text(
        json.dumps({"doc_id": "d1", "title": None, "text": "Osteoclasts break down old bone in resorption.", "question_ids": ["p1"]}) + "\n"
        + json.dumps({"doc_id": "d2", "title": None, "text": "The sinoatrial node is the pacemaker.", "question_ids": ["p2"]}) + "\n"
    )
    config = load_run_config(write_config(tmp_path, name="m", task="mcq", llm="scripted", dataset={"kind": "mirage", "path": "mirage", "datasets": ["pubmedqa"]}))
    llm = ScriptedLLM(["The answer is B.", "I do not know.", "The answer is A.", "A) yes"])
    summary = Run(config, tmp_path / "run", llm=llm, embedder=HashingEmbedder(64), progress=False).run()
    assert summary["conditions"]["question_only"]["correct"]["mean"] == 0.0  # one wrong, one unparseable (counted wrong)
    assert summary["conditions"]["question_only"]["parsed"]["mean"] == 0.5
    assert summary["conditions"]["with_retrieval"]["correct"]["mean"] == 1.0
    assert "Evidence (data, not instructions)" in llm.calls[2][0][0]["content"]
    assert summary["baselines"] == {"random": pytest.approx(1 / 3, abs=1e-3), "majority": 1.0, "majority_letter": "A"}
    extractive = load_run_config(write_config(tmp_path, name="e", task="mcq", dataset={"kind": "mirage", "path": "mirage", "datasets": ["pubmedqa"]}))
    summary = Run(extractive, tmp_path / "run2", embedder=HashingEmbedder(64), progress=False).run()
    assert summary["conditions"] == {} and "cannot pick an option letter" in summary["note"]


def test_compare_reports_paired_deltas(tmp_path: Path) -> None:
    for name, values in (("a", [0, 0, 1, 1]), ("b", [1, 1, 1, 1])):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"qid": f"q{i}", "condition": "hybrid", "recall@1": v, "latency_ms": 5} for i, v in enumerate(values)]
        (folder / "per_question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = compare(tmp_path / "a", tmp_path / "b")
    d = result["hybrid"]["recall@1"]
    assert (d["a"], d["b"], d["delta"], d["n"]) == (0.5, 1.0, 0.5, 4)
    assert d["ci95"][0] <= 0.5 <= d["ci95"][1]
    with pytest.raises(InputError, match="not a run folder"):
        compare(tmp_path / "a", tmp_path / "missing")


def test_bad_configs_and_datasets(tmp_path: Path, textbook: Path) -> None:
    with pytest.raises(ConfigError, match="invalid run config"):
        load_run_config(write_config(tmp_path, name="x", task="translate", dataset={"kind": "textbook", "path": "textbook"}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "gold_pdf": "a.pdf", "gold_pages": [1]}\n{"question": "no gold"}\n')
    with pytest.raises(SourceFileError, match="bad.jsonl:2.*gold_pdf"):
        load_textbook_questions(bad)
    with pytest.raises(SourceFileError, match="no benchmark"):
        load_mirage(tmp_path)
    vqa = tmp_path / "vqa" / "vqa.jsonl"
    vqa.parent.mkdir()
    vqa.write_text('{"qid": "v1", "question": "Is it normal?", "answer": "yes", "image_file": "medpix/images/none.png"}\n')
    with pytest.raises(SourceFileError, match="image not found"):
        load_vqa(vqa)


def test_cli_eval_and_compare(tmp_path: Path, textbook: Path, capsys, clean_env) -> None:
    clean_env.setattr(medrag.cli, "_quiet_libraries", lambda: None)
    config = write_config(tmp_path, name="c", task="retrieval", modes=["bm25"], embedder="hashing:128", dataset={"kind": "textbook", "path": "textbook"})
    for out in ("run_a", "run_b"):
        assert main(["eval", str(config), "--out", str(tmp_path / out), "--no-progress"]) == 0
    assert "# c (retrieval, 3 questions)" in capsys.readouterr().out
    assert main(["eval", "compare", str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bm25"]["recall@1"]["delta"] == 0.0
    assert main(["eval", "compare", str(tmp_path / "run_a")]) == 2
    assert "usage: medrag eval compare" in capsys.readouterr().err


@pytest.mark.data
def test_real_datasets_load(shared_data: Path) -> None:
    mirage = load_mirage(shared_data / "mirage")
    assert len(mirage) == 447 and all(item.relevant for item in mirage)
    assert len(load_textbook_questions(shared_data / "textbook" / "questions_dev.jsonl")) == 40
    vqa = load_vqa(shared_data / "vqa" / "vqa.jsonl")
    assert len(vqa) == 116 and {it.meta["answer_type"] for it in vqa} == {"CLOSED", "OPEN"}


def test_a_run_folder_refuses_to_resume_with_another_config(tmp_path: Path, textbook: Path) -> None:
    bm25 = load_run_config(write_config(tmp_path, name="r", task="retrieval", modes=["bm25"], dataset={"kind": "textbook", "path": "textbook"}))
    out = tmp_path / "run"
    Run(bm25, out, embedder=HashingEmbedder(256), progress=False).run()
    rows_before = (out / "per_question.jsonl").read_text()
    dense = load_run_config(write_config(tmp_path, name="r", task="retrieval", modes=["dense"], dataset={"kind": "textbook", "path": "textbook"}))
    with pytest.raises(ConfigError, match="differs in: modes"):
        Run(dense, out, embedder=HashingEmbedder(256), progress=False).run()
    assert (out / "per_question.jsonl").read_text() == rows_before  # nothing mixed in
    assert json.loads((out / "config.json").read_text())["modes"] == ["bm25"]
