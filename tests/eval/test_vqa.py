"""VQA task: closed/open scoring, image vs text input, retrieval without the own case, SURE-VQA baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from medrag.errors import InputError
from medrag.eval.datasets import load_vqa
from medrag.eval.runner import Run, load_run_config
from medrag.eval.vqa import baseline_answers, options_for, score
from medrag.testing import HashingEmbedder
from medrag.testing.fake_llm import ScriptedLLM

QUESTIONS = [
    {"qid": "v1", "image_id": "MPX1_synpic1", "image_file": "medpix/images/MPX1_synpic1.png", "case_id": "MPX1",
     "question": "Is there a midline shift?", "answer": "Yes", "answer_type": "CLOSED", "source": "VQA-RAD"},
    {"qid": "v2", "image_id": "MPX1_synpic1", "image_file": "medpix/images/MPX1_synpic1.png", "case_id": "MPX1",
     "question": "Is this a contrast or non contrast CT?", "answer": "non-contrast", "answer_type": "CLOSED", "source": "VQA-RAD"},
    {"qid": "v3", "image_id": "MPX2_synpic2", "image_file": "medpix/images/MPX2_synpic2.png", "case_id": "MPX2",
     "question": "in what plane is this image taken?", "answer": "axial", "answer_type": None, "source": "VQA-Med-2019"},
    {"qid": "v4", "image_id": "MPX2_synpic2", "image_file": "medpix/images/MPX2_synpic2.png", "case_id": "MPX2",
     "question": "what abnormality is seen in the image?", "answer": "cecal mass (with inflammation)#cecal tumor", "answer_type": None,
     "source": "VQA-Med-2019"},
]
CASES = [
    {"case_id": "MPX1", "title": "Subdural hematoma", "history": "Fall.", "findings": "Midline shift from a subdural hematoma.", "case_diagnosis": "Subdural hematoma"},
    {"case_id": "MPX2", "title": "Cecal mass", "history": "Pain.", "findings": "Cecal mass on axial CT.", "case_diagnosis": "Cecal adenocarcinoma"},
    {"case_id": "MPX3", "title": "Epidural hematoma", "history": "Trauma.", "findings": "Lens-shaped hematoma with midline shift.", "case_diagnosis": "Epidural hematoma"},
]
IMAGES = [
    {"image_id": "MPX1_synpic1", "case_id": "MPX1", "modality": "CT - noncontrast", "plane": "Axial", "caption": "Crescent-shaped subdural collection."},
    {"image_id": "MPX2_synpic2", "case_id": "MPX2", "modality": "CT w/contrast (IV)", "plane": "Axial", "caption": "Mass in the cecum."},
]


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """The layout of ../shared/data in miniature: vqa/vqa.jsonl, medpix/images/*.png, images.jsonl, cases.jsonl."""
    root = tmp_path / "data"
    (root / "vqa").mkdir(parents=True)
    (root / "medpix" / "images").mkdir(parents=True)
    for image in IMAGES:
        Image.new("L", (16, 16), 80).save(root / "medpix" / "images" / f"{image['image_id']}.png")
    (root / "vqa" / "vqa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (root / "medpix" / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in IMAGES))
    (root / "medpix" / "cases.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CASES))
    return root


class LooksAtImages(ScriptedLLM):
    """A fake VLM: right when it is shown the image, wrong without it (the reply says which)."""

    def __init__(self) -> None:
        super().__init__([], name="fake-vlm")

    def _next(self) -> str:
        messages, images, _ = self.calls[-1]
        if not images:
            return "I cannot tell without the image."
        assert isinstance(images[0], Image.Image) and images[0].mode == "RGB"
        question = messages[-1]["content"]
        for marker, reply in (("midline", "Yes, there is."), ("contrast", "Non-contrast."), ("plane", "axial"), ("abnormality", "a cecal mass")):
            if marker in question:
                return reply
        return "unknown"


class TextOnly(ScriptedLLM):
    """A fake text-only model: refuses images; with notes in the prompt it gets closed questions right and open ones wrong."""

    def __init__(self) -> None:
        super().__init__([], name="fake-text-llm")

    def _next(self) -> str | BaseException:
        messages, images, _ = self.calls[-1]
        if images:
            return InputError("fake-text-llm is a text-only model: it cannot read images")
        prompt = messages[-1]["content"]
        with_notes = "Similar prior cases" in prompt
        for marker, right, wrong in (("midline", "yes", "no"), ("contrast", "non-contrast", "contrast"),
                                     ("plane", "axial", "sagittal"), ("abnormality", "cecal mass", "no idea")):
            if marker in prompt.split("Question:")[1]:
                return right if with_notes == (marker in ("midline", "contrast")) else wrong
        return "unknown"


def vqa_config(tmp_path: Path, data_root: Path, **vqa) -> object:
    path = tmp_path / "vqa.yaml"
    path.write_text(json.dumps({"name": "v", "task": "vqa", "llm": "scripted", "embedder": "hashing:128",
                                "dataset": {"kind": "vqa", "path": str(data_root / "vqa")}, "vqa": vqa}))
    return load_run_config(path)


def test_scoring_closed_and_open_answers() -> None:
    items = {it["qid"]: it for it in QUESTIONS}
    v1, v2 = (load_item(items[q]) for q in ("v1", "v2"))
    assert options_for(v1) == ["yes", "no"]
    assert score(v1, "Yes, there is.")["closed_correct"] == 1.0
    assert score(v1, "Maybe.") == {"closed_correct": 0.0, "parsed": 0.0, "parsed_answer": ""}  # unparseable counts wrong
    assert score(v1, "yes or no")["parsed"] == 0.0
    assert score(v2, "non contrast")["closed_correct"] == 1.0
    assert score(v2, "Contrast-enhanced CT")["closed_correct"] == 0.0  # 'contrast' is the other option
    v4 = load_item(items["v4"])
    assert score(v4, "cecal tumor") == {"open_f1": 1.0, "open_em": 1.0}  # '#' separates alternatives
    assert score(v4, "The cecal mass.")["open_em"] == 1.0  # '(...)' is optional, articles ignored
    assert 0.0 < score(v4, "mass in the colon")["open_f1"] < 1.0


def load_item(row: dict):
    from medrag.eval.datasets import EvalItem, _answer_type

    return EvalItem(row["qid"], row["question"], answer=row["answer"], meta={"answer_type": row["answer_type"] or _answer_type(row["answer"])})


def test_a_vlm_gets_the_pixels_and_the_baselines_sit_beside_it(tmp_path: Path, data_root: Path) -> None:
    config = vqa_config(tmp_path, data_root, conditions=["image", "question_only"], image_input="pixels")
    llm = LooksAtImages()
    out = tmp_path / "run"
    summary = Run(config, out, llm=llm, progress=False).run()
    c = summary["conditions"]
    assert set(c) == {"image", "question_only", "random", "majority"}
    assert c["image"]["closed_correct"]["mean"] == 1.0 and c["image"]["closed_correct"]["n"] == 2
    assert c["image"]["open_em"]["mean"] == 1.0 and c["image"]["open_f1"]["n"] == 2
    assert c["question_only"]["closed_correct"]["mean"] == 0.0 and c["question_only"]["parsed"]["mean"] == 0.0
    assert sum(1 for _, images, _ in llm.calls if images) == 4  # the image condition only
    prompts = [messages[-1]["content"] for messages, _, _ in llm.calls]
    assert any("midline" in p and "Answer with one of: no, yes." in p for p in prompts)
    assert "latency_p50_ms" in c["image"] and "latency_p50_ms" not in c["random"]  # baselines need no model
    assert summary["image_input"] == "pixels"
    assert {"summary.json", "summary.md", "per_question.csv", "vqa.png"} <= {p.name for p in out.iterdir()}
    assert "**majority**" in (out / "summary.md").read_text()
    # resumable: a second run asks the model nothing
    again = LooksAtImages()
    Run(config, out, llm=again, progress=False).run()
    assert again.calls == []


def test_a_text_only_model_gets_descriptions_and_other_cases(tmp_path: Path, data_root: Path) -> None:
    config = vqa_config(tmp_path, data_root, conditions=["image_retrieval", "question_only"], passages=2)
    llm = TextOnly()
    summary = Run(config, tmp_path / "run", llm=llm, embedder=HashingEmbedder(128), progress=False).run()
    assert summary["image_input"] == "text" and any("text-only" in n for n in summary["notes"])
    assert llm.calls[0][1] and all(not images for _, images, _ in llm.calls[1:])  # asked once, then text only
    prompt = next(m[-1]["content"] for m, _, _ in llm.calls[1:] if "Question: Is there a midline shift?" in m[-1]["content"] and "Similar" in m[-1]["content"])
    assert "Image description: CT - noncontrast, Axial image. Crescent-shaped subdural collection." in prompt
    cases = prompt.split("Similar prior cases")[1].split("Question:")[0]
    assert "Epidural" in cases or "Lens-shaped" in cases
    assert "subdural" not in cases.lower()  # never the question's own case
    c = summary["conditions"]
    assert c["image_retrieval"]["closed_correct"]["mean"] == 1.0 and c["image_retrieval"]["open_f1"]["mean"] == 0.0
    assert c["question_only"]["closed_correct"]["mean"] == 0.0 and c["question_only"]["open_em"]["mean"] == 1.0


def test_extractive_reports_only_the_answer_baselines(tmp_path: Path, data_root: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(json.dumps({"name": "e", "task": "vqa", "dataset": {"kind": "vqa", "path": str(data_root / "vqa" / "vqa.jsonl")}}))
    summary = Run(load_run_config(path), tmp_path / "run", progress=False).run()
    assert set(summary["conditions"]) == {"random", "majority"}
    assert "cannot answer visual questions" in summary["notes"][0]


def test_baseline_answers_are_seeded_and_typed() -> None:
    items = [load_item(q) for q in QUESTIONS]
    a, b = baseline_answers(items, 0), baseline_answers(items, 0)
    assert a == b
    assert a["random"]["v1"] in {"yes", "no"} and a["random"]["v2"] in {"non contrast", "contrast"}
    assert a["majority"]["v3"] in {"axial", "cecal mass with inflammation cecal tumor"}


def test_bad_vqa_input(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(InputError, match="unknown VQA condition"):
        Run(vqa_config(tmp_path, data_root, conditions=["telepathy"]), tmp_path / "run", llm=LooksAtImages(), progress=False).run()
    empty = data_root / "vqa" / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="holds no questions"):
        load_vqa(empty)


@pytest.mark.data
def test_every_real_closed_question_has_its_options(shared_data: Path) -> None:
    items = [it for it in load_vqa(shared_data / "vqa" / "vqa.jsonl") if it.meta["answer_type"] == "CLOSED"]
    assert len(items) == 55
    for item in items:
        options = options_for(item)
        assert len(options) == 2 and score(item, options[0])["closed_correct"] == 1.0 and score(item, options[1])["closed_correct"] == 0.0, item.question
