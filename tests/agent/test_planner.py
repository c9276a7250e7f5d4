"""Planning: question splitting, topic carry-over, tool choice by declared inputs and modalities, the LLM planner's fallback."""

from __future__ import annotations

import pytest

from medrag.agent.planner import LLMPlanner, RulePlanner, graph_call, make_sub_questions, split_question
from medrag.agent.state import ImageInput, SubQuestion
from medrag.agent.toolbox import Toolbox
from medrag.errors import ModelUnavailable
from medrag.testing import KeywordSearchTool
from medrag.testing.fake_llm import ScriptedLLM
from medrag.tools.function_tool import tool
from medrag.tools.vision import SegmentCtTissues, SegmentLungsXray, ZoomRegion


@pytest.mark.parametrize(
    ("question", "parts"),
    [
        ("What is diploë?", ["What is diploë?"]),
        (
            "What is Marfan syndrome and how is it inherited?",
            ["What is Marfan syndrome?", "how is it inherited?"],
        ),
        ("Which cells build bone? Which cells resorb it?", ["Which cells build bone?", "Which cells resorb it?"]),
        (
            "What are the causes, symptoms and treatment of pneumonia?",
            ["What are the causes of pneumonia?", "What are the symptoms of pneumonia?", "What are the treatment of pneumonia?"],
        ),
        # "and" inside a noun phrase is not a new question
        ("What is the relationship between Marfan syndrome and arachnodactyly?", ["What is the relationship between Marfan syndrome and arachnodactyly?"]),
        ("Describe the blood supply of the femoral head; what happens when it is interrupted?",
         ["Describe the blood supply of the femoral head", "what happens when it is interrupted?"]),
    ],
)
def test_split_question(question: str, parts: list[str]) -> None:
    assert split_question(question) == parts


def test_split_is_capped() -> None:
    question = " ".join(f"What is term{i}?" for i in range(9))
    assert len(split_question(question)) == 4


def test_follow_up_parts_carry_the_topic_into_their_search_query() -> None:
    subs = make_sub_questions(["What is Marfan syndrome?", "how is it inherited?"], has_images=False)
    assert subs[0].query == "What is Marfan syndrome?"
    assert subs[1].query == "how is it inherited? (Marfan syndrome)"
    assert not any(s.needs_image for s in subs)


def test_the_image_goes_with_the_part_that_mentions_it() -> None:
    subs = make_sub_questions(["What causes pleural effusion?", "Is one visible on this radiograph?"], has_images=True)
    assert [s.needs_image for s in subs] == [False, True]
    subs = make_sub_questions(["What is this?"], has_images=True)
    assert subs[0].needs_image  # no part mentions it: the first part gets it


@pytest.mark.parametrize(
    ("text", "operation"),
    [
        ("What is arachnodactyly?", "define"),
        ("What is the differential diagnosis for tall stature and lens dislocation?", "diseases"),
        ("Which disease causes long fingers?", "diseases"),
        ("How is Marfan syndrome related to ectopia lentis?", "path"),
    ],
)
def test_graph_operation_follows_cue_words(text: str, operation: str) -> None:
    call = graph_call("kg_lookup", SubQuestion(text, text), 0)
    assert call.inputs["operation"] == operation
    if operation == "path":
        assert call.inputs["text"] == "Marfan syndrome" and call.inputs["target"] == "ectopia lentis"


def xray(path: str = "cxr.png") -> ImageInput:
    return ImageInput(path=path, name=path, modality="xray", body_part="chest")


def test_tools_are_chosen_by_declared_inputs_and_modalities() -> None:
    @tool(description="Look a drug up in the local formulary.")
    def formulary(query: str) -> str:
        return "Amoxicillin: 500 mg every 8 hours."

    box = Toolbox([KeywordSearchTool([]), formulary, SegmentLungsXray(), SegmentCtTissues(), ZoomRegion()])
    plan = RulePlanner().plan("What is shown on this x-ray and how is it treated?", [xray()], box)
    by_tool = {}
    for call in plan.calls:
        by_tool.setdefault(call.tool, []).append(call)
    # every query tool gets every sub-question; the user's function tool is one of them
    assert [c.inputs["query"] for c in by_tool["search_text"]] == [s.query for s in plan.sub_questions]
    assert len(by_tool["formulary"]) == 2
    # the X-ray goes to the X-ray tool only: never to the CT tool, and zoom waits for a region
    assert [c.inputs for c in by_tool["segment_lungs_xray"]] == [{"image": "cxr.png", "modality": "xray"}]
    assert "segment_ct_tissues" not in by_tool and "zoom_region" not in by_tool


def test_where_filter_reaches_search_tools_that_take_it() -> None:
    plan = RulePlanner().plan("What is diploë?", [], Toolbox([KeywordSearchTool([])]), where={"source": "a.pdf"})
    assert plan.calls[0].inputs == {"query": "What is diploë?", "where": {"source": "a.pdf"}}


def test_llm_planner_uses_the_models_split() -> None:
    model = ScriptedLLM(['["What is Marfan syndrome?", "How is Marfan syndrome inherited?"]'])
    plan = LLMPlanner(model).plan("Marfan syndrome: what is it and how is it inherited?", [], Toolbox([KeywordSearchTool([])]))
    assert plan.planner == "llm" and not plan.notes
    assert [s.text for s in plan.sub_questions] == ["What is Marfan syndrome?", "How is Marfan syndrome inherited?"]
    assert "Marfan syndrome: what is it" in model.calls[0][0][-1]["content"]


@pytest.mark.parametrize(
    "reply",
    [
        "Sure! Here are the parts.",  # no JSON
        '["What is the capital of France?"]',  # a part about something else
        "[]",
        '["a?", "b?", "c?", "d?", "e?"]',
        ModelUnavailable("server down"),
    ],
    ids=["no-json", "off-topic", "empty", "too-many", "model-error"],
)
def test_llm_planner_falls_back_to_rules(reply) -> None:
    plan = LLMPlanner(ScriptedLLM([reply])).plan("What is Marfan syndrome and how is it inherited?", [], Toolbox([KeywordSearchTool([])]))
    assert plan.planner == "rules"
    assert plan.notes and "used the rule planner" in plan.notes[0]
    assert [s.text for s in plan.sub_questions] == ["What is Marfan syndrome?", "how is it inherited?"]
