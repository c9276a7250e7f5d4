"""TransformersVLM with a tiny random LLaVA (CLIP vision tower + Llama) the test builds, saves and loads back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from medrag.errors import InputError, ModelUnavailable
from medrag.testing.fake_llm import VisionLanguageModelConformance
from medrag.vlm import make_llm
from medrag.vlm.base import Generation, VisionLanguageModel
from medrag.vlm.transformers_vlm import TransformersVLM, processor_messages

os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>", "<image>", "system", "user", "assistant"] + (
    "the heart bone node is a of pacemaker what image this show describe".split()
)
TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image> {% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    " <|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
ASK = [{"role": "user", "content": "what does this image show"}]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
        LlavaProcessor, PreTrainedTokenizerFast,
    )

    folder = tmp_path_factory.mktemp("tiny-llava")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(["<image>", "<|im_start|>", "<|im_end|>", "<pad>"])  # the processor repeats <image> without spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|im_start|>")
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    LlavaProcessor(
        image_processor=images, tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
        chat_template=TEMPLATE, image_token="<image>", num_additional_image_tokens=1,
    ).save_pretrained(folder)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14, projection_dim=16),
        text_config=LlamaConfig(
            vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=3,
        ),
        image_token_id=4, vision_feature_layer=-1, vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vlm(tiny_llava: Path) -> TransformersVLM:
    return TransformersVLM(tiny_llava, device="cpu")


class TestTinyLlavaConformance(VisionLanguageModelConformance):
    supports_images = True

    @pytest.fixture(autouse=True)
    def _model(self, vlm: TransformersVLM):
        self.vlm = vlm

    def make_model(self):
        return self.vlm


def xray(shade: int) -> Image.Image:
    image = Image.new("L", (40, 30), shade)
    image.paste(255 - shade, (10, 5, 30, 25))
    return image


def test_spec_picks_the_vlm_for_a_folder_with_an_image_processor(tiny_llava: Path) -> None:
    llm = make_llm(f"transformers:{tiny_llava}")
    assert isinstance(llm, TransformersVLM) and isinstance(llm, VisionLanguageModel)
    assert llm._model is None


def test_answers_about_an_image_deterministically(vlm: TransformersVLM) -> None:
    gen = vlm.generate(ASK, images=[xray(40)], max_new_tokens=5)
    assert isinstance(gen, Generation)
    # <|im_start|> user, 4 image tokens (2x2 patches of 14 px), 5 words, <|im_end|> <|im_start|> assistant
    assert gen.prompt_tokens == 14
    assert 1 <= gen.completion_tokens <= 5 and set(gen.text.split()) <= set(WORDS)
    assert vlm.generate(ASK, images=[xray(40)], max_new_tokens=5) == gen
    assert vlm._device == "cpu" and str(vlm._model.dtype) == "torch.float32"


def test_the_image_reaches_the_model(vlm: TransformersVLM) -> None:
    import torch

    inputs = vlm._encode(ASK, [xray(40)])
    other = vlm._encode(ASK, [xray(200)])
    assert (inputs["input_ids"] == 4).sum() == 4 and torch.equal(inputs["input_ids"], other["input_ids"])
    assert not torch.equal(inputs["pixel_values"], other["pixel_values"])
    with torch.inference_mode():
        a = vlm._model(**inputs).logits[0, -1]
        b = vlm._model(**other).logits[0, -1]
    assert not torch.allclose(a, b)


def test_text_only_questions_and_streaming(vlm: TransformersVLM) -> None:
    text = vlm.generate(ASK, max_new_tokens=4).text
    assert "".join(vlm.stream(ASK, max_new_tokens=4)).strip() == text


def test_bad_images_and_options(vlm: TransformersVLM) -> None:
    with pytest.raises(InputError, match="PIL images"):
        vlm.generate(ASK, images=["not an image"])
    with pytest.raises(InputError, match="unknown dtype"):
        TransformersVLM("/nowhere", dtype="int3")
    with pytest.raises(ModelUnavailable, match="cannot load vision-language model"):
        TransformersVLM(Path("/nowhere")).generate(ASK)


def test_processor_messages_put_images_in_the_last_user_message() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    out = processor_messages(messages, 2)
    assert out[0]["content"] == [{"type": "text", "text": "a"}]
    assert out[2]["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "c"}]
    with pytest.raises(InputError):
        processor_messages([{"role": "system", "content": "x"}], 1)
