"""The language-model role: one protocol for text LLMs and vision-language models.

Messages are OpenAI-style dicts ``{"role": ..., "content": ...}``; images are
PIL images that belong to the last user message. Every backend (local GGUF,
transformers, an OpenAI-compatible server, the scripted fake) implements it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

from medrag.errors import InputError

Message = dict[str, Any]
ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass
class Generation:
    """One completed reply and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # stop | length | error
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class VisionLanguageModel(Protocol):
    name: str

    def generate(self, messages: Sequence[Message], images: Sequence[Any] = (), **options: Any) -> Generation: ...

    def stream(self, messages: Sequence[Message], images: Sequence[Any] = (), **options: Any) -> Iterator[str]: ...


def check_messages(messages: Sequence[Message]) -> list[Message]:
    """Validate chat messages early, with an error that says what is wrong."""
    if isinstance(messages, (str, bytes)) or not messages:
        raise InputError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InputError(f"message {i} must be a dict with 'role' and 'content'")
        if message["role"] not in ROLES:
            raise InputError(f"message {i} has unknown role {message['role']!r}; use one of {sorted(ROLES)}")
        out.append(dict(message))
    return out


def message_text(message: Message) -> str:
    """The text of a message whose content is a string or a list of OpenAI content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    return ""
