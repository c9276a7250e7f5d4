"""`medrag ask --llm openai:...` end to end: a real local HTTP server phrases the answer, the JSON contract holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import medrag.cli
from conftest import write_medical_pdf
from medrag.cli import main
from medrag.testing.fake_llm import FakeOpenAIServer

QUESTION = "What is the pacemaker of the heart?"
CITE = re.compile(r"\[(\d+)\]")
PASSAGE = re.compile(r'\[(\d+)\] Source:[^\n]*\n"""\n(.*?)\n"""', re.S)


def is_compose(request: dict) -> bool:
    """The cited-answer prompt (the agent also asks the model to plan and to second-check support)."""
    return "numbered evidence passages" in request["messages"][0]["content"]


def cite_the_pacemaker_passage(request: dict) -> str:
    """Answer like a well-behaved model: quote the passage about the pacemaker, cite it, plus one invented citation.

    Asked to split the question it keeps it whole; asked whether passages support a sentence it says yes.
    """
    system = request["messages"][0]["content"]
    if "split medical questions" in system:
        return json.dumps([QUESTION])
    if "support a sentence" in system:
        return "yes"
    user = request["messages"][-1]["content"]
    n = next(num for num, text in PASSAGE.findall(user) if "pacemaker" in text)
    return (
        f"The sinoatrial node in the wall of the right atrium is the pacemaker of the heart [{n}]. "
        "It was discovered on the moon [42]. This sentence cites nothing."
    )


@pytest.fixture
def cli(tmp_path: Path, clean_env, capsys):
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    clean_env.setenv("MEDRAG_EMBEDDER", "hashing:256")
    clean_env.setattr(medrag.cli, "_quiet_libraries", lambda: None)
    clean_env.delenv("MEDRAG_OPENAI_API_KEY", raising=False)
    clean_env.setenv("MEDRAG_ABSTAIN_BELOW", "0.3")  # hashing-embedder calibration, as in tests/agent/test_graph.py

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    pdf = write_medical_pdf(tmp_path / "anatomy.pdf")
    code, _, err = run("ingest", pdf, "--index", "notes", "--embedder", "hashing:256", "--no-progress")
    assert code == 0, err
    return run


@pytest.fixture
def server():
    with FakeOpenAIServer(cite_the_pacemaker_passage) as srv:
        yield srv


def assert_contract(answer: dict) -> None:
    numbers = {int(n) for n in CITE.findall(answer["answer"])}
    assert numbers, answer["answer"]
    assert numbers == {c["n"] for c in answer["citations"]}
    for sentence in answer["sentences"]:
        assert set(sentence["citations"]) <= numbers


def test_ask_with_an_openai_compatible_server(cli, server: FakeOpenAIServer) -> None:
    code, out, err = cli("ask", QUESTION, "--index", "notes", "--json", "--llm", f"openai:{server.base_url}#fake-model")
    assert code == 0, err
    answer = json.loads(out)
    assert_contract(answer)
    assert not answer["abstained"]
    assert answer["answer"] == "The sinoatrial node in the wall of the right atrium is the pacemaker of the heart. [1]"
    assert answer["citations"][0]["page"] == 2
    composed = [r for r in server.requests if is_compose(r)]
    assert len(composed) == 1
    sent = composed[0]
    assert sent["model"] == "fake-model" and sent["temperature"] == 0.0
    assert QUESTION in sent["messages"][-1]["content"]
    assert "Authorization" not in server.headers[0]


def test_api_key_comes_from_the_environment(cli, server: FakeOpenAIServer, clean_env) -> None:
    clean_env.setenv("MEDRAG_OPENAI_API_KEY", "sk-from-env")
    code, out, err = cli("ask", QUESTION, "--index", "notes", "--json", "--llm", f"openai:{server.base_url}#fake-model")
    assert code == 0, err
    assert server.headers[0]["Authorization"] == "Bearer sk-from-env"
    assert "sk-from-env" not in out + err


def test_a_failing_server_falls_back_to_the_extractive_answer(cli, server: FakeOpenAIServer) -> None:
    server.fail_with = [(401, '{"error": "bad key"}')] * 20  # 401 is not retried: every call fails once
    code, out, err = cli("ask", QUESTION, "--index", "notes", "--json", "--llm", f"openai:{server.base_url}#fake-model")
    assert code == 0, err
    answer = json.loads(out)
    assert_contract(answer)
    assert answer["answer"].startswith("The sinoatrial node")
    assert any(is_compose(r) for r in server.requests)
    code, extractive, _ = cli("ask", QUESTION, "--index", "notes", "--json")
    assert json.loads(extractive)["answer"] == answer["answer"]


def test_extractive_is_the_default_and_calls_no_server(cli, server: FakeOpenAIServer) -> None:
    code, out, err = cli("ask", QUESTION, "--index", "notes", "--json", "--llm", "extractive")
    assert code == 0, err
    assert_contract(json.loads(out))
    assert server.requests == []


@pytest.mark.parametrize(
    "spec, needle",
    [("bogus:x", "unknown vision-language model 'bogus'"), ("openai:http://127.0.0.1:1/v1", "openai:BASE_URL#MODEL")],
)
def test_bad_llm_specs_are_one_line_errors(cli, spec: str, needle: str) -> None:
    code, out, err = cli("ask", QUESTION, "--index", "notes", "--llm", spec)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
