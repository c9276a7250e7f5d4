"""Answer composer that lets a language model phrase the answer from numbered evidence.

The model sees the evidence as quoted, numbered data and must cite ``[n]``
after every sentence. Its output is parsed back into DraftSentence objects;
citations to passages that do not exist are removed and sentences left
without a valid citation are dropped. When the model fails or nothing valid
survives, the extractive composer answers instead. The verifier checks every
sentence against its cited evidence either way: the model may rephrase and
connect evidence, never be the source of a claim.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from medrag.agent.compose import Composer, DraftSentence, ExtractiveComposer, clean_sub_questions, match_sub_question
from medrag.agent.safety import CITATION_MARKER, neutralise, wrap_evidence_as_data
from medrag.errors import ConfigError, MedragError
from medrag.ingest.chunking import split_sentences
from medrag.types import Evidence
from medrag.vlm.base import VisionLanguageModel

log = logging.getLogger(__name__)

# One citation group: [1], [1, 2], [1-3], [1; 2].
_MARKER = CITATION_MARKER
# Citations written after the sentence's full stop ("... heart. [1]") move in front of it.
_MARKERS_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[\s*\d+(?:\s*(?:[,;]|-|–)\s*\d+)*\s*\])+)")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_LEAD_IN = re.compile(r"^\s*(?:answer|response)\s*:\s*", re.IGNORECASE)
NOT_IN_EVIDENCE = "NOT IN EVIDENCE"


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    evidence_item: str
    parts: str = ""  # how sub-questions are listed, with {sub_questions}


@lru_cache(maxsize=None)
def load_prompt(name: str = "cited_answer") -> Prompt:
    """A prompt kept as package data in medrag/agent/prompts/NAME.yaml."""
    try:
        text = resources.files("medrag.agent").joinpath("prompts", f"{name}.yaml").read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        return Prompt(data["system"], data["user"], data["evidence_item"], data.get("parts") or "")
    except (FileNotFoundError, KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise ConfigError(f"prompt '{name}' is missing or malformed in medrag/agent/prompts: {exc}") from exc


def prompt_values(prompt: Prompt, question: str, evidence: Sequence[Evidence], sub_questions: Sequence[str], max_chars: int, **more: Any) -> dict[str, Any]:
    """The placeholders every prompt shares: the question, its parts, the evidence as a data block."""
    subs = clean_sub_questions(sub_questions)
    parts = ""
    if len(subs) > 1:
        listed = "\n".join(f"{k}. {neutralise(sub)}" for k, sub in enumerate(subs, start=1))
        parts = prompt.parts.format(sub_questions=listed)
    return {
        "question": question.strip(),
        "parts": parts,
        "evidence": wrap_evidence_as_data(evidence, item=prompt.evidence_item.strip(), max_chars=max_chars),
        **more,
    }


def _numbers(group: str) -> list[int]:
    out: list[int] = []
    for part in re.split(r"\s*[,;]\s*", group.strip()):
        bounds = re.split(r"\s*[-–]\s*", part)
        if len(bounds) == 2 and bounds[0].isdigit() and bounds[1].isdigit():
            low, high = int(bounds[0]), int(bounds[1])
            out.extend(range(low, high + 1) if 0 < high - low < 10 else [low, high])
        elif part.isdigit():
            out.append(int(part))
    return out


def parse_cited_sentences(text: str, n_evidence: int) -> list[tuple[str, list[int], int]]:
    """Split model output into (sentence without markers, valid numbers, invalid markers removed).

    Numbers outside 1..n_evidence are dropped; a sentence may end up with none.
    """
    out = []
    for line in text.splitlines():
        line = _LEAD_IN.sub("", _BULLET.sub("", line)).replace("**", "").strip()
        if not line:
            continue
        line = _MARKERS_AFTER_STOP.sub(lambda m: m.group(2) + m.group(1), line)
        for sentence in split_sentences(line):
            numbers = [n for m in _MARKER.finditer(sentence) for n in _numbers(m.group(1))]
            valid = list(dict.fromkeys(n for n in numbers if 1 <= n <= n_evidence))
            clean = _MARKER.sub("", sentence)
            clean = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(clean.split())).strip()
            out.append((clean, valid, len(numbers) - len([n for n in numbers if 1 <= n <= n_evidence])))
    return out


class LLMComposer:
    """A Composer that asks ``llm`` for a cited answer and falls back to ``fallback``.

    After each compose(), ``last_source`` is "llm" or "fallback" and
    ``last_error`` says why the fallback answered; each DraftSentence's signals
    carry ``llm`` = 1.0 or ``fallback`` = 1.0 as well.
    """

    def __init__(
        self,
        llm: VisionLanguageModel,
        fallback: Composer | None = None,
        *,
        max_sentences: int = 3,
        evidence_limit: int = 6,
        max_chars: int = 1500,
        min_words: int = 3,
        prompt: str = "cited_answer",
        options: dict[str, Any] | None = None,
    ) -> None:
        self.llm = llm
        self.fallback = fallback if fallback is not None else ExtractiveComposer(max_sentences=max_sentences)
        self.max_sentences = max_sentences
        self.evidence_limit = evidence_limit
        self.max_chars = max_chars
        self.min_words = min_words
        self.prompt = load_prompt(prompt)
        self.options = {"max_new_tokens": 200, **(options or {})}
        self.last_source: str | None = None
        self.last_error: str | None = None
        self.last_output: str | None = None

    def _limit(self, sub_questions: Sequence[str]) -> int:
        return max(self.max_sentences, len(clean_sub_questions(sub_questions)))

    def messages(self, question: str, evidence: Sequence[Evidence], sub_questions: Sequence[str] = ()) -> list[dict[str, str]]:
        values = prompt_values(self.prompt, question, evidence, sub_questions, self.max_chars, max_sentences=self._limit(sub_questions))
        return [
            {"role": "system", "content": self.prompt.system.format(**values).strip()},
            {"role": "user", "content": self.prompt.user.format(**values).strip()},
        ]

    def compose(
        self, question: str, evidence: Sequence[Evidence], *, sub_questions: Sequence[str] = ()
    ) -> list[DraftSentence]:
        subs = clean_sub_questions(sub_questions)
        # As many passages per sub-question as the extractive composer reads.
        shown = list(evidence[: self.evidence_limit * max(1, len(subs))])
        self.last_output = None
        if not shown:
            return self._fall_back(question, evidence, subs, "no evidence to cite")
        try:
            generation = self.llm.generate(self.messages(question, shown, subs), **self.options)
        except MedragError as exc:  # ModelUnavailable, bad options ...: the answer still comes, extractively
            return self._fall_back(question, evidence, subs, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a backend (or plugin) bug must not cost the user the answer; logged with its traceback
            log.exception("LLM composer: %s raised an unexpected error", getattr(self.llm, "name", "llm"))
            return self._fall_back(question, evidence, subs, f"unexpected {type(exc).__name__}: {exc}")
        self.last_output = generation.text
        draft = self._parse(generation.text, shown, subs)
        if not draft:
            return self._fall_back(question, evidence, subs, "no sentence of the model's answer cites the evidence")
        self.last_source, self.last_error = "llm", None
        return draft

    def _parse(self, text: str, shown: Sequence[Evidence], sub_questions: Sequence[str] = ()) -> list[DraftSentence]:
        if text.strip().upper().startswith(NOT_IN_EVIDENCE):
            return []
        draft: list[DraftSentence] = []
        seen: set[str] = set()
        for sentence, numbers, removed in parse_cited_sentences(text, len(shown)):
            key = " ".join(sentence.lower().split())
            if removed:
                log.info("removed %d citation(s) to passages that were not given: %r", removed, sentence)
            # Small models repeat themselves; a repeated or uncited sentence adds nothing verifiable.
            if not numbers or len(sentence.split()) < self.min_words or key in seen:
                continue
            seen.add(key)
            draft.append(
                DraftSentence(
                    text=sentence,
                    evidence_ids=[shown[n - 1].evidence_id for n in numbers],
                    signals={"llm": 1.0, "invalid_citations": float(removed)},
                    sub_question=(match_sub_question(sentence, sub_questions) if len(sub_questions) > 1 else (0 if sub_questions else None)),
                )
            )
            if len(draft) == self._limit(sub_questions):
                break
        return draft

    def _fall_back(self, question: str, evidence: Sequence[Evidence], sub_questions: Sequence[str], reason: str) -> list[DraftSentence]:
        log.warning("LLM composer (%s) fell back to %s: %s", getattr(self.llm, "name", "llm"), type(self.fallback).__name__, reason)
        self.last_source, self.last_error = "fallback", reason
        draft = self.fallback.compose(question, evidence, sub_questions=sub_questions)
        for sentence in draft:
            sentence.signals["fallback"] = 1.0
        return draft
