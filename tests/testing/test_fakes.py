"""The fakes in medrag.testing are honest implementations: they pass the same checks."""

from medrag.agent.compose import ExtractiveComposer
from medrag.agent.graph import Agent
from medrag.agent.verify import SupportVerifier
from medrag.config import Settings
from medrag.tools.base import Tool
from medrag.testing import InMemoryVectorIndex, KeywordSearchTool
from medrag.testing.conformance import VectorIndexConformance


class TestInMemoryVectorIndex(VectorIndexConformance):
    def make_index(self, dim):
        return InMemoryVectorIndex(dim)

    def load_index(self, path):
        return InMemoryVectorIndex.load(path)


PASSAGES = [
    ("bone.pdf", 9, "Diploë is the spongy bone layer sandwiched between two compact layers in flat skull bones."),
    ("bone.pdf", 13, "Perforating canals carry vessels and nerves at right angles to the central canal."),
    ("heart.pdf", 4, "The heart has four chambers: two atria and two ventricles."),
]


def test_keyword_tool_is_a_tool_and_ranks_by_shared_words():
    tool = KeywordSearchTool(PASSAGES)
    assert isinstance(tool, Tool)
    result = tool(query="spongy bone layer between compact layers")
    assert result.ok and result.evidence[0].citation.page == 9
    assert tool.calls == [{"query": "spongy bone layer between compact layers"}]


def test_agent_runs_on_fakes_without_any_model():
    settings = Settings(home="/nonexistent")
    agent = Agent(KeywordSearchTool(PASSAGES), ExtractiveComposer(None), SupportVerifier(None), settings)
    answer = agent.ask("What is the spongy bone layer between the compact layers of skull bones called?")
    assert not answer.abstained
    assert answer.citations[0].source == "bone.pdf" and answer.citations[0].page == 9
    assert "Diploë" in answer.text and "[1]" in answer.text
