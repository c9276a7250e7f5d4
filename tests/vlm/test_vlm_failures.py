"""Bad input to the model backends: clear medrag errors, and composers that fall back instead of failing.

The issue's list: a model path without weights, the wrong architecture, a server that is down,
garbage JSON from the server, an image too large for the model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

from medrag.agent.compose import ExtractiveComposer
from medrag.agent.llm_compose import LLMComposer
from medrag.agent.report import ReportComposer
from medrag.errors import InputError, ModelUnavailable
from medrag.testing.fake_llm import FakeOpenAIServer, build_tiny_chat_llm
from medrag.types import Citation, Evidence
from medrag.vlm import make_llm
from medrag.vlm.gguf_llm import GGUFLLM, TransformersLLM
from medrag.vlm.openai_compat import OpenAICompatLLM
from medrag.vlm.transformers_vlm import TransformersVLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ASK = [{"role": "user", "content": "what is the pacemaker of the heart"}]
HEART = "The sinoatrial node in the wall of the right atrium is the pacemaker of the heart."
EVIDENCE = [Evidence("heart", HEART, Citation("book.pdf", "heart", title="Anatomy", page=2), 0.03, scores={"dense": 0.5})]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_chat_llm(tmp_path_factory.mktemp("tiny-llama"))


def variant(tiny: Path, tmp_path: Path, name: str, **config_changes) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny, folder)
    if config_changes:
        config = json.loads((folder / "config.json").read_text())
        config.update(config_changes)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- model path without weights -----------------------------------------------------------------
def test_a_folder_without_weights(tiny: Path, tmp_path: Path) -> None:
    folder = variant(tiny, tmp_path, "no-weights")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    llm = make_llm(f"transformers:{folder}")  # resolving does not load
    with pytest.raises(ModelUnavailable, match=r"cannot load language model .*no file named model\.safetensors"):
        llm.generate(ASK)


def test_a_gguf_path_that_does_not_exist_or_holds_no_model(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="cannot resolve model"):
        make_llm(f"gguf:{tmp_path / 'missing.gguf'}")
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ModelUnavailable, match="cannot load language model"):
        GGUFLLM(str(tmp_path / "empty.gguf")).generate(ASK)
    (tmp_path / "weightless").mkdir()
    with pytest.raises(ModelUnavailable, match="no .gguf file"):
        make_llm(f"gguf:{tmp_path / 'weightless'}")


# -- wrong architecture ----------------------------------------------------------------------------
def test_a_text_model_is_not_a_vision_language_model(tiny: Path) -> None:
    with pytest.raises(ModelUnavailable, match="cannot load vision-language model.*Unrecognized configuration class"):
        TransformersVLM(tiny).generate(ASK)


def test_an_architecture_transformers_does_not_know(tiny: Path, tmp_path: Path) -> None:
    folder = variant(tiny, tmp_path, "unknown", model_type="no-such-architecture")
    with pytest.raises(ModelUnavailable, match="cannot load language model.*no-such-architecture"):
        TransformersLLM(folder).generate(ASK)


def test_weights_of_another_shape(tiny: Path, tmp_path: Path) -> None:
    folder = variant(tiny, tmp_path, "wider", hidden_size=32, intermediate_size=64)
    with pytest.raises(ModelUnavailable, match=r"cannot load language model .*\(the weights' shapes do not fit config.json\)"):
        TransformersLLM(folder).generate(ASK)


def test_weights_of_another_architecture_are_refused_not_run_at_random(tiny: Path, tmp_path: Path) -> None:
    # transformers would build a BERT, initialise every weight at random and only warn.
    folder = variant(tiny, tmp_path, "bert", model_type="bert", architectures=["BertForMaskedLM"])
    with pytest.raises(ModelUnavailable, match=r"do not match the architecture its config names \(bert\)"):
        TransformersLLM(folder).generate(ASK)


# -- image or prompt too large for the model -------------------------------------------------------
def test_an_image_with_too_many_pixels_is_refused_before_loading() -> None:
    big = Image.new("L", (40, 30))
    vlm = TransformersVLM(Path("/nowhere"), max_image_pixels=1000)
    with pytest.raises(InputError, match=r"image 1 is 40x30 = 1200 pixels, more than this model accepts \(1000\)"):
        vlm.generate(ASK, images=[big])
    assert vlm._model is None


def test_a_prompt_longer_than_the_context_is_an_input_error(tiny: Path) -> None:
    llm = TransformersLLM(tiny, device="cpu")
    long = [{"role": "user", "content": "the heart " * 40}]
    with pytest.raises(InputError, match=r"the prompt is \d+ tokens; .* reads at most 64"):
        llm.generate(long)
    # Near the limit the answer is cut to fit rather than failing.
    near = [{"role": "user", "content": "the heart " * 25}]
    assert llm.generate(near, max_new_tokens=50).completion_tokens <= 64 - 55


def test_a_server_refusing_a_large_image() -> None:
    image = Image.new("RGB", (64, 64), (10, 200, 30))
    with FakeOpenAIServer("ok") as server:
        server.max_body_bytes = 300
        llm = OpenAICompatLLM(server.base_url, "m", backoff=0.01)
        with pytest.raises(ModelUnavailable, match=r"HTTP 413 \(the request is too large .*smaller image"):
            llm.generate(ASK, images=[image])
        with pytest.raises(InputError, match="more than this model accepts"):
            OpenAICompatLLM(server.base_url, "m", max_image_pixels=100).generate(ASK, images=[image])


# -- server down, crashing, or answering garbage ----------------------------------------------------
def test_a_server_that_hangs_up_is_retried() -> None:
    with FakeOpenAIServer("The sinoatrial node [1].") as server:
        server.drop_connections = 1
        assert OpenAICompatLLM(server.base_url, "m", backoff=0.01).generate(ASK).text == "The sinoatrial node [1]."
        assert len(server.headers) == 2
        server.drop_connections = 5
        with pytest.raises(ModelUnavailable, match="after 2 attempts"):
            OpenAICompatLLM(server.base_url, "m", backoff=0.01, max_retries=1).generate(ASK)


@pytest.fixture
def garbage_server():
    with FakeOpenAIServer("unused") as server:
        server.raw_body = b'{"choices": [ {"message": '
        yield server


def failing_models(case: str, tmp_path: Path, tiny: Path, garbage: FakeOpenAIServer):
    if case == "no-weights":
        folder = variant(tiny, tmp_path, "no-weights")
        for weights in folder.glob("*.safetensors"):
            weights.unlink()
        return TransformersLLM(folder), "cannot load language model"
    if case == "wrong-architecture":
        return TransformersLLM(variant(tiny, tmp_path, "bert", model_type="bert")), "do not match the architecture"
    if case == "server-down":
        return OpenAICompatLLM(f"http://127.0.0.1:{closed_port()}/v1", "m", max_retries=1, backoff=0.01), "cannot reach"
    if case == "garbage-json":
        return OpenAICompatLLM(garbage.base_url, "m", backoff=0.01), "invalid JSON"
    raise AssertionError(case)


CASES = ["no-weights", "wrong-architecture", "server-down", "garbage-json"]


@pytest.mark.parametrize("case", CASES)
def test_the_llm_composer_falls_back_with_a_warning(case: str, tmp_path: Path, tiny: Path, garbage_server, caplog) -> None:
    caplog.set_level(logging.WARNING)
    llm, reason = failing_models(case, tmp_path, tiny, garbage_server)
    composer = LLMComposer(llm, ExtractiveComposer())
    draft = composer.compose("What is the pacemaker of the heart?", EVIDENCE)
    assert [(d.text, d.evidence_ids) for d in draft] == [(HEART, ["heart"])]
    assert draft[0].signals["fallback"] == 1.0
    assert composer.last_source == "fallback" and "ModelUnavailable" in composer.last_error and reason in composer.last_error
    assert "fell back to ExtractiveComposer" in caplog.text


@pytest.mark.parametrize("case", CASES)
def test_the_report_composer_falls_back_with_a_warning(case: str, tmp_path: Path, tiny: Path, garbage_server, caplog) -> None:
    caplog.set_level(logging.WARNING)
    llm, reason = failing_models(case, tmp_path, tiny, garbage_server)
    composer = ReportComposer(model=llm)
    report = composer.compose_report("What is the pacemaker of the heart?", EVIDENCE)
    assert report["impression"] and report["impression"][0].evidence_ids == ["heart"]
    assert composer.last_source == "fallback" and reason in composer.last_error
    assert "fell back to the extractive report" in caplog.text
