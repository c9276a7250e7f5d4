"""Agent.stream yields each step as it finishes, then the answer; `medrag ask --trace` prints them."""

from __future__ import annotations

from medrag.agent.compose import ExtractiveComposer
from medrag.agent.graph import Agent
from medrag.agent.verify import SupportVerifier
from medrag.config import Settings
from medrag.testing import KeywordSearchTool
from medrag.types import Answer, TraceStep

PASSAGES = [
    ("bone.pdf", 9, "Diploë is the spongy bone layer sandwiched between two compact layers in flat skull bones."),
    ("heart.pdf", 4, "The sinoatrial node is the pacemaker of the heart."),
]


def make_agent() -> Agent:
    return Agent(KeywordSearchTool(PASSAGES), ExtractiveComposer(None), SupportVerifier(None), Settings(home="/nonexistent"))


def test_stream_yields_steps_in_order_then_the_answer() -> None:
    events = list(make_agent().stream("What is the pacemaker of the heart?"))
    steps, answer = events[:-1], events[-1]
    assert all(isinstance(e, TraceStep) for e in steps)
    assert [s.node for s in steps] == ["intake", "plan", "act", "rethink", "compose", "verify"]
    assert isinstance(answer, Answer) and answer.trace == steps
    assert "sinoatrial node" in answer.text and answer.citations[0].source == "heart.pdf"


def test_stream_and_ask_agree() -> None:
    agent = make_agent()
    streamed = list(agent.stream("What is diploë?"))[-1]
    asked = agent.ask("What is diploë?")
    assert streamed.text == asked.text and streamed.confidence == asked.confidence
