"""ReportComposer: findings / impression / recommendation from tool measurements and similar prior reports, all cited."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrag.agent.report import SECTIONS, ReportComposer, report_section
from medrag.agent.verify import SupportVerifier
from medrag.errors import ModelUnavailable
from medrag.testing.fake_llm import ScriptedLLM
from medrag.types import Citation, Evidence

LUNGS = (
    "Lung fields cover 29% of the image; patient's right 14%, left 14% (frontal view assumed: image left = patient's right). "
    "Classical threshold segmentation, not a diagnosis. Caution: the film may be rotated."
)
QUESTION = "Is there a pleural effusion on this chest X-ray?"


def measurement(text: str = LUNGS) -> Evidence:
    cid = "segment_lungs_xray:cxr.png"
    citation = Citation("cxr.png", cid, title="segment_lungs_xray on cxr.png", score=1.0,
                        locator={"tool": "segment_lungs_xray", "modality": "xray"})
    return Evidence(cid, text, citation, 1.0, kind="measurement")


def prior(record: str, section: str, text: str, score: float = 0.03) -> Evidence:
    cid = f"{record}#{section}"
    citation = Citation("reports.jsonl", cid, title="reports", locator={"record_id": record, "record_section": section})
    return Evidence(cid, f"{section.capitalize()}: {text}", citation, score)


PRIORS = [
    prior("CXR4", "findings", "The cardiomediastinal silhouette is normal in size and contour. There is a small left pleural effusion."),
    prior("CXR4", "impression", "Small left pleural effusion. Recommend follow-up radiograph in 6 weeks."),
    prior("CXR1", "findings", "There is no pleural effusion. There is no pneumothorax."),
    prior("CXR1", "impression", "Normal chest x-ray."),
    prior("CXR9", "findings", "Clear lungs without effusion."),  # a third prior: beyond max_priors
]
TEXTBOOK = Evidence(
    "book:12", "A pleural effusion is an accumulation of fluid in the pleural space. It blunts the costophrenic angle on a radiograph.",
    Citation("book.pdf", "book:12", title="Radiology", page=12), 0.02, scores={"dense": 0.6},
)
EVIDENCE = [measurement(), *PRIORS, TEXTBOOK]


def cited_ids(report) -> set[str]:
    return {eid for items in report.values() for d in items for eid in d.evidence_ids}


def test_report_section_of_prior_reports() -> None:
    assert report_section(PRIORS[0]) == "findings" and report_section(PRIORS[1]) == "impression"
    assert report_section(measurement()) is None and report_section(TEXTBOOK) is None
    conclusion = Evidence("x", "y", Citation("s", "x", locator={"section": "Conclusion"}))
    assert report_section(conclusion) == "impression"


def test_extractive_report_sections_and_citations() -> None:
    composer = ReportComposer()
    report = composer.compose_report(QUESTION, EVIDENCE)
    assert list(report) == list(SECTIONS) and composer.last_source == "extractive"
    findings, impression, recommendation = (report[s] for s in SECTIONS)
    # What the tool measured on this image leads the findings, quoted and cited to the tool.
    assert findings[0].text.startswith("Lung fields cover 29% of the image")
    assert findings[0].evidence_ids == ["segment_lungs_xray:cxr.png"] and findings[0].signals["measurement"] == 1.0
    # Prior reports are introduced as prior cases, never as this patient's findings.
    prior_findings = [d.text for d in findings[1:]]
    assert prior_findings == [
        "Similar prior case (CXR4): There is a small left pleural effusion.",
        "Similar prior case (CXR1): There is no pleural effusion.",
    ]
    # The framing is ours; the quote is what the evidence must support, word for word.
    verifier = SupportVerifier()
    by_id = {e.evidence_id: e for e in EVIDENCE}
    for d in (s for items in report.values() for s in items):
        quoted = d.quote or d.text
        assert verifier.support(quoted, [by_id[e].text for e in d.evidence_ids]) == 1.0, d.text
        assert (d.quote is not None) == ("prior" in d.signals)
    assert "CXR9#findings" not in cited_ids(report)  # at most max_priors similar reports
    assert any(d.text == "Similar prior case (CXR4): Small left pleural effusion." for d in impression)
    # The textbook answers the question itself.
    assert any(d.evidence_ids == ["book:12"] for d in impression)
    # Tool cautions and prior advice become recommendations.
    texts = [d.text for d in recommendation]
    assert "Classical threshold segmentation, not a diagnosis." in texts
    assert "Caution: the film may be rotated." in texts
    assert "Similar prior case (CXR4) advised: Recommend follow-up radiograph in 6 weeks." in texts
    # Every statement cites evidence that was given.
    given = {e.evidence_id for e in EVIDENCE}
    assert all(d.evidence_ids and set(d.evidence_ids) <= given for items in report.values() for d in items)


def test_sections_are_capped_and_may_be_empty() -> None:
    report = ReportComposer(max_per_section=1).compose_report(QUESTION, EVIDENCE)
    assert all(len(items) <= 1 for items in report.values())
    only_tool = ReportComposer().compose_report(QUESTION, [measurement("Lung fields cover 29% of the image.")])
    assert [d.text for d in only_tool["findings"]] == ["Lung fields cover 29% of the image."]
    assert only_tool["impression"] == [] and only_tool["recommendation"] == []
    assert ReportComposer().compose_report(QUESTION, []) == {name: [] for name in SECTIONS}


def test_sub_questions_are_marked() -> None:
    subs = ["What do the lung measurements show?", "What is a pleural effusion?"]
    report = ReportComposer().compose_report(QUESTION, EVIDENCE, sub_questions=subs)
    assert report["findings"][0].sub_question == 0
    assert any(d.sub_question == 1 and d.evidence_ids == ["book:12"] for d in report["impression"])


def test_real_lung_tool_output_becomes_cited_findings(tmp_path: Path, monkeypatch) -> None:
    from medrag.tools.vision import SegmentLungsXray

    monkeypatch.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    film = np.full((256, 256), 190, np.uint8)
    yy, xx = np.mgrid[:256, :256]
    for cx in (80, 176):  # two dark lung fields
        film[((yy - 130) / 80) ** 2 + ((xx - cx) / 38) ** 2 <= 1] = 40
    Image.fromarray(film).save(tmp_path / "cxr.png")
    result = SegmentLungsXray()(image=str(tmp_path / "cxr.png"), modality="xray", body_part="chest")
    assert result.ok, result.error
    report = ReportComposer().compose_report("Describe the lungs.", result.evidence)
    (tool_ev,) = result.evidence
    assert report["findings"][0].evidence_ids == [tool_ev.evidence_id]
    assert report["findings"][0].text in tool_ev.text and "Lung fields cover" in report["findings"][0].text
    assert any("not a diagnosis" in d.text for d in report["recommendation"])


# -- with a model ----------------------------------------------------------------------------------
LLM_REPORT = """**FINDINGS:**
The lung fields cover 29% of the image [1]. A similar prior case showed a small left effusion [2].
Something uncited about the heart.
IMPRESSION: No effusion is measured by the tool [1][9].
Recommendation:
- A similar prior case advised a follow-up radiograph [3]."""


def test_llm_report_is_parsed_by_section_with_checked_citations() -> None:
    llm = ScriptedLLM([LLM_REPORT])
    composer = ReportComposer(model=llm)
    report = composer.compose_report(QUESTION, EVIDENCE)
    assert composer.last_source == "llm"
    assert [(d.text, d.evidence_ids) for d in report["findings"]] == [
        ("The lung fields cover 29% of the image.", ["segment_lungs_xray:cxr.png"]),
        ("A similar prior case showed a small left effusion.", ["CXR4#findings"]),
    ]
    (impression,) = report["impression"]
    assert impression.evidence_ids == ["segment_lungs_xray:cxr.png"] and impression.signals["invalid_citations"] == 1.0
    assert [d.evidence_ids for d in report["recommendation"]] == [["CXR4#impression"]]
    system, user = llm.prompts[0]
    assert "FINDINGS:" in system["content"] and "never state their findings as this patient's" in system["content"]
    assert "(image tool measurement)" in user["content"] and QUESTION in user["content"]


def test_a_section_the_model_leaves_empty_is_written_extractively() -> None:
    composer = ReportComposer(model=ScriptedLLM(["FINDINGS: The lung fields cover 29% of the image [1]."]))
    report = composer.compose_report(QUESTION, EVIDENCE)
    assert composer.last_source == "llm" and report["findings"][0].signals["llm"] == 1.0
    assert report["recommendation"] and all(d.signals["fallback"] == 1.0 for d in report["recommendation"])


@pytest.mark.parametrize("reply", ["The patient is fine.", "FINDINGS: fine [12].", "", ModelUnavailable("server down")])
def test_an_unusable_model_report_falls_back(reply, caplog) -> None:
    caplog.set_level(logging.WARNING)
    composer = ReportComposer(model=ScriptedLLM([reply]))
    report = composer.compose_report(QUESTION, EVIDENCE)
    assert composer.last_source == "fallback" and composer.last_error
    plain = ReportComposer().compose_report(QUESTION, EVIDENCE)
    assert {k: [d.text for d in v] for k, v in report.items()} == {k: [d.text for d in v] for k, v in plain.items()}
    assert report["findings"][0].text.startswith("Lung fields cover 29%")
    assert all(d.signals["fallback"] == 1.0 for items in report.values() for d in items)
    assert "fell back to the extractive report" in caplog.text
