"""Planning: split the question into sub-questions and choose the tools for each.

The rule planner needs no model: it splits on question marks, on "and how/what
…" and on aspect lists ("the causes, signs and treatment of X"), carries the
topic into sub-questions that only say "it", and gives every sub-question to
every search tool, a knowledge-graph query chosen by cue words (define, a
differential from phenotypes, a path between two concepts), and each image to
the image tools whose declared modalities match it. The LLM planner asks a
model only for the split and falls back to the rules when the model fails or
answers something unusable; tool choice stays with the rules, so a small
model cannot send an image to the wrong tool.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import yaml

from medrag.agent.state import ImageInput, SubQuestion, ToolCall
from medrag.agent.toolbox import Toolbox

log = logging.getLogger(__name__)

MAX_SUB_QUESTIONS = 4

_WH = r"(?:what|which|how|why|where|when|who|whom|whose|is|are|does|do|can|could|should|would|will|was|were|list|describe|explain|name)"
# "... and how is it treated" / "...; what causes it" start a new sub-question.
_CLAUSE_SPLIT = re.compile(rf"\s*(?:;|,?\s+(?:and|also|then)\s+(?={_WH}\b))\s*", re.IGNORECASE)
# "What are the causes, signs and treatment of X?" -> one sub-question per aspect.
_ASPECTS = re.compile(
    r"^(?P<lead>(?:what|which)\s+(?:are|is)\s+(?:the\s+)?|(?:list|describe|explain|give)\s+(?:the\s+)?)"
    r"(?P<aspects>[a-z][a-z \-]*?(?:\s*,\s*[a-z][a-z \-]*?)*\s*,?\s+and\s+[a-z][a-z \-]*?)"
    r"\s+(?P<link>of|for|in)\s+(?P<topic>.+?)\??$",
    re.IGNORECASE,
)
_ASKS = re.compile(r"(?:what|which|how|why|where|when|who|whom|whose|is|are|does|do|can|could|should|would|will|was|were)\b", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(it|its|this|that|they|them|their|these|those)\b", re.IGNORECASE)
_IMAGE_WORDS = re.compile(
    r"\b(image|images|picture|photo|x-?ray|radiograph|film|scan|ct|mri|mr|dicom|shown|seen|visible|this (?:lesion|finding|opacity|mass))\b",
    re.IGNORECASE,
)
_DIFFERENTIAL = re.compile(r"\b(differential|diagnos\w*|which (?:disease|condition|syndrome)s?|what (?:disease|condition|syndrome)s?)\b", re.IGNORECASE)
_RELATION = re.compile(
    r"\b(?:relation(?:ship)?|link|connection|association)\s+between\s+(?P<a>.+?)\s+and\s+(?P<b>.+?)(?:\?|$)"
    r"|\bhow\s+(?:is|are)\s+(?P<c>.+?)\s+(?:related|linked|connected)\s+to\s+(?P<d>.+?)(?:\?|$)",
    re.IGNORECASE,
)
_STOP = frozenset(
    "a an the of in on for to and or with by from at as is are was were be been being do does did what which how why where "
    "when who whom whose can could should would will it its this that these those they them their there here about into "
    "list describe explain name give me tell please also then".split()
)


@dataclass
class Plan:
    sub_questions: list[SubQuestion]
    calls: list[ToolCall]
    planner: str  # "rules" or "llm"
    notes: list[str] = field(default_factory=list)  # e.g. why the LLM plan was not used


class Planner(Protocol):
    name: str

    def plan(
        self, question: str, images: Sequence[ImageInput], toolbox: Toolbox, *, where: dict[str, Any] | None = None, context: str = ""
    ) -> Plan: ...


def topic_words(text: str) -> str:
    """The content words of a question, in order: what a follow-up's "it" refers to."""
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9'\-]*", text)
    return " ".join(w for w in words if w.lower() not in _STOP)


def split_question(question: str) -> list[str]:
    """Sub-question texts, in the order asked (the question itself when it has one part)."""
    parts: list[str] = []
    for sentence in re.split(r"(?<=\?)\s+", question.strip()):
        for clause in _CLAUSE_SPLIT.split(sentence):
            clause = clause.strip(" ,")
            if sentence.endswith("?") and not clause.endswith("?") and _ASKS.match(clause):
                clause += "?"
            if len(clause.split()) < 2:
                if parts and clause:
                    parts[-1] = f"{parts[-1]} {clause}"
                continue
            match = _ASPECTS.match(clause)
            if match:
                aspects = [a.strip() for a in re.split(r"\s*,\s*|\s+and\s+", match["aspects"]) if a.strip()]
                if len(aspects) >= 2 and all(len(a.split()) <= 3 for a in aspects):
                    lead = match["lead"].strip()
                    parts.extend(f"{lead} {a} {match['link']} {match['topic']}?" for a in aspects)
                    continue
            parts.append(clause)
    return parts[:MAX_SUB_QUESTIONS] or [question]


