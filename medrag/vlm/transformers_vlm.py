"""Vision-language models through transformers: AutoModelForImageTextToText + AutoProcessor.

Loads from a local folder (or a packaged / cached model; the hub only when
allowed), lazily on first use, on the device chosen once (``auto``). Greedy
decoding by default, so the same image and question give the same answer.
Generation options and token counting are shared with TransformersLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medrag.errors import InputError, require
from medrag.vlm.base import Message, message_text
from medrag.vlm.gguf_llm import TransformersLLM, check_loading_info

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def processor_messages(messages: list[Message], n_images: int) -> list[dict[str, Any]]:
    """OpenAI-style messages -> the processor's chat format, images placed in the last user message."""
    out: list[dict[str, Any]] = [{"role": m["role"], "content": [{"type": "text", "text": message_text(m)}]} for m in messages]
    if n_images:
        users = [i for i, m in enumerate(out) if m["role"] == "user"]
        if not users:
            raise InputError("images need a user message to belong to")
        out[users[-1]]["content"] = [{"type": "image"} for _ in range(n_images)] + out[users[-1]]["content"]
    return out


class TransformersVLM(TransformersLLM):
    """A VisionLanguageModel: images (PIL) and chat messages in, text out."""

    kind = "vision-language model"
    _images_supported = True

    def __init__(self, location: str | Path, *, dtype: str = "auto", repetition_penalty: float = 1.1, **kwargs: Any) -> None:
        super().__init__(location, repetition_penalty=repetition_penalty, **kwargs)
        if dtype != "auto" and dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; use auto or one of {sorted(set(DTYPES.values()))}")
        self.dtype = dtype

    def _torch_dtype(self, device: str):
        import torch

        if self.dtype != "auto":
            return getattr(torch, DTYPES[self.dtype])
        if device == "cuda":  # half precision where the hardware is made for it; float32 on CPU
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device == "mps" else torch.float32

    def _load(self, device: str):
        transformers = require("transformers", extra="llm", purpose="Vision-language models")
        processor = transformers.AutoProcessor.from_pretrained(str(self.location), local_files_only=True)
        model, info = transformers.AutoModelForImageTextToText.from_pretrained(
            str(self.location), local_files_only=True, dtype=self._torch_dtype(device), output_loading_info=True
        )
        check_loading_info(model, info, self)
        return processor, model

    @property
    def _text_tokenizer(self):
        return getattr(self._tokenizer, "tokenizer", self._tokenizer)

    def _encode(self, messages: list[Message], images: Sequence[Any]):
        pictures = []
        for image in images:
            if not hasattr(image, "convert"):
                raise InputError(f"images must be PIL images, got {type(image).__name__}")
            pictures.append(image.convert("RGB"))
        prompt = self._tokenizer.apply_chat_template(
            processor_messages(messages, len(pictures)), tokenize=False, add_generation_prompt=True
        )
        # The chat template already holds the special tokens; adding them again would double the BOS.
        inputs = self._tokenizer(text=[prompt], images=pictures or None, return_tensors="pt", add_special_tokens=False)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs
