"""Agent v1: a langgraph StateGraph retrieve -> compose -> verify.

State is a TypedDict with reducers: evidence and trace accumulate, so later
nodes (rethink, tools run in parallel) add to them without overwriting. A
fresh question always starts from fresh state.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from medrag.agent.compose import Composer, DraftSentence, ExtractiveComposer
from medrag.agent.verify import SupportVerifier, confidence
from medrag.config import Settings, load_settings
from medrag.errors import AgentError
from medrag.index.hybrid import check_query
from medrag.tools.base import Tool
from medrag.types import Answer, AnswerSentence, Citation, Evidence, ToolResult, TraceStep

ABSTAIN_TEXT = "Not enough evidence in the index to answer this question."


class AgentState(TypedDict, total=False):
    question: str
    where: dict[str, Any] | None
    tool_results: Annotated[list[ToolResult], operator.add]
    evidence: Annotated[list[Evidence], operator.add]
    draft: list[DraftSentence]
    answer: Answer
    trace: Annotated[list[TraceStep], operator.add]


def _timed(node: str, fn: Callable[[AgentState], dict[str, Any]]) -> Callable[[AgentState], dict[str, Any]]:
    def run(state: AgentState) -> dict[str, Any]:
        started = time.perf_counter()
        update = fn(state)
        for step in update.get("trace", []):
            step.duration_s = round(time.perf_counter() - started, 4)
        return update

    run.__name__ = node
    return run


class Agent:
    """Answers questions from indexed evidence, citing every sentence.

    >>> agent = Agent.from_index("textbook")           # doctest: +SKIP
    >>> answer = agent.ask("What is diploë?")          # doctest: +SKIP
    >>> print(answer.format())                         # doctest: +SKIP
    """

    def __init__(
        self,
        search_tool: Tool,
        composer: Composer,
        verifier: SupportVerifier,
        settings: Settings | None = None,
        term_idf: Callable[[Iterable[str]], dict[str, float]] | None = None,
        graph_tool: Tool | None = None,
        embedder=None,
    ) -> None:
        self.search_tool = search_tool
        self.graph_tool = graph_tool  # kg_lookup: definitions of the concepts the question names
        self.embedder = embedder  # scores evidence from tools that give no cosine of their own
        self.term_idf = term_idf  # corpus statistics for the confidence's coverage signal
        self.composer = composer
        self.verifier = verifier
        self.settings = settings or load_settings()
        self.graph = self._build()

    @classmethod
    def from_index(
        cls, name: str, *, settings: Settings | None = None, embedder=None, llm: str | None = None, graph: str | None = None
    ) -> "Agent":
        """The default agent over a named index: hybrid search, extractive composer, support verifier.

        ``llm`` is a model spec (see medrag.vlm.make_llm): when given and not "extractive",
        that model phrases the answer and the extractive composer is its fallback.
        ``graph`` names a built knowledge graph (medrag kg build): its definitions of the
        concepts in the question join the evidence, cited by ontology and node id.
        """
        from medrag.embed.text import make_embedder
        from medrag.index.hybrid import HybridRetriever
        from medrag.index.text_index import IndexStore
        from medrag.tools.retrieval import TextSearchTool

        settings = settings or load_settings()
        store = IndexStore(settings.indexes_dir)
        if embedder is None:
            stored = store.info(name)["embedder"]["name"]  # also raises IndexNotFound for unknown names
            embedder = make_embedder(stored, device=settings.device)
        index = store.open(name, embedder.info())
        retriever = HybridRetriever(index, embedder, settings.retrieval)
        composer: Composer = ExtractiveComposer(embedder, max_sentences=settings.agent.max_sentences)
        if llm is not None:
            from medrag.vlm import make_llm

            model = make_llm(llm)
            if model is not None:
                from medrag.agent.llm_compose import LLMComposer

                composer = LLMComposer(model, composer, max_sentences=settings.agent.max_sentences)
        return cls(
            TextSearchTool(retriever),
            composer,
            SupportVerifier(embedder, min_support=settings.agent.min_support),
            settings,
            term_idf=index.lexical.idf,
            graph_tool=cls._graph_tool(graph),
            embedder=embedder,
        )

    @staticmethod
    def _graph_tool(graph: str | None) -> Tool | None:
        if graph is None:
            return None
        from medrag.kg.graph import open_graph
        from medrag.tools.kg_lookup import KgLookupTool

        return KgLookupTool(open_graph(graph))  # opened now, so an unknown graph fails before any question

    # -- nodes -------------------------------------------------------------
    def _retrieve(self, state: AgentState) -> dict[str, Any]:
        inputs: dict[str, Any] = {"query": state["question"]}
        if state.get("where"):
            inputs["where"] = state["where"]
        result = self.search_tool(**inputs)
        summary = f"{result.tool}: {len(result.evidence)} passages" if result.ok else f"{result.tool} failed: {result.error}"
        step = TraceStep(
            "retrieve",
            summary,
            {"tool": result.tool, "ok": result.ok, "inputs": inputs, "evidence": [e.evidence_id for e in result.evidence]},
        )
        return {"tool_results": [result], "evidence": result.evidence, "trace": [step]}

    def _graph_lookup(self, state: AgentState) -> dict[str, Any]:
        inputs = {"operation": "define", "text": state["question"], "k": 3}
        result = self.graph_tool(**inputs)
        summary = f"{result.tool}: {len(result.evidence)} facts" if result.ok else f"{result.tool} failed: {result.error}"
        step = TraceStep(
            "graph", summary, {"tool": result.tool, "ok": result.ok, "inputs": inputs, "evidence": [e.evidence_id for e in result.evidence]}
        )
        return {"tool_results": [result], "evidence": result.evidence, "trace": [step]}

    def _score_unscored(self, question: str, evidence: Sequence[Evidence]) -> None:
        """Give evidence without a question cosine (graph facts) one, so relevance can be judged."""
        missing = [ev for ev in evidence if "dense" not in ev.scores]
        if not missing or self.embedder is None:
            return
        q = self.embedder.embed_queries([question])[0]
        for ev, vector in zip(missing, self.embedder.embed_texts([ev.text for ev in missing])):
            ev.scores["dense"] = float(vector @ q)

    def _compose(self, state: AgentState) -> dict[str, Any]:
        self._score_unscored(state["question"], state.get("evidence", []))
        draft = self.composer.compose(state["question"], state.get("evidence", []))
        # Which composer wrote the draft: "extractive", or "llm"/"fallback" for LLMComposer.
        source = getattr(self.composer, "last_source", None) or "extractive"
        details = {"composer": source, "sentences": [d.text for d in draft]}
        if getattr(self.composer, "last_error", None):
            details["error"] = str(self.composer.last_error)
        step = TraceStep("compose", f"{len(draft)} sentences drafted ({source})", details)
        return {"draft": draft, "trace": [step]}

    def _verify(self, state: AgentState) -> dict[str, Any]:
        evidence = {e.evidence_id: e for e in state.get("evidence", [])}
        verdicts = self.verifier.check(state.get("draft", []), evidence)
        kept = [v for v in verdicts if v.supported]
        dropped = [v.sentence.text for v in verdicts if not v.supported]
        value, signals = confidence(state["question"], kept, evidence, self.term_idf)
        abstained = not kept or value < self.settings.agent.abstain_below
        step = TraceStep(
            "verify",
            ("abstained" if abstained else "answered") + f" (confidence {value:.2f}, dropped {len(dropped)})",
            {"signals": signals, "dropped": dropped, "threshold": self.settings.agent.abstain_below},
        )
        answer = self._answer(state["question"], [] if abstained else kept, evidence, value, abstained)
        return {"answer": answer, "trace": [step]}

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

    def _build(self):
        graph = StateGraph(AgentState)
        graph.add_node("retrieve", _timed("retrieve", self._retrieve))
        graph.add_node("compose", _timed("compose", self._compose))
        graph.add_node("verify", _timed("verify", self._verify))
        graph.add_edge(START, "retrieve")
        if self.graph_tool is not None:  # runs beside retrieval; compose waits for both
            graph.add_node("graph", _timed("graph", self._graph_lookup))
            graph.add_edge(START, "graph")
            graph.add_edge(["retrieve", "graph"], "compose")
        else:
            graph.add_edge("retrieve", "compose")
        graph.add_edge("compose", "verify")
        graph.add_edge("verify", END)
        return graph.compile()

    # -- public ------------------------------------------------------------
    def ask(self, question: str, *, where: dict[str, Any] | None = None) -> Answer:
        question = check_query(question)
        try:
            final = self.graph.invoke({"question": question, "where": where})
        except RecursionError as exc:  # pragma: no cover - defensive
            raise AgentError(f"agent graph did not finish: {exc}") from exc
        answer: Answer = final["answer"]
        answer.trace = list(final.get("trace", []))
        return answer

    def stream(self, question: str, *, where: dict[str, Any] | None = None) -> Iterator[TraceStep | Answer]:
        """Yield each step as it finishes (retrieve, graph, compose, verify), then the Answer."""
        question = check_query(question)
        trace: list[TraceStep] = []
        answer: Answer | None = None
        for update in self.graph.stream({"question": question, "where": where}, stream_mode="updates"):
            for node_update in update.values():
                for step in (node_update or {}).get("trace", []):
                    trace.append(step)
                    yield step
                answer = (node_update or {}).get("answer", answer)
        if answer is None:  # pragma: no cover - the graph always ends in verify
            raise AgentError("the agent graph ended without an answer")
        answer.trace = trace
        yield answer

    def ask_many(self, questions: Sequence[str]) -> list[Answer]:
        return [self.ask(q) for q in questions]
