"""Fakes of the language-model role: a scripted LLM and a local OpenAI-compatible server.

``ScriptedLLM`` answers with scripted replies in order and records every
prompt, so composers and agents are tested without weights.
``FakeOpenAIServer`` is a real HTTP server on 127.0.0.1 (real sockets, real
JSON, server-sent events) that speaks /v1/chat/completions and can be told to
fail, so HTTP clients are tested without a model server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from medrag.errors import ModelUnavailable
from medrag.vlm.base import Generation, Message, check_messages, message_text


class ScriptedLLM:
    """A VisionLanguageModel that returns ``replies`` in order.

    A reply that is an exception is raised instead of returned (to test
    fallbacks). ``calls`` records (messages, images, options) of every call.
    """

    def __init__(self, replies: Sequence[str | BaseException], *, name: str = "scripted", repeat_last: bool = False) -> None:
        self.replies = list(replies)
        self.name = name
        self.repeat_last = repeat_last
        self.calls: list[tuple[list[Message], tuple[Any, ...], dict[str, Any]]] = []

    @property
    def prompts(self) -> list[list[Message]]:
        return [messages for messages, _, _ in self.calls]

    def setup(self) -> None:
        return None

    def _next(self) -> str | BaseException:
        if not self.replies:
            raise ModelUnavailable(f"ScriptedLLM has no reply left after {len(self.calls) - 1} replies")
        if self.repeat_last and len(self.replies) == 1:
            return self.replies[0]
        return self.replies.pop(0)

    def generate(self, messages: Sequence[Message], images: Sequence[Any] = (), **options: Any) -> Generation:
        messages = check_messages(messages)
        self.calls.append((messages, tuple(images), dict(options)))
        reply = self._next()
        if isinstance(reply, BaseException):
            raise reply
        prompt_words = sum(len(message_text(m).split()) for m in messages)
        words = reply.split(" ")
        limit = options.get("max_new_tokens", options.get("max_tokens"))
        if limit is not None and len(reply.split()) > limit:  # one word is one "token" here
            return Generation(" ".join(words[:limit]), prompt_words, limit, "length", self.name)
        return Generation(reply, prompt_words, len(reply.split()), "stop", self.name)

    def stream(self, messages: Sequence[Message], images: Sequence[Any] = (), **options: Any) -> Iterator[str]:
        text = self.generate(messages, images, **options).text
        for i, word in enumerate(text.split(" ")):
            yield word if i == 0 else " " + word


Reply = str | Callable[[dict[str, Any]], str]


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on a free port of 127.0.0.1, for tests.

    >>> with FakeOpenAIServer("hello") as server:          # doctest: +SKIP
    ...     OpenAICompatLLM(server.base_url, "fake").generate([{"role": "user", "content": "hi"}]).text
    'hello'

    ``reply`` is a string or a function of the request's JSON. Failure modes:
    ``fail_with`` queues (status, body) answers sent before normal ones;
    ``raw_body`` replaces the answer with raw bytes (garbage JSON); ``delay``
    sleeps before answering; ``max_body_bytes`` answers 413 to larger requests
    (a server refusing a big image); ``drop_connections`` hangs up that many
    times without answering (a server that crashed mid-request).
    ``requests`` and ``headers`` record what arrived.
    """

    def __init__(self, reply: Reply = "OK.", *, model: str = "fake-model") -> None:
        self.reply = reply
        self.model = model
        self.fail_with: list[tuple[int, str]] = []
        self.raw_body: bytes | None = None
        self.delay = 0.0
        self.max_body_bytes: int | None = None
        self.drop_connections = 0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAIServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                owner._handle(self)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # Timeout tests hang up on purpose; a write to that closed socket is expected.
                import sys

                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval makes shutdown() (every test teardown) quick.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- answering ---------------------------------------------------------
    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        raw = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        self.headers.append(dict(http.headers.items()))
        if self.drop_connections > 0:
            self.drop_connections -= 1
            http.close_connection = True
            return  # no status line: the client sees the connection closed
        if self.max_body_bytes is not None and len(raw) > self.max_body_bytes:
            return self._send(http, 413, json.dumps({"error": {"message": f"request of {len(raw)} bytes is too large"}}).encode())
        if http.path.rstrip("/") != "/v1/chat/completions":
            return self._send(http, 404, json.dumps({"error": {"message": f"no route {http.path}"}}).encode())
        try:
            request = json.loads(raw)
        except json.JSONDecodeError:
            return self._send(http, 400, b'{"error": {"message": "invalid JSON"}}')
        self.requests.append(request)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_with:
            status, body = self.fail_with.pop(0)
            return self._send(http, status, body.encode())
        if self.raw_body is not None:
            return self._send(http, 200, self.raw_body)
        try:
            text = self.reply(request) if callable(self.reply) else self.reply
        except Exception as exc:  # a broken reply function is a visible server error, not a hang-up
            message = f"reply function raised {type(exc).__name__}: {exc}"
            return self._send(http, 500, json.dumps({"error": {"message": message}}).encode())
        finish = "stop"
        limit = request.get("max_tokens")
        if isinstance(limit, int) and len(text.split()) > limit:  # one word is one "token" here
            text, finish = " ".join(text.split(" ")[:limit]), "length"
        if request.get("stream"):
            return self._stream(http, text)
        body = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": sum(len(message_text(m).split()) for m in request.get("messages", [])),
                "completion_tokens": len(text.split()),
            },
        }
        self._send(http, 200, json.dumps(body).encode())

    @staticmethod
    def _send(http: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(body)))
        http.end_headers()
        http.wfile.write(body)

    def _stream(self, http: BaseHTTPRequestHandler, text: str) -> None:
        http.send_response(200)
        http.send_header("Content-Type", "text/event-stream")
        http.end_headers()  # HTTP/1.0: the stream ends when the connection closes
        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        http.wfile.write(b": keep-alive comment\n\n")
        for piece in pieces:
            event = {"object": "chat.completion.chunk", "model": self.model,
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            http.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            http.wfile.flush()
        http.wfile.write(b"data: [DONE]\n\n")
        http.wfile.flush()


class VisionLanguageModelConformance:
    """Checks every VisionLanguageModel passes; a test class inherits it and defines make_model().

    make_model() returns a model that answers any number of calls deterministically
    (greedy decoding, a scripted reply, a fake server).
    """

    supports_images = False
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "what is the pacemaker of the heart"}]

    def make_model(self):  # pragma: no cover - provided by the test class
        raise NotImplementedError

    def test_is_a_vision_language_model(self) -> None:
        from medrag.vlm.base import VisionLanguageModel

        model = self.make_model()
        assert isinstance(model, VisionLanguageModel)
        assert isinstance(model.name, str) and model.name

    def test_generate_returns_a_generation(self) -> None:
        gen = self.make_model().generate(self.messages, max_new_tokens=4)
        assert isinstance(gen, Generation)
        assert isinstance(gen.text, str) and isinstance(gen.model, str)
        assert gen.prompt_tokens >= 0 and 0 <= gen.completion_tokens <= 4
        assert gen.finish_reason in {"stop", "length"}

    def test_generation_is_deterministic(self) -> None:
        model = self.make_model()
        assert model.generate(self.messages, max_new_tokens=4) == model.generate(self.messages, max_new_tokens=4)

    def test_stream_yields_the_generated_text(self) -> None:
        model = self.make_model()
        pieces = list(model.stream(self.messages, max_new_tokens=4))
        assert all(isinstance(p, str) for p in pieces)
        assert "".join(pieces).strip() == model.generate(self.messages, max_new_tokens=4).text

    def test_bad_messages_are_input_errors(self) -> None:
        import pytest

        from medrag.errors import InputError

        model = self.make_model()
        for bad in ([], [{"content": "no role"}], [{"role": "robot", "content": "x"}]):
            with pytest.raises(InputError):
                model.generate(bad)

    def test_images(self) -> None:
        import pytest
        from PIL import Image

        from medrag.errors import InputError

        model = self.make_model()
        image = Image.new("RGB", (32, 32), (90, 90, 90))
        if self.supports_images:
            assert isinstance(model.generate(self.messages, images=[image], max_new_tokens=3), Generation)
        else:
            with pytest.raises(InputError):
                model.generate(self.messages, images=[image])


TINY_WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>", "system", "user", "assistant"] + (
    "the heart bone node is a of pacemaker sinoatrial what be brief".split()
)
TINY_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def build_tiny_chat_llm(folder, *, words: Sequence[str] = TINY_WORDS, max_positions: int = 64, seed: int = 0):
    """Save a random-initialised one-layer Llama with a word-level tokenizer and chat template in ``folder``.

    A real architecture loaded through the public path (AutoTokenizer / AutoModelForCausalLM),
    small enough to build in a test; its answers are noise, deterministic for a seed.
    """
    from pathlib import Path

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = list(words)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|im_start|>")
    fast.chat_template = TINY_TEMPLATE
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
