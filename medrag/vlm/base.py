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
# Larger images are refused before they reach a model (as medrag.vision's loader refuses them).
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
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


def check_images(images: Sequence[Any], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Refuse images a model should not be sent: not PIL images, or more pixels than ``max_pixels``."""
    for i, image in enumerate(images):
        size = getattr(image, "size", None)
        if not (isinstance(size, tuple) and len(size) == 2 and hasattr(image, "convert")):
            raise InputError(f"images must be PIL images, got {type(image).__name__}")
        width, height = size
        if width * height > max_pixels:
            raise InputError(
                f"image {i + 1} is {width}x{height} = {width * height} pixels, more than this model accepts "
                f"({max_pixels}); resize or crop it (zoom_region), or raise max_image_pixels"
            )
