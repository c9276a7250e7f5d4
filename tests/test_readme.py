"""The README's Python examples run as printed (against a fast hashing-embedder setup)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import write_medical_pdf
from medrag.config import load_settings
from medrag.demo import build_demo_index
from medrag.testing import HashingEmbedder

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def home(tmp_path: Path, clean_env) -> Path:
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    clean_env.setenv("MEDRAG_EMBEDDER", "hashing:256")  # the examples' default embedder, made fast
    clean_env.chdir(tmp_path)
    return tmp_path / "home"


def test_readme_has_the_three_api_examples() -> None:
    blocks = python_blocks()
    assert len(blocks) == 3
    assert 'Agent.from_index("demo-hpo")' in blocks[0]
    assert "Agent.from_config(" in blocks[1] and "images=" in blocks[1] and "thread_id=" in blocks[1]
    assert "ingest(" in blocks[2]


def test_agent_example_runs(home: Path, capsys) -> None:
    build_demo_index(load_settings(), HashingEmbedder(256), progress=False)
    exec(compile(python_blocks()[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Confidence:" in out


def test_ingest_example_runs(home: Path, tmp_path: Path, capsys) -> None:
    write_medical_pdf(tmp_path / "chapter.pdf")
    exec(compile(python_blocks()[2], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "index 'mybook': 1 added" in out
    assert '"answer"' in out and '"citations"' in out


def test_full_agent_example_runs(home: Path, tmp_path: Path, capsys) -> None:
    import numpy as np
    from PIL import Image

    build_demo_index(load_settings(), HashingEmbedder(256), progress=False)
    rng = np.random.default_rng(0)  # a grey radiograph-like picture in the working directory
    Image.fromarray(np.clip(rng.normal(140, 25, (128, 128)), 0, 255).astype(np.uint8), "L").save(tmp_path / "chest.png")
    scope: dict = {}
    exec(compile(python_blocks()[1], "README.md", "exec"), scope)
    out = capsys.readouterr().out
    assert "Confidence:" in out
    answer, follow_up = scope["answer"], scope["follow_up"]
    assert len(answer.sub_questions) == 2 and 1 <= answer.rounds <= 2
    assert any(step.tool == "segment_lungs_xray" for step in answer.trace)
    assert follow_up.trace[0].details["turn"] == 2
