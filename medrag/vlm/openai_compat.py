"""Client for OpenAI-compatible chat servers (vLLM, Ollama, llama.cpp server, LM Studio).

Standard library only (urllib): no extra to install. Images travel as data
URLs in the last user message's content parts. Connection errors, 429 and 5xx
are retried with exponential backoff; everything else becomes a
ModelUnavailable that names the URL, the status and a short excerpt of the
reply. The API key goes in the Authorization header and nowhere else (not in
logs, reprs or error messages).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from medrag.errors import InputError, ModelUnavailable
from medrag.vlm.base import DEFAULT_MAX_IMAGE_PIXELS, Generation, Message, check_images, check_messages

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"localhost", "::1"})
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
HINTS = {
    401: " (check the API key in MEDRAG_OPENAI_API_KEY)",
    403: " (check the API key in MEDRAG_OPENAI_API_KEY)",
    404: " (check the base URL and the model name)",
    413: " (the request is too large for the server: send a smaller image, fewer images or less evidence)",
}
# Options passed through under the OpenAI name; max_new_tokens is accepted as the local backends' name.
OPTION_NAMES = {
    "max_new_tokens": "max_tokens", "max_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
    "stop": "stop", "seed": "seed", "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
}


def chat_url(base_url: str) -> str:
    """The chat-completions endpoint of a base URL given with or without /v1."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"base URL must start with http:// or https://, got {base_url!r}")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def image_data_url(image: Any) -> str:
    """A PIL image as a PNG data URL (lossless: medical images should not gain JPEG artefacts)."""
    if not hasattr(image, "save"):
        raise InputError(f"images must be PIL images, got {type(image).__name__}")
    if image.mode not in ("RGB", "L", "RGBA"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def with_images(messages: list[Message], images: Sequence[Any]) -> list[Message]:
    """Attach images to the last user message as image_url content parts."""
    if not images:
        return messages
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            content = messages[i]["content"]
            parts = list(content) if isinstance(content, list) else [{"type": "text", "text": str(content)}]
            parts += [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in images]
            messages[i] = {**messages[i], "content": parts}
            return messages
    raise InputError("images need a user message to belong to")


def _excerpt(body: bytes | str, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


class OpenAICompatLLM:
    """A VisionLanguageModel served over HTTP with the OpenAI chat-completions API."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        temperature: float = 0.0,
        max_tokens: int = 512,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if not model:
            raise InputError("an OpenAI-compatible model needs a model name (openai:BASE_URL#MODEL)")
        self.url = chat_url(base_url)
        self.model = model
        self.name = model
        self._api_key = api_key  # private: never logged or shown in repr
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.defaults = {"temperature": temperature, "max_tokens": max_tokens}
        self.max_image_pixels = max_image_pixels
        host = (urllib.parse.urlsplit(self.url).hostname or "").lower()
        # A server on this machine is never reached through a proxy from the environment.
        handlers = [urllib.request.ProxyHandler({})] if host in LOOPBACK or host.startswith("127.") else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"OpenAICompatLLM(url={self.url!r}, model={self.model!r}, api_key={'set' if self._api_key else 'unset'})"

    def setup(self) -> None:
        """Nothing to load: the server holds the weights."""

    # -- requests ----------------------------------------------------------
    def _payload(self, messages: Sequence[Message], images: Sequence[Any], options: dict[str, Any], stream: bool) -> bytes:
        unknown = set(options) - set(OPTION_NAMES)
        if unknown:
            raise InputError(f"unknown generation options: {', '.join(sorted(unknown))}")
        messages = check_messages(messages)
        check_images(images, self.max_image_pixels)
        body: dict[str, Any] = {"model": self.model, "messages": with_images(messages, images), **self.defaults}
        for key, value in options.items():
            if value is not None:
                body[OPTION_NAMES[key]] = value
        if stream:
            body["stream"] = True
        return json.dumps(body).encode("utf-8")

    def _open(self, payload: bytes, *, stream: bool):
        """POST with retries; returns the open response of a 2xx answer."""
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempt = 0
        while True:
            request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
            try:
                return self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                body = exc.read()
                status = exc.code
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                exc.close()
                if status in RETRY_STATUS and attempt < self.max_retries:
                    delay = self._delay(attempt, retry_after)
                    log.warning("%s answered HTTP %s; retrying in %.1f s", self.url, status, delay)
                else:
                    hint = HINTS.get(status, "")
                    excerpt = _excerpt(body)
                    if self._api_key:  # a server that echoes the request must not leak the key into logs
                        excerpt = excerpt.replace(self._api_key, "***")
                    raise ModelUnavailable(f"{self.url} answered HTTP {status}{hint}: {excerpt}") from None
            except (TimeoutError, socket.timeout) as exc:
                # A slow server is not retried: retries would multiply the wait the user already had.
                raise ModelUnavailable(f"{self.url} did not answer within {self.timeout:g} s; raise the timeout or check the server") from exc
            except (urllib.error.URLError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, (TimeoutError, socket.timeout)):
                    raise ModelUnavailable(f"{self.url} did not answer within {self.timeout:g} s; raise the timeout or check the server") from exc
                if attempt >= self.max_retries:
                    raise ModelUnavailable(
                        f"cannot reach {self.url} ({reason}) after {attempt + 1} attempts: is the server running at that address?"
                    ) from exc
                delay = self._delay(attempt, None)
                log.warning("cannot reach %s (%s); retrying in %.1f s", self.url, reason, delay)
            time.sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff * (2**attempt)
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.max_backoff)

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelUnavailable(f"{self.url} answered with invalid JSON: {_excerpt(raw)}") from None
        if not isinstance(data, dict):
            raise ModelUnavailable(f"{self.url} answered with unexpected JSON: {_excerpt(raw)}")
        if "error" in data and "choices" not in data:
            raise ModelUnavailable(f"{self.url} answered with an error: {_excerpt(json.dumps(data['error']))}")
        return data

    # -- protocol ----------------------------------------------------------
    def generate(self, messages: Sequence[Message], images: Sequence[Any] = (), **options: Any) -> Generation:
        payload = self._payload(messages, images, options, stream=False)
        log.debug("POST %s model=%s", self.url, self.model)
        try:
            with self._open(payload, stream=False) as response:
                raw = response.read()
        except (TimeoutError, socket.timeout) as exc:  # the body itself came too slowly
            raise ModelUnavailable(f"{self.url} did not finish its answer within {self.timeout:g} s") from exc
        data = self._json(raw)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ModelUnavailable(f"{self.url} answered without choices[0].message: {_excerpt(raw)}") from None
        usage = data.get("usage") or {}
        return Generation(
            text=text.strip(),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason") or "stop",
            model=data.get("model") or self.model,
        )

    def stream(self, messages: Sequence[Message], images: Sequence[Any] = (), **options: Any) -> Iterator[str]:
        """Yield text pieces as the server sends them (server-sent events, ending with [DONE])."""
        payload = self._payload(messages, images, options, stream=True)
        response = self._open(payload, stream=True)
        try:
            for raw_line in response:
                line = raw_line.decode("utf-8", "replace").strip()
                if not line or line.startswith(":") or not line.startswith("data:"):
                    continue  # blank separators, SSE comments, event/id fields
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                event = self._json(data.encode("utf-8"))
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
        except (TimeoutError, socket.timeout) as exc:
            raise ModelUnavailable(f"{self.url} stopped streaming for more than {self.timeout:g} s") from exc
        finally:
            response.close()
