"""Structured reports for an image question: findings, impression, recommendation.

Built from what the tools measured on the image (Evidence of kind
"measurement": segmentation areas and boxes, classifier probabilities) and
from similar prior reports (Evidence whose citation locator names a report
section such as findings or impression). Every statement cites its evidence.

Without a model (the default) the report is extractive:

- findings: the tools' measurement sentences, then the closest sentence of
  each similar prior report's findings, introduced as a prior case, never as
  this patient's;
- impression: prior reports' impressions, then the sentences of other evidence
  (textbook passages) that best answer the question and its sub-questions;
- recommendation: the tools' cautions ("not a diagnosis", unreliable view) and
  sentences of the evidence that recommend something (follow-up, correlation).

With a model, the model phrases the report from the same numbered evidence
(prompt ``prompts/structured_report.yaml``); sentences without a valid citation
are dropped, a section the model left empty is filled extractively, and any
model failure gives the extractive report with a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from medrag.agent.compose import (
    DraftSentence,
    ExtractiveComposer,
    clean_sub_questions,
    match_sub_question,
    question_terms,
)
from medrag.agent.llm_compose import load_prompt, parse_cited_sentences, prompt_values
from medrag.errors import MedragError
from medrag.embed.base import TextEmbedder
from medrag.index.bm25 import tokenize
from medrag.ingest.chunking import split_sentences
from medrag.types import Evidence
from medrag.vlm.base import VisionLanguageModel

log = logging.getLogger(__name__)

SECTIONS = ("findings", "impression", "recommendation")
# Report section names as sources write them -> the report section they feed.
SECTION_NAMES = {
    "findings": "findings", "finding": "findings",
    "impression": "impression", "impressions": "impression", "conclusion": "impression", "conclusions": "impression",
    "assessment": "impression", "diagnosis": "impression",
    "recommendation": "recommendation", "recommendations": "recommendation", "plan": "recommendation",
}
# A tool's own caution about its output: advice for the reader, not a finding.
_CAVEAT = re.compile(r"^\s*caution\b|\bnot a diagnosis\b", re.IGNORECASE)
# Sentences that recommend an action.
_ADVICE = re.compile(
    r"\b(?:recommend\w*|suggest\w*|advis\w*|follow[- ]?up|correlat\w*|further (?:evaluation|imaging|assessment)"
    r"|consider\w*|repeat (?:imaging|radiograph|study|x-?ray|ct))\b",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^\s*(?:#+\s*)?\**\s*(findings?|impressions?|recommendations?)\s*\**\s*:?\s*\**\s*(.*)$", re.IGNORECASE)


def report_section(evidence: Evidence) -> str | None:
    """The report section (findings / impression / recommendation) a prior report's passage comes from."""
    for key in ("record_section", "section"):
        value = evidence.citation.locator.get(key)
        if isinstance(value, str) and value.strip().lower() in SECTION_NAMES:
            return SECTION_NAMES[value.strip().lower()]
    return None


def _strip_label(text: str, section_name: str | None) -> str:
    """Report chunks start with their section name ("Findings: ..."): the statement quotes the text after it."""
    if section_name and text.lower().startswith(section_name.lower() + ":"):
        return text[len(section_name) + 1 :].lstrip()
    return text


def _prior_name(evidence: Evidence) -> str:
    c = evidence.citation
    return str(c.locator.get("record_id") or c.title or c.source)


