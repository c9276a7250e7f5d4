"""build_rationale: a short, deterministic reasoning path from sub-questions, cited evidence and the trace."""

from __future__ import annotations

from medrag.agent.compose import DraftSentence, ExtractiveComposer
from medrag.agent.rationale import build_rationale, describe_evidence
from medrag.types import Citation, Evidence, TraceStep

BONE = Evidence(
    "bone:213", "Osteoclasts break down old bone in a process called resorption.",
    Citation("ch06.pdf", "bone:213", title="Bone Tissue", page=213, locator={"section": "Bone Remodeling"}), 0.03,
)
HEART = Evidence(
    "heart:4", "The sinoatrial node in the wall of the right atrium is the pacemaker of the heart.",
    Citation("ch19.pdf", "heart:4", title="The Heart", page=4), 0.02,
)
LUNGS = Evidence(
    "segment_lungs_xray:cxr.png", "Lung fields cover 29% of the image; right 14%, left 14%. Classical threshold segmentation, not a diagnosis.",
    Citation("cxr.png", "segment_lungs_xray:cxr.png", title="segment_lungs_xray on cxr.png", locator={"tool": "segment_lungs_xray"}),
    1.0, kind="measurement",
)
PRIOR = Evidence("CXR4#findings", "Findings: small left effusion.", Citation("reports.jsonl", "CXR4#findings", locator={"record_id": "CXR4", "record_section": "findings"}))
TERM = Evidence("HP:1", "Effusion: fluid.", Citation("hp.obo", "HP:1", locator={"section": "Pleural effusion", "node_id": "HP:1"}), kind="term")
SUBS = ["Which cells break down old bone?", "What is the pacemaker of the heart?", "Which enzyme digests lactose?"]


def test_describes_each_kind_of_evidence() -> None:
    assert describe_evidence(BONE) == "Found a passage in Bone Tissue (p. 213) on Bone Remodeling"
    assert describe_evidence(LUNGS) == "segment_lungs_xray measured on cxr.png: Lung fields cover 29% of the image; right 14%, left 14%."
    assert describe_evidence(PRIOR) == "Found a similar prior report CXR4 (findings)"
    assert describe_evidence(TERM) == "Found the definition of Pleural effusion (hp.obo)"


def test_reasoning_path_of_a_split_question() -> None:
    draft = [
        DraftSentence(BONE.text, ["bone:213"], sub_question=0),
        DraftSentence(HEART.text, ["heart:4"], sub_question=1),
        DraftSentence("The heart is a pump.", ["heart:4"], sub_question=1),
    ]
    trace = [
        TraceStep("plan", "3 sub-question(s), 3 tool call(s) (rule planner)"),
        TraceStep("act", "search_text: 4 passages", {"ok": True}, tool="search_text", round=1),
        TraceStep("act", "search_text: 3 passages", {"ok": True}, tool="search_text", round=1),
        TraceStep("act", "kg_lookup failed: index busy", {"ok": False, "error": "index busy"}, tool="kg_lookup", round=1),
        TraceStep("rethink", "round 1: act again: 1 new call(s)", round=1),
        TraceStep("act", "search_text: 0 passages", {"ok": True}, tool="search_text", round=2),
        TraceStep("rethink", "round 2: stop: nothing new to try", round=2),
        TraceStep("compose", "3 sentences drafted (extractive)", {"composer": "extractive"}),
        TraceStep("verify", "answered (confidence 0.61, dropped 1)", {"dropped": ["An unsupported claim."]}),
    ]
    lines = build_rationale("bone, heart and lactose?", SUBS, [BONE, HEART, LUNGS], draft, trace)
    assert lines == [
        "Split the question into 3 sub-questions: (1) Which cells break down old bone?; (2) What is the pacemaker of the heart?; "
        "(3) Which enzyme digests lactose?",
        "Called search_text x3, kg_lookup over 2 rounds.",
        "kg_lookup did not help: index busy.",
        "Rethink round 1: act again: 1 new call(s).",
        "Rethink round 2: stop: nothing new to try.",
        "Found a passage in Bone Tissue (p. 213) on Bone Remodeling, for sub-question 1.",
        "Found a passage in The Heart (p. 4), for sub-question 2.",
        "No evidence found for sub-question 3: Which enzyme digests lactose?",
        "Dropped 1 unsupported sentence.",
    ]
    assert build_rationale("bone, heart and lactose?", SUBS, [BONE, HEART, LUNGS], draft, trace) == lines
    # Built while verifying (before the verify step is in the trace), dropped/abstained come as arguments.
    early = build_rationale("bone, heart and lactose?", SUBS, [BONE, HEART, LUNGS], draft, trace[:-1], dropped=["x", "y"], abstained=False)
    assert early[:-1] == lines[:-1] and early[-1] == "Dropped 2 unsupported sentences."


def test_single_question_with_an_image_and_merged_sources() -> None:
    draft = [DraftSentence(LUNGS.text.split(";")[0], [LUNGS.evidence_id]), DraftSentence(BONE.text, ["bone:213", "heart:4"])]
    lines = build_rationale("Describe the lungs.", [], [BONE, HEART, LUNGS], draft, [])
    assert lines == [
        "segment_lungs_xray measured on cxr.png: Lung fields cover 29% of the image; right 14%, left 14%.",
        "Found a passage in Bone Tissue (p. 213) on Bone Remodeling.",
        "Found a passage in The Heart (p. 4).",
        "1 sentence rest on several sources that say the same thing.",
    ]


def test_fallback_abstention_and_no_evidence() -> None:
    trace = [
        TraceStep("compose", "1 sentences drafted (fallback)", {"composer": "fallback", "error": "ModelUnavailable: cannot reach server"}),
        {"node": "verify", "summary": "abstained (confidence 0.10, dropped 0)", "details": {"dropped": []}},
    ]
    lines = build_rationale("What is X?", [], [], [], trace)
    assert lines == [
        "The language model's answer was not usable (ModelUnavailable: cannot reach server); the answer quotes the evidence instead.",
        "Abstained: the remaining evidence was not strong enough to answer.",
        "Found no evidence to answer from.",
    ]


def test_many_sources_are_summarised() -> None:
    evidence = [Evidence(f"e{i}", f"Passage {i} about bone tissue here.", Citation("b.pdf", f"e{i}", page=i)) for i in range(8)]
    draft = ExtractiveComposer(max_sentences=8, min_relative_score=0.0).compose("bone tissue passage", evidence)
    lines = build_rationale("bone", [], evidence, draft, [], max_evidence_lines=3)
    assert sum(line.startswith("Found a passage") for line in lines) == 3
    assert lines[-1] == f"Also cited {len({e for d in draft for e in d.evidence_ids}) - 3} more sources."
