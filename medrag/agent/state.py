"""What flows through the agent graph: the state, its reducers, and planned tool calls.

Fields that several nodes (or parallel tool calls) add to use the ``accumulate``
reducer. A new question in a conversation thread starts a new turn: intake
returns ``Reset([...])`` for those fields, which replaces instead of appending,
so nothing of the previous turn leaks in except what ``history`` keeps on purpose.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, TypedDict

from medrag.types import Answer, Evidence, ToolResult, TraceStep


class Reset(list):
    """A list that replaces the accumulated value instead of extending it."""


def accumulate(old: list | None, new: list | None) -> list:
    if isinstance(new, Reset):
        return list(new)
    return list(old or []) + list(new or [])


@dataclass
class ToolCall:
    """One planned call: which tool, with what inputs, for which sub-question, and why."""

    tool: str
    inputs: dict[str, Any]
    sub_question: int | None = None  # index into the plan's sub-questions; None: the whole question
    reason: str = ""

    @property
    def key(self) -> str:
        """Identity of the call, so rethink never repeats one that already ran."""
        payload = json.dumps({"tool": self.tool, "inputs": self.inputs}, sort_keys=True, default=str)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SubQuestion:
    text: str
    query: str  # what search tools are sent: the text, with the topic added when it says "it"/"this"
    needs_image: bool = False


@dataclass
class ImageInput:
    """An image the user gave, as intake found it (the path is what tools load)."""

    path: str
    name: str
    modality: str
    body_part: str | None
    modality_reason: str = ""
    width: int = 0
    height: int = 0


@dataclass
class Turn:
    """What a finished question leaves in its conversation thread."""

    question: str
    answer: str
    abstained: bool
    evidence: list[Evidence] = field(default_factory=list)  # the evidence the answer cited


class AgentState(TypedDict, total=False):
    question: str  # as asked (validated)
    query_text: str  # as sent to tools: de-identified
    context: str  # topic of the thread's previous question, for follow-ups that say "it"
    images: list[ImageInput]
    where: dict[str, Any] | None
    max_rounds: int
    sub_questions: list[SubQuestion]
    pending: list[ToolCall]  # calls to run in the next act step
    done_calls: Annotated[list[str], accumulate]  # keys of calls already run this turn
    round: int
    tool_results: Annotated[list[ToolResult], accumulate]
    evidence: Annotated[list[Evidence], accumulate]
    draft: list[Any]
    answer: Answer
    trace: Annotated[list[TraceStep], accumulate]
    history: Annotated[list[Turn], accumulate]  # earlier turns of this thread (kept across questions)


# Types a conversation checkpoint may hold; the SQLite checkpointer refuses any other.
CHECKPOINT_TYPES = [
    ("medrag.types", name)
    for name in ("Answer", "AnswerSentence", "Citation", "Evidence", "ToolResult", "TraceStep")
] + [
    ("medrag.agent.state", name) for name in ("Reset", "ToolCall", "SubQuestion", "ImageInput", "Turn")
] + [("medrag.agent.compose", "DraftSentence")]