class ReportComposer:
    """Writes findings / impression / recommendation, each statement cited.

    ``embedder`` ranks textbook sentences for the impression (optional);
    ``model`` (optional) phrases the report; without it, or when it fails, the
    extractive report answers. After each compose_report(), ``last_source`` is
    "extractive", "llm" or "fallback" and ``last_error`` says why it fell back.
    """

    def __init__(
        self,
        embedder: TextEmbedder | None = None,
        *,
        model: VisionLanguageModel | None = None,
        max_per_section: int = 3,
        max_priors: int = 2,
        evidence_limit: int = 8,
        max_chars: int = 1200,
        prompt: str = "structured_report",
        options: dict[str, Any] | None = None,
    ) -> None:
        self.llm = model
        self.embedder = embedder
        self.max_per_section = max_per_section
        self.max_priors = max_priors
        self.evidence_limit = evidence_limit
        self.max_chars = max_chars
        self.prompt = load_prompt(prompt) if model is not None else None
        self.options = {"max_new_tokens": 300, **(options or {})}
        self.last_source: str | None = None
        self.last_error: str | None = None
        self.last_output: str | None = None

    # -- extractive ----------------------------------------------------------
    def extractive_report(
        self, question: str, evidence: Sequence[Evidence], *, sub_questions: Sequence[str] = ()
    ) -> dict[str, list[DraftSentence]]:
        subs = clean_sub_questions(sub_questions)
        report: dict[str, list[DraftSentence]] = {name: [] for name in SECTIONS}
        measurements = [ev for ev in evidence if ev.kind == "measurement"]
        priors = [ev for ev in evidence if ev.kind != "measurement" and report_section(ev)]
        # Images of earlier cases that look like this one (search_images): cited as look-alikes, not findings.
        similar = [ev for ev in evidence if ev.kind == "figure" and ev.citation.locator.get("case_id") and ev.citation.locator.get("image")]
        others = [ev for ev in evidence if ev.kind != "measurement" and not report_section(ev) and ev not in similar]

        def add(section: str, text: str, ev: Evidence, quoted: str | None = None, **signals: float) -> None:
            if len(report[section]) >= self.max_per_section:
                return
            if any(d.text == text for d in report[section]):
                return
            sub = match_sub_question(quoted or text, subs) if len(subs) > 1 else (0 if subs else None)
            report[section].append(DraftSentence(text, [ev.evidence_id], 1.0, dict(signals), sub, quoted))

        # What the tools measured on this image: findings; their cautions: recommendation.
        for ev in measurements:
            for sentence in split_sentences(ev.text):
                if _CAVEAT.search(sentence):
                    add("recommendation", sentence, ev, measurement=1.0, caveat=1.0)
                else:
                    add("findings", sentence, ev, measurement=1.0)

        # Similar prior reports, closest first (retrieval order), introduced as prior cases.
        topic = question_terms(" ".join([question, *subs, *(ev.text for ev in measurements)]))
        used: dict[str, int] = {}
        for ev in priors:
            section = report_section(ev)
            name = _prior_name(ev)
            if name not in used and len(used) >= self.max_priors:
                continue
            raw_section = str(ev.citation.locator.get("record_section") or ev.citation.locator.get("section") or "")
            sentences = [s for s in split_sentences(_strip_label(ev.text, raw_section)) if len(s.split()) >= 2]
            if not sentences:
                continue
            used[name] = used.get(name, 0) + 1
            advice = [s for s in sentences if _ADVICE.search(s)]
            for sentence in advice:
                add("recommendation", f"Similar prior case ({name}) advised: {sentence}", ev, sentence, prior=1.0)
            if section == "recommendation":
                continue
            rest = [s for s in sentences if s not in advice] or sentences
            # The sentence sharing most words with the question and the measurements; the first on ties.
            best = max(rest, key=lambda s: (len(topic & set(tokenize(s))), -rest.index(s)))
            label = "findings" if section == "findings" else "impression"
            add(label, f"Similar prior case ({name}): {best}", ev, best, prior=1.0)

        for ev in similar[: self.max_priors]:
            add("impression", f"Similar-looking image of an earlier case: {ev.text}", ev, ev.text, similar_image=1.0)

        # What other evidence (textbook passages, definitions) says about the question itself.
        if others:
            answer = ExtractiveComposer(self.embedder, max_sentences=self.max_per_section).compose(
                question, others, sub_questions=subs
            )
            for draft in answer:
                target = "recommendation" if _ADVICE.search(draft.text) else "impression"
                if len(report[target]) < self.max_per_section:
                    draft.signals["passage"] = 1.0
                    report[target].append(draft)
        return report

    # -- with a model ----------------------------------------------------------
    def messages(self, question: str, evidence: Sequence[Evidence], sub_questions: Sequence[str] = ()) -> list[dict[str, str]]:
        assert self.prompt is not None
        values = prompt_values(self.prompt, question, evidence, sub_questions, self.max_chars, max_per_section=self.max_per_section)
        return [
            {"role": "system", "content": self.prompt.system.format(**values).strip()},
            {"role": "user", "content": self.prompt.user.format(**values).strip()},
        ]

    def compose_report(
        self, question: str, evidence: Sequence[Evidence], *, sub_questions: Sequence[str] = ()
    ) -> dict[str, list[DraftSentence]]:
        """Sections "findings", "impression", "recommendation" (always all three; a section may be empty)."""
        subs = clean_sub_questions(sub_questions)
        self.last_output = None
        extractive = self.extractive_report(question, evidence, sub_questions=subs)
        if self.llm is None:
            self.last_source, self.last_error = "extractive", None
            return extractive
        shown = list(evidence[: self.evidence_limit * max(1, len(subs))])
        if not shown:
            return self._fall_back(extractive, "no evidence to cite")
        try:
            generation = self.llm.generate(self.messages(question, shown, subs), **self.options)
        except MedragError as exc:
            return self._fall_back(extractive, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a backend bug must not cost the user the report; logged with its traceback
            log.exception("report composer: %s raised an unexpected error", getattr(self.llm, "name", "llm"))
            return self._fall_back(extractive, f"unexpected {type(exc).__name__}: {exc}")
        self.last_output = generation.text
        report = self._parse(generation.text, shown, subs)
        if not any(report.values()):
            return self._fall_back(extractive, "no statement of the model's report cites the evidence")
        for name in SECTIONS:  # a section the model left empty is written extractively
            if not report[name] and extractive[name]:
                report[name] = [self._mark(d) for d in extractive[name]]
        self.last_source, self.last_error = "llm", None
        return report

    def _parse(self, text: str, shown: Sequence[Evidence], subs: Sequence[str]) -> dict[str, list[DraftSentence]]:
        chunks: dict[str, list[str]] = {name: [] for name in SECTIONS}
        current: str | None = None
        for line in text.splitlines():
            match = _HEADING.match(line)
            if match:
                current = SECTION_NAMES[match.group(1).lower()]
                line = match.group(2)
            if current is not None and line.strip():
                chunks[current].append(line)
        report: dict[str, list[DraftSentence]] = {name: [] for name in SECTIONS}
        for name in SECTIONS:
            seen: set[str] = set()
            for sentence, numbers, removed in parse_cited_sentences("\n".join(chunks[name]), len(shown)):
                key = " ".join(sentence.lower().split())
                if removed:
                    log.info("report: removed %d citation(s) to passages that were not given: %r", removed, sentence)
                if not numbers or len(sentence.split()) < 3 or key in seen:
                    continue
                seen.add(key)
                sub = match_sub_question(sentence, subs) if len(subs) > 1 else (0 if subs else None)
                report[name].append(
                    DraftSentence(sentence, [shown[n - 1].evidence_id for n in numbers], 0.0,
                                  {"llm": 1.0, "invalid_citations": float(removed)}, sub)
                )
                if len(report[name]) == self.max_per_section:
                    break
        return report

    @staticmethod
    def _mark(draft: DraftSentence) -> DraftSentence:
        draft.signals["fallback"] = 1.0
        return draft

    def _fall_back(self, extractive: dict[str, list[DraftSentence]], reason: str) -> dict[str, list[DraftSentence]]:
        log.warning("report composer (%s) fell back to the extractive report: %s", getattr(self.llm, "name", "llm"), reason)
        self.last_source, self.last_error = "fallback", reason
        return {name: [self._mark(d) for d in items] for name, items in extractive.items()}