def make_sub_questions(texts: Sequence[str], *, has_images: bool, context: str = "") -> list[SubQuestion]:
    """Carry the topic into sub-questions that only say "it"/"this".

    The topic is the first sub-question's content words, or, in a conversation,
    ``context`` (the previous question's) for a follow-up that is short or says "it".
    """
    subs: list[SubQuestion] = []
    topic = topic_words(texts[0]) if texts else ""
    for i, text in enumerate(texts):
        query = text
        refers = bool(_PRONOUN.search(text))
        if i == 0 and context and (refers or len(text.split()) <= 4):
            query = f"{text} ({context})"
        elif i > 0 and refers and topic:
            query = f"{text} ({topic})"
        subs.append(SubQuestion(text=text, query=query, needs_image=has_images and bool(_IMAGE_WORDS.search(text))))
    if has_images and not any(s.needs_image for s in subs):
        subs[0].needs_image = True  # the image goes with the question's first part
    return subs


def graph_call(tool_name: str, sub: SubQuestion, index: int) -> ToolCall:
    """The knowledge-graph query a sub-question calls for, by its cue words."""
    relation = _RELATION.search(sub.text)
    if relation:
        a = relation["a"] or relation["c"]
        b = relation["b"] or relation["d"]
        return ToolCall(tool_name, {"operation": "path", "text": a.strip(), "target": b.strip()}, index, "asks how two concepts relate")
    if _DIFFERENTIAL.search(sub.text):
        return ToolCall(tool_name, {"operation": "diseases", "text": sub.query, "k": 5}, index, "asks for a diagnosis: rank diseases by the phenotypes named")
    return ToolCall(tool_name, {"operation": "define", "text": sub.query, "k": 3}, index, "defines the concepts named")


def tool_calls(
    sub_questions: Sequence[SubQuestion], images: Sequence[ImageInput], toolbox: Toolbox, *, where: dict[str, Any] | None = None
) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for i, sub in enumerate(sub_questions):
        for tool in toolbox.search_tools():
            inputs: dict[str, Any] = {"query": sub.query}
            if where and "where" in tool.inputs:
                inputs["where"] = where
            calls.append(ToolCall(tool.name, inputs, i, "search for the sub-question"))
        for tool in toolbox.graph_tools()[:1]:
            calls.append(graph_call(tool.name, sub, i))
    image_sub = next((i for i, s in enumerate(sub_questions) if s.needs_image), 0)
    for image in images:
        for tool in toolbox.image_tools(image.modality):
            inputs = {"image": image.path}
            if "modality" in tool.inputs and image.modality != "unknown":  # unknown: the tool may route it itself
                inputs["modality"] = image.modality
            calls.append(ToolCall(tool.name, inputs, image_sub, f"{image.modality} image: {tool.name} accepts it"))
    return calls


class RulePlanner:
    """Deterministic planning from the question's wording, the images' modalities and the tools declared."""

    name = "rules"

    def plan(
        self, question: str, images: Sequence[ImageInput], toolbox: Toolbox, *, where: dict[str, Any] | None = None, context: str = ""
    ) -> Plan:
        subs = make_sub_questions(split_question(question), has_images=bool(images), context=context)
        return Plan(subs, tool_calls(subs, images, toolbox, where=where), self.name)


def _prompt() -> dict[str, str]:
    text = resources.files("medrag.agent").joinpath("prompts/plan.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


class LLMPlanner:
    """Asks a language model to split the question; the rules choose the tools.

    Anything unusable (an error, no JSON, more parts than allowed, parts that
    are not questions about the original) falls back to the rule planner, and
    the plan says so in its notes.
    """

    name = "llm"

    def __init__(self, model, *, fallback: RulePlanner | None = None, max_new_tokens: int = 160) -> None:
        self.model = model
        self.fallback = fallback or RulePlanner()
        self.max_new_tokens = max_new_tokens
        self.prompt = _prompt()

    def plan(
        self, question: str, images: Sequence[ImageInput], toolbox: Toolbox, *, where: dict[str, Any] | None = None, context: str = ""
    ) -> Plan:
        try:
            texts = self._split(question)
        except Exception as exc:  # noqa: BLE001 - any model failure means: plan by the rules
            plan = self.fallback.plan(question, images, toolbox, where=where, context=context)
            plan.notes.append(f"LLM planner failed ({type(exc).__name__}: {exc}); used the rule planner")
            return plan
        subs = make_sub_questions(texts, has_images=bool(images), context=context)
        return Plan(subs, tool_calls(subs, images, toolbox, where=where), self.name)

    def _split(self, question: str) -> list[str]:
        messages = [
            {"role": "system", "content": self.prompt["system"]},
            {"role": "user", "content": self.prompt["user"].format(question=question, max_parts=MAX_SUB_QUESTIONS)},
        ]
        reply = self.model.generate(messages, max_new_tokens=self.max_new_tokens, temperature=0.0)
        text = getattr(reply, "text", reply)
        match = re.search(r"\[.*\]", text, re.DOTALL)
        if not match:
            raise ValueError(f"no JSON list in the model's reply {text[:120]!r}")
        parts = json.loads(match.group(0))
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) and p.strip() for p in parts):
            raise ValueError("the model's list is empty or holds non-text items")
        if len(parts) > MAX_SUB_QUESTIONS:
            raise ValueError(f"the model split the question into {len(parts)} parts (at most {MAX_SUB_QUESTIONS})")
        asked = set(topic_words(question).lower().split())
        for part in parts:  # each part must be about the question, not something the model made up
            if asked and not asked & set(topic_words(part).lower().split()):
                raise ValueError(f"sub-question {part!r} shares no content word with the question")
        return [p.strip() for p in parts]
