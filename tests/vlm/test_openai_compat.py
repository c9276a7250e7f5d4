"""The OpenAI-compatible client against a real local HTTP server (medrag.testing.fake_llm)."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import time

import pytest
from PIL import Image

from medrag.errors import InputError, ModelUnavailable
from medrag.testing.fake_llm import FakeOpenAIServer, VisionLanguageModelConformance
from medrag.vlm.base import Generation, VisionLanguageModel
from medrag.vlm.openai_compat import OpenAICompatLLM, chat_url

HELLO = [{"role": "user", "content": "What is the pacemaker of the heart?"}]


@pytest.fixture
def server():
    with FakeOpenAIServer("The sinoatrial node is the pacemaker [1].") as srv:
        yield srv


def client(server: FakeOpenAIServer, **kwargs) -> OpenAICompatLLM:
    kwargs.setdefault("backoff", 0.01)
    return OpenAICompatLLM(server.base_url, "fake-model", **kwargs)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_generate_returns_text_tokens_and_model(server) -> None:
    llm = client(server)
    assert isinstance(llm, VisionLanguageModel)
    gen = llm.generate(HELLO, max_new_tokens=32)
    assert isinstance(gen, Generation)
    assert gen.text == "The sinoatrial node is the pacemaker [1]."
    assert (gen.prompt_tokens, gen.completion_tokens, gen.finish_reason, gen.model) == (7, 7, "stop", "fake-model")
    sent = server.requests[0]
    assert sent["model"] == "fake-model" and sent["messages"] == HELLO
    assert sent["max_tokens"] == 32 and sent["temperature"] == 0.0 and "stream" not in sent


@pytest.mark.parametrize(
    "base, url",
    [
        ("http://h:1/v1", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1/", "http://h:1/v1/chat/completions"),
        ("http://h:1", "http://h:1/v1/chat/completions"),
        ("https://h/api/v1/chat/completions", "https://h/api/v1/chat/completions"),
    ],
)
def test_chat_url(base: str, url: str) -> None:
    assert chat_url(base) == url


def test_bad_base_url_and_options_are_input_errors(server) -> None:
    with pytest.raises(InputError, match="http://"):
        OpenAICompatLLM("localhost:8000", "m")
    with pytest.raises(InputError, match="unknown generation options: bogus"):
        client(server).generate(HELLO, bogus=1)
    with pytest.raises(InputError, match="role"):
        client(server).generate([{"content": "no role"}])


def test_images_travel_as_png_data_urls_in_the_last_user_message(server) -> None:
    image = Image.new("RGB", (8, 6), (200, 10, 10))
    messages = [{"role": "system", "content": "Describe."}, *HELLO]
    client(server).generate(messages, images=[image])
    sent = server.requests[0]["messages"]
    assert sent[0] == messages[0]
    parts = sent[1]["content"]
    assert parts[0] == {"type": "text", "text": HELLO[0]["content"]}
    url = parts[1]["image_url"]["url"]
    assert parts[1]["type"] == "image_url" and url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (8, 6) and decoded.getpixel((0, 0)) == (200, 10, 10)


def test_streaming_yields_pieces_until_done(server) -> None:
    pieces = list(client(server).stream(HELLO))
    assert len(pieces) == 7
    assert "".join(pieces) == "The sinoatrial node is the pacemaker [1]."
    assert server.requests[0]["stream"] is True


def test_api_key_is_sent_but_never_shown(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    llm = client(server, api_key="sk-secret-123")
    llm.generate(HELLO)
    assert server.headers[0]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in repr(llm) and "sk-secret" not in caplog.text
    server.fail_with = [(401, '{"error": {"message": "invalid api key"}}')]
    with pytest.raises(ModelUnavailable) as info:
        llm.generate(HELLO)
    assert "sk-secret" not in str(info.value)


def test_no_key_means_no_authorization_header(server) -> None:
    client(server).generate(HELLO)
    assert "Authorization" not in server.headers[0]


def test_server_errors_are_retried_with_backoff(server, caplog) -> None:
    server.fail_with = [(500, "boom"), (503, "busy")]
    gen = client(server, max_retries=3).generate(HELLO)
    assert gen.text.startswith("The sinoatrial node")
    assert len(server.requests) == 3
    assert "HTTP 500" in caplog.text and "HTTP 503" in caplog.text


def test_rate_limit_is_retried(server) -> None:
    server.fail_with = [(429, "slow down")]
    assert client(server).generate(HELLO).text
    assert len(server.requests) == 2


def test_retries_give_up_with_the_last_status(server) -> None:
    server.fail_with = [(500, "boom")] * 3
    with pytest.raises(ModelUnavailable, match=r"HTTP 500.*boom"):
        client(server, max_retries=2).generate(HELLO)
    assert len(server.requests) == 3


def test_unauthorized_is_not_retried_and_says_what_to_check(server) -> None:
    server.fail_with = [(401, '{"error": {"message": "invalid api key"}}')]
    with pytest.raises(ModelUnavailable, match=r"HTTP 401 \(check the API key in MEDRAG_OPENAI_API_KEY\).*invalid api key"):
        client(server).generate(HELLO)
    assert len(server.requests) == 1


def test_long_error_bodies_are_cut_short(server) -> None:
    server.fail_with = [(400, "x" * 5000)]
    with pytest.raises(ModelUnavailable) as info:
        client(server).generate(HELLO)
    assert "HTTP 400" in str(info.value) and len(str(info.value)) < 400


def test_invalid_json_is_a_clear_error(server) -> None:
    server.raw_body = b"<html>not json</html>"
    with pytest.raises(ModelUnavailable, match=r"invalid JSON: <html>not json</html>"):
        client(server).generate(HELLO)


def test_json_without_choices_is_a_clear_error(server) -> None:
    server.raw_body = json.dumps({"object": "list", "data": []}).encode()
    with pytest.raises(ModelUnavailable, match="without choices"):
        client(server).generate(HELLO)


def test_a_slow_server_times_out_without_retrying(server) -> None:
    server.delay = 1.0
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable, match=r"did not answer within 0.2 s"):
        client(server, timeout=0.2).generate(HELLO)
    assert time.perf_counter() - started < 0.9
    assert len(server.requests) == 1


def test_refused_connection_is_retried_then_reported() -> None:
    port = closed_port()
    llm = OpenAICompatLLM(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff=0.01)
    with pytest.raises(ModelUnavailable, match=rf"cannot reach http://127.0.0.1:{port}/v1/chat/completions .*after 3 attempts.*server running"):
        llm.generate(HELLO)


def test_streaming_errors_are_model_unavailable(server) -> None:
    server.fail_with = [(404, "no such model")]
    with pytest.raises(ModelUnavailable, match="HTTP 404"):
        list(client(server).stream(HELLO))


class TestOpenAICompatConformance(VisionLanguageModelConformance):
    supports_images = True

    @pytest.fixture(autouse=True)
    def _server(self):
        with FakeOpenAIServer("The sinoatrial node is the pacemaker of the heart.") as srv:
            self.server = srv
            yield

    def make_model(self):
        return OpenAICompatLLM(self.server.base_url, "fake-model", backoff=0.01)


def test_a_server_echoing_the_key_does_not_leak_it(server) -> None:
    server.fail_with = [(400, "bad request: Authorization: Bearer sk-secret-123")]
    with pytest.raises(ModelUnavailable) as info:
        client(server, api_key="sk-secret-123").generate(HELLO)
    assert "sk-secret" not in str(info.value) and "Bearer ***" in str(info.value)


def test_max_tokens_cut_is_reported_as_length(server) -> None:
    gen = client(server).generate(HELLO, max_tokens=3)
    assert (gen.text, gen.completion_tokens, gen.finish_reason) == ("The sinoatrial node", 3, "length")
