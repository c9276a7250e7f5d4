"""The `medrag` command, run in-process through medrag.cli.main."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

import medrag.cli
from conftest import tree_digest, write_medical_pdf
from medrag.cli import main
from medrag.errors import IndexNotFound

QUESTION = "What is the pacemaker of the heart?"


@pytest.fixture
def home(tmp_path: Path, clean_env) -> Path:
    home = tmp_path / "home"
    clean_env.setenv("MEDRAG_HOME", str(home))
    clean_env.setenv("MEDRAG_EMBEDDER", "hashing:256")
    clean_env.setattr(medrag.cli, "_quiet_libraries", lambda: None)
    return home


@pytest.fixture
def notes(cli, tmp_path: Path) -> Path:
    """An index 'notes' holding the two-page anatomy PDF; returns its folder."""
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf")
    code, out, err = cli("ingest", pdf, "--index", "notes", "--embedder", "hashing:256", "--no-progress")
    assert code == 0, err
    return Path(medrag.cli._settings().indexes_dir) / "notes"


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


def test_ingest_prints_a_summary(cli, tmp_path: Path, home: Path) -> None:
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf")
    code, out, err = cli("ingest", pdf, "--index", "notes", "--embedder", "hashing:256", "--no-progress")
    assert code == 0
    assert out.startswith("index 'notes': 1 added, 0 replaced, 0 unchanged; +4 chunks (4 in all) in ")
    assert err == ""
    manifest = json.loads((home / "indexes" / "notes" / "manifest.json").read_text())
    assert manifest["embedder"]["name"] == "hashing:256" and manifest["embedder"]["dim"] == 256
    assert len(list((home / "assets" / "pages").glob("*.jpg"))) == 2


def test_ingest_again_uses_the_index_embedder_and_skips_unchanged(cli, notes: Path, tmp_path: Path) -> None:
    before = tree_digest(notes)
    code, out, err = cli("ingest", tmp_path / "anatomy.pdf", "--index", "notes", "--no-progress")
    assert code == 0, err
    assert "0 added, 0 replaced, 1 unchanged; +0 chunks (4 in all)" in out
    assert tree_digest(notes) == before


def test_ingest_uses_the_configured_embedder_for_a_new_index(cli, tmp_path: Path, home: Path) -> None:
    code, out, err = cli("ingest", write_medical_pdf(tmp_path / "a.pdf"), "--index", "fresh", "--no-progress")
    assert code == 0, err
    assert json.loads((home / "indexes" / "fresh" / "manifest.json").read_text())["embedder"]["name"] == "hashing:256"


def test_ask_json_prints_one_answer_object(cli, notes: Path) -> None:
    code, out, err = cli("ask", QUESTION, "--index", "notes", "--json")
    assert code == 0, err
    data = json.loads(out)  # the whole stdout is one JSON object
    assert isinstance(data, dict)
    assert data["question"] == QUESTION
    assert isinstance(data["answer"], str) and data["answer"].startswith("The sinoatrial node")
    assert data["abstained"] is False
    assert isinstance(data["confidence"], float) and 0.0 < data["confidence"] <= 1.0
    assert data["citations"] and [c["n"] for c in data["citations"]] == list(range(1, len(data["citations"]) + 1))
    first = data["citations"][0]
    assert first["source"] == "anatomy.pdf" and first["page"] == 2
    assert first["chunk_id"].endswith(":p0002:c000")
    assert isinstance(first["score"], float) and len(first["bbox"]) == 4
    assert "[1]" in data["answer"]
    assert [t["step"] for t in data["trace"]] == ["intake", "plan", "act", "rethink", "compose", "verify"]
    assert all(isinstance(t["ms"], float) for t in data["trace"])
    assert data["trace"][2]["tool"] == "search_text" and data["trace"][2]["inputs"] == {"query": QUESTION}
    assert data["rounds"] == 1 and data["sub_questions"] == [QUESTION]


def test_ask_plain_output_lists_sources(cli, notes: Path) -> None:
    code, out, err = cli("ask", QUESTION, "--index", "notes")
    assert code == 0, err
    assert "[1]" in out.splitlines()[0]
    assert "\nSources:\n" in out
    assert "  [1] Notes on Anatomy, p. 2" in out
    assert "Confidence: " in out


def test_ask_trace_prints_each_step_on_stderr(cli, notes: Path) -> None:
    code, out, err = cli("ask", QUESTION, "--index", "notes", "--trace")
    assert code == 0, err
    steps = [line.split("]")[0].lstrip("[") for line in err.strip().splitlines()]
    assert steps == ["intake", "plan", "act r1", "rethink r1", "compose", "verify"]
    assert "] search_text " in err
    assert "Sources:" in out and "[intake]" not in out


def test_ask_off_topic_abstains(cli, notes: Path) -> None:
    code, out, err = cli("ask", "What is the capital of France?", "--index", "notes", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["abstained"] is True and data["citations"] == []


def test_ask_source_filter_and_top_k(cli, notes: Path) -> None:
    code, out, err = cli("ask", QUESTION, "--index", "notes", "--json", "--source", "other.pdf")
    assert code == 0, err
    data = json.loads(out)
    assert data["abstained"] is True
    acts = [t for t in data["trace"] if t["step"] == "act"]
    assert acts and all(t["inputs"]["where"] == {"source": "other.pdf"} for t in acts)
    code, out, _ = cli("ask", QUESTION, "--index", "notes", "--json", "--top-k", "1")
    assert code == 0
    assert len(json.loads(out)["trace"][2]["details"]["evidence"]) == 1


def test_index_list_and_info(cli, notes: Path, home: Path) -> None:
    code, out, err = cli("index", "list")
    assert code == 0, err
    (line,) = out.strip().splitlines()
    name, sources, chunks, embedder, updated = line.split("\t")
    assert (name, sources, chunks, embedder) == ("notes", "1 sources", "4 chunks", "hashing:256")
    assert updated.startswith("20")

    code, out, err = cli("index", "info", "notes")
    assert code == 0, err
    info = json.loads(out)
    assert info["name"] == "notes"
    assert info["counts"] == {"sources": 1, "chunks": 4}
    assert info["sources"][0]["source"] == "anatomy.pdf"


def test_index_list_when_empty(cli, home: Path) -> None:
    code, out, _ = cli("index", "list")
    assert code == 0
    assert out.strip() == f"no indexes in {home / 'indexes'}"


def test_search_prints_ranked_passages(cli, notes: Path) -> None:
    code, out, err = cli("search", "sinoatrial node pacemaker", "--index", "notes", "-k", "2")
    assert code == 0, err
    lines = out.splitlines()
    hits = [ln for ln in lines if ln.startswith("[")]
    assert len(hits) == 2
    assert hits[0].startswith("[1] anatomy.pdf p.2 ") and "score=" in hits[0] and "dense=" in hits[0]
    assert "sinoatrial node" in lines[1]

    code, out, err = cli("search", "osteoclasts", "--index", "notes", "--json", "-k", "3")
    assert code == 0, err
    results = json.loads(out)
    assert 1 <= len(results) <= 3
    assert "Osteoclasts" in results[0]["text"]
    assert set(results[0]["scores"]) == {"dense", "lexical", "fused"}
    assert results[0]["citation"]["page"] == 1


def test_ask_unknown_index_is_a_one_line_error(cli, notes: Path) -> None:
    code, out, err = cli("ask", QUESTION, "--index", "nope")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "unknown index 'nope'", "known: notes", "medrag ingest PATH --index nope")


def test_debug_shows_the_exception(home: Path) -> None:
    with pytest.raises(IndexNotFound):
        main(["--debug", "ask", QUESTION, "--index", "nope"])
    assert main(["index", "list"]) == 0  # --debug does not stick to later calls


@pytest.mark.parametrize("command", ["ask", "search"])
@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question_is_an_error(cli, notes: Path, command: str, question: str) -> None:
    code, out, err = cli(command, question, "--index", "notes")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, "empty")


def test_invalid_index_name_is_an_error(cli, tmp_path: Path, home: Path) -> None:
    code, _, err = cli("ingest", write_medical_pdf(tmp_path / "a.pdf"), "--index", "../evil", "--no-progress")
    assert code == 2
    assert_one_line_error(err, "invalid index name")
    assert not (home / "evil").exists() and not (home / "indexes").exists()


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere.pdf"


def _not_pdf(tmp_path: Path) -> Path:
    path = tmp_path / "notes.pdf"
    path.write_text("Compact bone is dense. This is plain text.")
    return path


def _corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    return path


def _unsupported(tmp_path: Path) -> Path:
    path = tmp_path / "notes.docx"  # .txt is read as a plain-text report
    path.write_text("Compact bone is dense.")
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_missing, "file not found"),
        (_not_pdf, "not a PDF file"),
        (_corrupt, "corrupt or unreadable PDF"),
        (_unsupported, "unsupported file type '.docx'"),
    ],
    ids=["missing", "not-pdf", "corrupt", "unsupported"],
)
def test_bad_ingest_fails_and_leaves_the_index_unchanged(cli, notes: Path, tmp_path: Path, make, needle: str) -> None:
    before = tree_digest(notes)
    bad = make(tmp_path)
    code, out, err = cli("ingest", bad, "--index", "notes", "--strict", "--no-progress")
    assert code == 2
    assert out == ""
    assert_one_line_error(err, needle, bad.name)
    assert tree_digest(notes) == before


@pytest.mark.parametrize("flag", [[], ["--skip-bad"]], ids=["default", "explicit"])
def test_bad_files_are_skipped_reported_and_exit_3_by_default(cli, notes: Path, tmp_path: Path, flag: list[str]) -> None:
    good = write_medical_pdf(tmp_path / "marrow.pdf", ("marrow",))
    bad = _corrupt(tmp_path)
    code, out, err = cli("ingest", good, bad, "--index", "notes", *flag, "--no-progress")
    assert code == 3
    assert "1 added" in out and "1 failed" in out and "(5 in all)" in out
    skipped = [ln for ln in err.splitlines() if ln.startswith("skipped ")]
    assert len(skipped) == 1 and "broken.pdf" in skipped[0] and "corrupt" in skipped[0]
    assert skipped[0].count("broken.pdf") == 1  # the path once, then the reason


def test_usage_error_exits_non_zero_without_traceback(cli, home: Path) -> None:
    code, out, err = cli("ask", QUESTION)  # --index missing
    assert code == 2
    assert "Traceback" not in err and "--index" in err


def test_index_delete(cli, notes: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, _ = cli("index", "delete", "notes")
    assert code == 1 and notes.exists()  # declined
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = cli("index", "delete", "notes")
    assert code == 1 and notes.exists()  # no answer at all
    assert err.strip().endswith("aborted") and "Traceback" not in err

    code, out, err = cli("index", "delete", "notes", "--yes")
    assert code == 0, err
    assert out.strip() == "deleted index 'notes'"
    assert not notes.exists()
    code, out, _ = cli("index", "list")
    assert out.startswith("no indexes in")

    code, _, err = cli("index", "delete", "notes", "--yes")
    assert code == 2
    assert_one_line_error(err, "unknown index 'notes'")
    code, _, err = cli("index", "info", "notes")
    assert code == 2
    assert_one_line_error(err, "unknown index 'notes'")
