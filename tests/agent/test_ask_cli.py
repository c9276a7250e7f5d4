"""`medrag ask` with the full agent: several indexes, images, rounds, threads, the JSON contract, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_medical_pdf


@pytest.fixture
def two_indexes(cli, tmp_path: Path) -> None:
    for name, pages in (("bones", ("bone", "marrow")), ("hearts", ("heart",))):
        pdf = write_medical_pdf(tmp_path / f"{name}.pdf", pages)
        code, _, err = cli("ingest", pdf, "--index", name, "--embedder", "hashing:256", "--no-progress")
        assert code == 0, err


def ask_json(cli, *args) -> dict:
    code, out, err = cli("ask", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_two_indexes_are_searched_in_parallel_and_both_cited(cli, two_indexes) -> None:
    data = ask_json(cli, "Which cells break down old bone and what is the pacemaker of the heart?", "--index", "bones", "--index", "hearts")
    assert len(data["sub_questions"]) == 2 and data["rounds"] >= 1
    first_round = [t for t in data["trace"] if t["step"] == "act" and t["round"] == 1]
    assert {t["tool"] for t in first_round} == {"search_text:bones", "search_text:hearts"}
    assert len(first_round) == 4  # two sub-questions x two indexes
    for step in data["trace"]:
        assert {"step", "tool", "inputs", "outputs_summary", "ms"} <= set(step)
    assert not data["abstained"]
    assert {c["source"] for c in data["citations"]} == {"bones.pdf", "hearts.pdf"}
    for n in (int(x) for x in __import__("re").findall(r"\[(\d+)\]", data["answer"])):
        assert 1 <= n <= len(data["citations"])


def test_image_goes_to_the_tools_of_its_modality(cli, two_indexes, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = tmp_path / "chest.png"
    Image.fromarray(np.clip(rng.normal(130, 30, (128, 128)), 0, 255).astype(np.uint8), "L").save(image)
    data = ask_json(cli, "What does this chest radiograph show about the heart?", "--index", "hearts", "--image", image)
    intake = data["trace"][0]
    assert intake["step"] == "intake" and intake["details"]["images"][0]["modality"] == "xray"
    tools = {t["tool"] for t in data["trace"] if t["step"] == "act"}
    assert "segment_lungs_xray" in tools and "segment_ct_tissues" not in tools


def test_max_rounds_and_thread(cli, two_indexes, home: Path) -> None:
    data = ask_json(cli, "What is the capital of France?", "--index", "bones", "--max-rounds", "1")
    assert data["rounds"] == 1 and data["abstained"]
    first = ask_json(cli, "Which cells break down old bone?", "--index", "bones", "--thread", "t1")
    follow = ask_json(cli, "And which cells build it?", "--index", "bones", "--thread", "t1")
    assert first["trace"][0]["details"]["turn"] == 1 and follow["trace"][0]["details"]["turn"] == 2
    assert (home / "conversations.sqlite").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--index", "nope"], "unknown index 'nope'"),
        (["--index", "bones", "--image", "missing.png"], "no such image file"),
        (["--index", "bones", "--tool", "no_such_tool"], "unknown tool 'no_such_tool'"),
        (["--index", "bones", "--max-rounds", "0"], "max-rounds"),
        ([], "--index"),
    ],
)
def test_bad_ask_input_is_one_error_line_and_non_zero(cli, two_indexes, args, needle) -> None:
    code, out, err = cli("ask", "What is bone?", *args)
    assert code != 0 and out == ""
    assert needle in err and "Traceback" not in err
