"""The think-act-rethink loop with scripted tools: every branch of the graph.

Branches: enough at round 1 (test_graph.py), search again with other words, zoom
into an image region then re-read it, a tool failing, a tool timing out, tools
running in parallel, abstaining with what is missing, conversation threads
(follow-ups, isolation, persistence), images of the wrong modality, LLM planner
and LLM support check.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medrag.agent.compose import ExtractiveComposer
from medrag.agent.graph import ABSTAIN_TEXT, Agent
from medrag.agent.verify import LLMSupportCheck, SupportVerifier
from medrag.config import AgentSettings, Settings
from medrag.errors import ConfigError, EmptyQueryError, InputError
from medrag.testing import KeywordSearchTool
from medrag.testing.fake_llm import ScriptedLLM
from medrag.tools.function_tool import tool
from medrag.tools.vision import SegmentCtTissues, ZoomRegion
from medrag.types import Citation, Evidence, ToolResult

PASSAGES = [
    ("genetics.pdf", 12, "Marfan syndrome is a disorder of connective tissue caused by mutations in the FBN1 gene."),
    ("genetics.pdf", 13, "Marfan syndrome is inherited in an autosomal dominant pattern, so one altered copy of FBN1 suffices."),
    ("heart.pdf", 4, "The sinoatrial node is the pacemaker of the heart."),
    ("chest.pdf", 30, "A pleural effusion blunts the costophrenic angle on an upright chest radiograph."),
]


def settings_for(tmp_path: Path, **agent: Any) -> Settings:
    return Settings(home=tmp_path / "home", progress=False, agent=AgentSettings(abstain_below=0.2, **agent))


def make_agent(tools, tmp_path: Path, *, support_checker=None, **agent: Any) -> Agent:
    return Agent(tools, ExtractiveComposer(None), SupportVerifier(None), settings_for(tmp_path, **agent), support_checker=support_checker)


def acts(answer) -> list:
    return [t for t in answer.trace if t.node == "act"]


class ScriptedSearch:
    """Returns one passage list per call, in order: for testing what rethink does with each."""

    name = "search_text"
    description = "scripted search (test double)"
    modalities = frozenset({"text"})
    inputs = {"query": {"type": "string", "required": True}, "k": {"type": "integer"}, "where": {"type": "object"}}

    def __init__(self, *results: list[tuple[str, int, str]]) -> None:
        self.results = list(results)
        self.queries: list[str] = []

    def setup(self) -> None:
        pass

    def __call__(self, **inputs: Any) -> ToolResult:
        self.queries.append(inputs["query"])
        passages = self.results.pop(0) if self.results else []
        evidence = [
            Evidence(f"{src}#p{page}", text, Citation(src, f"{src}#p{page}", page=page, score=1.0 / (1 + i)), score=1.0 / (1 + i))
            for i, (src, page, text) in enumerate(passages)
        ]
        return ToolResult(self.name, True, evidence)


def test_thin_evidence_makes_it_search_again_with_other_words(tmp_path: Path) -> None:
    search = ScriptedSearch([PASSAGES[2]], [PASSAGES[1]])
    answer = make_agent(search, tmp_path).ask("How is Marfan syndrome inherited?")
    assert answer.rounds == 2
    first, second = acts(answer)
    assert (first.round, second.round) == (1, 2)
    assert second.details["why"] == "evidence thin: search again with other words"
    assert search.queries == ["How is Marfan syndrome inherited?", "Marfan syndrome inherited"]
    assert second.inputs["k"] == 2 * settings_for(tmp_path).retrieval.top_k
    rethinks = [t for t in answer.trace if t.node == "rethink"]
    assert rethinks[0].details["sufficient"] == [False] and rethinks[1].details["sufficient"] == [True]
    assert not answer.abstained and "autosomal dominant" in answer.text
    assert answer.citations[0].page == 13


def test_rounds_are_bounded(tmp_path: Path) -> None:
    search = KeywordSearchTool(PASSAGES)
    answer = make_agent(search, tmp_path).ask("Which gene causes cystic fibrosis?", max_rounds=1)
    assert answer.rounds == 1 and len(acts(answer)) == 1
    assert [t for t in answer.trace if t.node == "rethink"][-1].details["decision"] == "stop: 1 round(s) used"
    with pytest.raises(ConfigError):
        make_agent(search, tmp_path).ask("What is the pacemaker of the heart?", max_rounds=0)


def test_abstaining_says_which_parts_are_missing(tmp_path: Path) -> None:
    answer = make_agent(KeywordSearchTool(PASSAGES), tmp_path).ask("Which gene causes cystic fibrosis and how is it treated?")
    assert answer.abstained and answer.text == ABSTAIN_TEXT and answer.citations == []
    assert len(answer.sub_questions) == 2
    assert any("cystic fibrosis" in note for note in answer.notes)


def test_a_failing_tool_is_a_recorded_step_and_the_others_still_answer(tmp_path: Path) -> None:
    @tool(description="A formulary that is offline.")
    def formulary(query: str) -> str:
        raise RuntimeError("connection refused")

    answer = make_agent([KeywordSearchTool(PASSAGES), formulary], tmp_path).ask("What is the pacemaker of the heart?")
    failed = [t for t in acts(answer) if t.tool == "formulary"]
    assert failed and not failed[0].details["ok"]
    assert failed[0].summary == "failed: RuntimeError: connection refused"
    assert not answer.abstained and "sinoatrial node" in answer.text


def test_a_slow_tool_times_out_without_holding_the_answer(tmp_path: Path) -> None:
    release = threading.Event()

    @tool(description="A search that hangs.")
    def hanging(query: str) -> str:
        release.wait(10)
        return "too late"

    agent = make_agent([KeywordSearchTool(PASSAGES), hanging], tmp_path, tool_timeout_s=0.2)
    try:
        answer = agent.ask("What is the pacemaker of the heart?")
    finally:
        release.set()
    step = next(t for t in acts(answer) if t.tool == "hanging")
    assert step.summary == "failed: ToolTimeout: hanging did not finish within 0.2 s"
    assert 0.2 <= step.duration_s < 5
    assert not answer.abstained and "sinoatrial node" in answer.text


def test_independent_calls_run_in_parallel(tmp_path: Path) -> None:
    spans: dict[str, tuple[float, float]] = {}
    barrier = threading.Barrier(2, timeout=5)

    def timed(name: str):
        def run(query: str) -> str:
            start = time.perf_counter()
            barrier.wait()  # both calls must be running at once to get past this
            spans[name] = (start, time.perf_counter())
            return f"{name} says the sinoatrial node is the pacemaker of the heart."

        return tool(run, name=name, description=f"{name} source")

    answer = make_agent([timed("left"), timed("right")], tmp_path).ask("What is the pacemaker of the heart?")
    assert all(t.details["ok"] for t in acts(answer)), [t.summary for t in acts(answer)]
    (a0, a1), (b0, b1) = spans["left"], spans["right"]
    assert a0 < b1 and b0 < a1  # the two calls overlapped in time


def test_each_thread_keeps_its_own_history(tmp_path: Path) -> None:
    agent = make_agent(KeywordSearchTool(PASSAGES), tmp_path)
    first = agent.ask("What is Marfan syndrome?", thread_id="alice")
    assert not first.abstained and first.trace[0].details["turn"] == 1
    follow = agent.ask("How is it inherited?", thread_id="alice")
    intake = follow.trace[0]
    assert intake.details["turn"] == 2
    assert intake.details["carried_evidence"] == [c.chunk_id for c in first.citations]
    search = acts(follow)[0]
    assert "Marfan syndrome" in search.inputs["query"]
    assert "autosomal dominant" in follow.text

    # Another thread sees nothing of alice's conversation.
    other = agent.ask("How is it inherited?", thread_id="bob")
    assert other.trace[0].details["turn"] == 1 and other.trace[0].details["carried_evidence"] == []
    assert acts(other)[0].inputs["query"] == "How is it inherited?"
    # Per-turn state does not leak between turns of one thread either.
    assert [t.node for t in follow.trace].count("intake") == 1
    agent.close()

    # The thread survives a new agent (a restarted process) on the same home.
    again = make_agent(KeywordSearchTool(PASSAGES), tmp_path).ask("And what gene is involved?", thread_id="alice")
    assert again.trace[0].details["turn"] == 3
    assert (tmp_path / "home" / "conversations.sqlite").is_file()


def test_questions_without_a_thread_share_nothing(tmp_path: Path) -> None:
    agent = make_agent(KeywordSearchTool(PASSAGES), tmp_path)
    agent.ask("What is Marfan syndrome?")
    follow = agent.ask("How is it inherited?")
    assert follow.trace[0].details["carried_evidence"] == [] and follow.trace[0].details["turn"] == 1
    assert not (tmp_path / "home" / "conversations.sqlite").exists()


def grey_xray(path: Path) -> Path:
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(140, 25, (96, 128)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "L").save(path)
    return path


class OpacityFinder:
    """An X-ray tool that reports one finding with a box; accepts crops, so it re-reads a zoomed region."""

    name = "find_opacity"
    description = "reports a region of increased opacity (test double)"
    modalities = frozenset({"xray"})
    inputs = {"image": {"type": "string", "required": True}, "modality": {"type": "string"}}
    accepts_crops = True

    def __init__(self) -> None:
        self.seen: list[str] = []

    def setup(self) -> None:
        pass

    def __call__(self, image: str, modality: str | None = None) -> ToolResult:
        self.seen.append(image)
        name = Path(image).name
        ev = Evidence(
            f"opacity:{name}", f"Region of increased opacity in {name}.",
            Citation(name, f"opacity:{name}", bbox=(10.0, 20.0, 60.0, 70.0), score=1.0, locator={"tool": self.name}),
            score=1.0, kind="measurement",
        )
        return ToolResult(self.name, True, [ev], output={"image": image})


def test_zoom_into_the_region_a_tool_found_then_re_read_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDRAG_HOME", str(tmp_path / "home"))  # zoom crops are saved under the home
    finder = OpacityFinder()
    image = grey_xray(tmp_path / "cxr.png")
    agent = make_agent([KeywordSearchTool(PASSAGES), finder, ZoomRegion(), SegmentCtTissues()], tmp_path)
    answer = agent.ask("What is the opacity seen on this radiograph?", images=[{"path": image, "modality": "xray"}])
    tools_by_round = [(t.round, t.tool) for t in acts(answer)]
    assert (1, "find_opacity") in tools_by_round
    assert (2, "zoom_region") in tools_by_round
    assert (3, "find_opacity") in tools_by_round  # think twice: the finder looks at the crop
    assert not any(tool == "segment_ct_tissues" for _, tool in tools_by_round)  # an X-ray never goes to the CT tool
    zoom = next(t for t in acts(answer) if t.tool == "zoom_region")
    assert zoom.inputs["box"] == [10.0, 20.0, 60.0, 70.0] and zoom.details["ok"]
    assert finder.seen[0] == str(image) and finder.seen[1].endswith(".png") and finder.seen[1] != str(image)
    intake = answer.trace[0]
    assert intake.details["images"][0]["modality"] == "xray"


def test_bad_images_fail_before_any_tool_runs(tmp_path: Path) -> None:
    search = KeywordSearchTool(PASSAGES)
    agent = make_agent(search, tmp_path)
    with pytest.raises(InputError):
        agent.ask("What is this?", images=[tmp_path / "missing.png"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError):
        agent.ask("What is this?", images=[broken])
    with pytest.raises(EmptyQueryError):
        agent.ask("  ", images=[broken])
    assert search.calls == []


def test_llm_support_check_vetoes_a_borderline_sentence(tmp_path: Path) -> None:
    class Paraphrase:
        """A composer whose sentence only half-matches its evidence (support between 0.5 and 0.8)."""

        def compose(self, question, evidence, *, sub_questions=()):
            from medrag.agent.compose import DraftSentence

            return [DraftSentence("The sinoatrial node sets the pace of the heart rhythm.", [evidence[0].evidence_id])]

    search = KeywordSearchTool(PASSAGES)
    keep = Agent(search, Paraphrase(), SupportVerifier(None), settings_for(tmp_path))
    assert not keep.ask("What is the pacemaker of the heart?").abstained
    model = ScriptedLLM(["No."], repeat_last=True)
    veto = Agent(search, Paraphrase(), SupportVerifier(None), settings_for(tmp_path), support_checker=LLMSupportCheck(model))
    answer = veto.ask("What is the pacemaker of the heart?")
    assert answer.abstained
    assert answer.trace[-1].details["vetoed_by_llm"] == ["The sinoatrial node sets the pace of the heart rhythm."]
    assert "<passage>" in model.calls[0][0][-1]["content"]


def test_deidentified_question_reaches_tools_scrubbed(tmp_path: Path) -> None:
    search = KeywordSearchTool(PASSAGES)
    agent = make_agent(search, tmp_path, deidentify=True)
    answer = agent.ask("Mr. John Smith, MRN 12345678, seen 03/04/2025: what is the pacemaker of the heart?")
    sent = search.calls[0]["query"]
    assert "John" not in sent and "12345678" not in sent and "03/04/2025" not in sent
    assert "[NAME]" in sent and "[DATE]" in sent
    assert answer.trace[0].details["deidentified"]
    assert answer.question.startswith("Mr. John Smith")  # the user's own answer keeps their question


def test_from_config_with_a_registered_function_tool(tmp_path: Path, anatomy_index, hashing_embedder) -> None:
    from medrag.index.text_index import IndexStore

    settings = settings_for(tmp_path)
    IndexStore(settings.indexes_dir).save(anatomy_index)

    @tool(name="bone_facts", description="Facts about bone from a local list.", register=True)
    def bone_facts(query: str) -> str:
        return "Osteoclasts break down old bone in a process called resorption."

    config = tmp_path / "agent.yaml"
    config.write_text("indexes: [anatomy]\ntools: [bone_facts, zoom_region]\nmax_rounds: 2\n")
    agent = Agent.from_config(config, settings=settings, embedder=hashing_embedder)
    assert sorted(agent.tools) == ["bone_facts", "search_text", "zoom_region"]
    assert agent.settings.agent.max_rounds == 2
    answer = agent.ask("Which cells break down old bone?")
    assert {t.tool for t in acts(answer)} == {"search_text", "bone_facts"}
    assert not answer.abstained
    with pytest.raises(ConfigError, match="unknown tool 'nope'"):
        Agent.from_config({"indexes": ["anatomy"], "tools": ["nope"]}, settings=settings, embedder=hashing_embedder)
    with pytest.raises(ConfigError, match="invalid agent config"):
        Agent.from_config({"indexes": ["anatomy"], "colour": "red"}, settings=settings)
    with pytest.raises(ConfigError, match="at least one index"):
        Agent.from_config({}, settings=settings)


def test_image_question_gets_a_cited_structured_report(tmp_path: Path, monkeypatch) -> None:
    from medrag.agent.report import ReportComposer

    monkeypatch.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    image = grey_xray(tmp_path / "cxr.png")
    agent = Agent(
        [KeywordSearchTool(PASSAGES), OpacityFinder(), ZoomRegion()],
        ExtractiveComposer(None),
        SupportVerifier(None),
        settings_for(tmp_path),
        report_composer=ReportComposer(None),
    )
    answer = agent.ask("Is a pleural effusion visible on this chest radiograph?", images=[{"path": image, "modality": "xray"}])
    assert not answer.abstained
    assert set(answer.report) == {"findings", "impression", "recommendation"}
    findings = answer.report["findings"]
    assert findings and any("opacity" in s.text.lower() for s in findings)
    for items in answer.report.values():
        for sentence in items:  # every report statement cites an entry of the answer's citations
            assert sentence.citations and all(1 <= n <= len(answer.citations) for n in sentence.citations)
    assert any("opacity:" in c.chunk_id for c in answer.citations)
    assert answer.rationale and answer.notes
    assert "Findings:" in answer.format()
