"""The data that flows through medrag: documents, chunks, evidence, answers.

Plain dataclasses: cheap to build, easy to serialise (``to_dict``), and
stable field names that the CLI's JSON output and the server reuse.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

BBox = tuple[float, float, float, float]  # x0, y0, x1, y1, origin top-left: PDF points on pages, pixels on images


@dataclass
class TextBlock:
    """A block of text on a page with its bounding box."""

    text: str
    bbox: BBox
    kind: str = "text"  # text | heading | caption
    confidence: float | None = None  # OCR confidence (0..1) when the text came from OCR


@dataclass
class Figure:
    """A figure on a page: its region, the caption linked to it by layout, and its saved image."""

    bbox: BBox
    label: str | None = None  # "Figure 22.3", from the linked caption
    caption: str | None = None
    caption_bbox: BBox | None = None
    image_path: str | None = None  # PNG crop of the region, when figures are saved
    origin: str = "image"  # image (embedded raster) | drawing (vector graphics) | scan (found on a page scan)


@dataclass
class Page:
    """One page of a document. ``number`` is 1-based, as printed citations use."""

    number: int
    blocks: list[TextBlock] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    thumbnail_path: str | None = None
    figures: list[Figure] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.blocks)


@dataclass
class Document:
    """A parsed source: a PDF book, an ontology, a report collection entry ..."""

    doc_id: str
    source: str  # file name (or URI) shown in citations
    title: str
    kind: str  # pdf | ontology | report | text
    pages: list[Page] = field(default_factory=list)
    content_hash: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chunk:
    """A retrievable piece of text. A chunk never spans pages, so it cites exactly one."""

    chunk_id: str
    doc_id: str
    text: str
    source: str
    title: str
    page: int | None = None
    bbox: BBox | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Chunk":
        record = dict(record)
        if record.get("bbox") is not None:
            record["bbox"] = tuple(record["bbox"])
        return cls(**record)


@dataclass
class Citation:
    """Where a piece of evidence comes from, precise enough to open it again."""

    source: str
    chunk_id: str
    title: str = ""
    page: int | None = None
    bbox: BBox | None = None
    score: float = 0.0
    locator: dict[str, Any] = field(default_factory=dict)  # figure, node id, report section ...

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["bbox"] = list(self.bbox) if self.bbox is not None else None
        return out


@dataclass
class Evidence:
    """A passage (or fact) the answer may rely on, with its citation."""

    evidence_id: str
    text: str
    citation: Citation
    score: float = 0.0
    kind: str = "text"  # text | figure | term | graph | measurement
    scores: dict[str, float] = field(default_factory=dict)  # per-signal scores: dense, lexical, fused

    @property
    def tool(self) -> str:
        """Which family of tool found it: graph facts score on another scale than retrieved passages."""
        return "graph" if self.kind == "graph" else "retrieval"

    def to_dict(self) -> dict[str, Any]:
        return {
            "evidence_id": self.evidence_id,
            "text": self.text,
            "kind": self.kind,
            "score": self.score,
            "scores": dict(self.scores),
            "citation": self.citation.to_dict(),
        }


@dataclass
class ToolResult:
    """What a tool returns: evidence to cite, or the error that stopped it."""

    tool: str
    ok: bool
    evidence: list[Evidence] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0


@dataclass
class TraceStep:
    """One step of the agent, kept so users can see how an answer was reached."""

    node: str  # the graph step: intake, plan, act, rethink, compose, verify
    summary: str  # one line saying what came out
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    tool: str | None = None  # the tool an act step called
    inputs: dict[str, Any] = field(default_factory=dict)
    round: int = 0  # think-act-rethink round (0: before acting)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.node,
            "tool": self.tool,
            "inputs": self.inputs,
            "outputs_summary": self.summary,
            "ms": round(1000 * self.duration_s, 2),
            "round": self.round,
            "details": self.details,
        }


@dataclass
class AnswerSentence:
    text: str
    citations: list[int]  # 1-based numbers into Answer.citations
    support: float = 0.0  # how well the cited evidence supports it (verify step)


@dataclass
class Answer:
    """The agent's answer: text whose sentences cite numbered evidence."""

    question: str
    text: str
    abstained: bool
    confidence: float
    citations: list[Citation] = field(default_factory=list)
    sentences: list[AnswerSentence] = field(default_factory=list)
    trace: list[TraceStep] = field(default_factory=list)
    sub_questions: list[str] = field(default_factory=list)  # what the planner split the question into
    rounds: int = 0  # think-act-rethink rounds the agent ran
    rationale: list[str] = field(default_factory=list)  # short reasoning path shown beside the answer
    report: dict[str, list[AnswerSentence]] = field(default_factory=dict)  # structured report sections, when asked
    notes: list[str] = field(default_factory=list)  # safety and uncertainty notes (clinical confirmation, gaps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "confidence": round(float(self.confidence), 4),
            "citations": [{"n": i + 1, **c.to_dict()} for i, c in enumerate(self.citations)],
            "sentences": [asdict(s) for s in self.sentences],
            "sub_questions": list(self.sub_questions),
            "rounds": self.rounds,
            "rationale": list(self.rationale),
            "report": {section: [asdict(s) for s in items] for section, items in self.report.items()},
            "notes": list(self.notes),
            "trace": [t.to_dict() for t in self.trace],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    def format(self) -> str:
        """Human-readable answer with numbered citations, as the CLI prints it."""
        lines = [self.text, ""]
        if self.citations:
            lines.append("Sources:")
            for i, c in enumerate(self.citations, start=1):
                where = f", p. {c.page}" if c.page is not None else ""
                extra = "".join(f", {k} {v}" for k, v in c.locator.items() if v)
                lines.append(f"  [{i}] {c.title or c.source}{where}{extra} ({c.source}; score {c.score:.2f})")
        lines.append(f"Confidence: {self.confidence:.2f}" + (" (abstained)" if self.abstained else ""))
        for section, items in self.report.items():
            if items:
                lines.append(f"{section.capitalize()}: " + " ".join(f"{s.text} " + "".join(f"[{n}]" for n in s.citations) for s in items))
        if self.rationale:
            lines.append("How this was found:")
            lines.extend(f"  - {step}" for step in self.rationale)
        lines.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(lines)


@dataclass(slots=True)  # built for every hit of every search: slots make that cheaper
class Hit:
    """One search result from a vector or lexical index."""

    id: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
