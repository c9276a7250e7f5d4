"""A short reasoning path shown beside the answer (MedThink style), built without a model.

``build_rationale`` reads what the agent did (sub-questions, the trace of its
steps) and what the answer rests on (the draft's cited evidence) and says it
in a few plain lines, for example::

    Split the question into 2 sub-questions: (1) ...; (2) ...
    Found a passage in Bone Tissue (p. 213) on Bone Repair, for sub-question 1.
    segment_lungs_xray measured on chest.png: Lung fields cover 38% of the image.
    No evidence found for sub-question 2: ...
    Dropped 1 unsupported sentence.

Every line is derived from recorded data, so the same run gives the same rationale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medrag.agent.compose import DraftSentence, clean_sub_questions
from medrag.ingest.chunking import split_sentences
from medrag.types import Evidence, TraceStep


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


def _end(line: str) -> str:
    return line if line.endswith((".", "?", "!")) else line + "."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _field(step: TraceStep | dict[str, Any], name: str, default: Any = None) -> Any:
    if isinstance(step, dict):
        return step.get(name, default)
    return getattr(step, name, default)


def describe_evidence(ev: Evidence) -> str:
    """One line saying what a piece of evidence is and where it comes from."""
    c = ev.citation
    loc = c.locator
    where = f" (p. {c.page})" if c.page is not None else ""
    title = _short(c.title or c.source, 60)
    if ev.kind == "measurement":
        first = split_sentences(ev.text)[:1] or [ev.text]
        return f"{loc.get('tool') or c.title or 'an image tool'} measured on {c.source}: {_short(first[0], 110)}"
    if ev.kind == "graph":
        return f"Looked up {loc.get('node_id') or c.title or c.source} in the knowledge graph ({c.source})"
    if ev.kind == "term":
        return f"Found the definition of {loc.get('section') or c.title or ev.evidence_id} ({c.source})"
    if loc.get("record_section"):
        return f"Found a similar prior report {loc.get('record_id') or c.title or c.source} ({loc['record_section']})"
    if ev.kind == "figure":
        figure = str(loc.get("figure") or "figure")
        figure = figure if figure.lower().startswith("fig") else f"figure {figure}"
        return f"Found the caption of {figure} in {title}{where}"
    topic = f" on {_short(loc['section'], 60)}" if loc.get("section") else ""
    return f"Found a passage in {title}{where}{topic}"


def build_rationale(
    question: str,
    sub_questions: Sequence[str],
    evidence: Sequence[Evidence],
    draft: Sequence[DraftSentence],
    trace: Sequence[TraceStep] = (),
    *,
    dropped: Sequence[str] | None = None,
    abstained: bool | None = None,
    max_evidence_lines: int = 5,
) -> list[str]:
    """The reasoning path: how the question was split, what was looked up and found, what was dropped.

    ``trace`` holds TraceStep objects (or their fields as dicts). ``dropped`` (sentences the
    verifier removed) and ``abstained`` override what the trace's verify step says, for a
    caller that builds the rationale while verifying.
    """
    subs = clean_sub_questions(sub_questions)
    lines: list[str] = []
    if len(subs) > 1:
        listed = "; ".join(f"({k}) {_short(sub, 70)}" for k, sub in enumerate(subs, start=1))
        lines.append(_end(f"Split the question into {len(subs)} sub-questions: {listed}"))

    # What happened along the way: tools called, failed tools, rethink rounds.
    calls: dict[str, int] = {}
    rounds = {int(_field(step, "round", 0) or 0) for step in trace if str(_field(step, "node", "")) == "act"}
    for step in trace:
        node = str(_field(step, "node", ""))
        details = _field(step, "details", {}) or {}
        summary = _short(_field(step, "summary", ""), 120)
        tool = _field(step, "tool") or details.get("tool")
        if node == "act" and tool:
            calls[tool] = calls.get(tool, 0) + 1
        if node == "rethink" and summary:
            lines.append(_end(f"Rethought ({summary})" if not summary.startswith("round") else f"Rethink {summary}"))
        elif details.get("ok") is False:
            lines.append(_end(f"{tool or node} did not help: {_short(details.get('error') or summary, 100)}"))
    if calls:
        listed = ", ".join(f"{tool} x{n}" if n > 1 else tool for tool, n in calls.items())
        over = f" over {_plural(len(rounds), 'round')}" if len(rounds) > 1 else ""
        lines.insert(1 if len(subs) > 1 else 0, _end(f"Called {listed}{over}"))

    # What the answer rests on, in the order the answer cites it.
    by_id = {ev.evidence_id: ev for ev in evidence}
    seen: set[str] = set()
    described = 0
    for sentence in draft:
        for eid in sentence.evidence_ids:
            if eid in seen or eid not in by_id:
                continue
            seen.add(eid)
            if described == max_evidence_lines:
                continue
            described += 1
            line = describe_evidence(by_id[eid])
            if len(subs) > 1 and sentence.sub_question is not None:
                line += f", for sub-question {sentence.sub_question + 1}"
            lines.append(_end(line))
    if len(seen) > described:
        lines.append(f"Also cited {_plural(len(seen) - described, 'more source')}.")
    merged = sum(1 for s in draft if len(s.evidence_ids) > 1)
    if merged:
        lines.append(f"{_plural(merged, 'sentence')} rest on several sources that say the same thing.")

    if len(subs) > 1:
        for k, sub in enumerate(subs):
            if not any(s.sub_question == k for s in draft):
                lines.append(f"No evidence found for sub-question {k + 1}: {_short(sub, 80)}")

    for step in trace:
        node = str(_field(step, "node", ""))
        details = _field(step, "details", {}) or {}
        if node == "compose" and details.get("composer") == "fallback":
            why = f" ({_short(details['error'], 80)})" if details.get("error") else ""
            lines.append(f"The language model's answer was not usable{why}; the answer quotes the evidence instead.")
        if node == "verify":
            if dropped is None:
                dropped = details.get("dropped") or []
            if abstained is None:
                abstained = str(_field(step, "summary", "")).startswith("abstained")
    if dropped:
        lines.append(f"Dropped {_plural(len(dropped), 'unsupported sentence')}.")
    if abstained:
        lines.append("Abstained: the remaining evidence was not strong enough to answer.")
    if not evidence:
        lines.append("Found no evidence to answer from.")
    return lines
