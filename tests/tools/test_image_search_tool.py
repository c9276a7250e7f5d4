"""The search_images tool: cited similar cases, text queries, modality routing, registry construction."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

import medrag.testing.image_fakes  # noqa: F401  registers fake-image-text
from medrag.config import load_settings
from medrag.errors import IndexNotFound, ToolError
from medrag.ingest.images import ingest_images
from medrag.registry import tools
from medrag.testing.image_fakes import FakeImageTextEmbedder
from medrag.tools.base import Tool
from medrag.tools.image_search import ImageSearcher, ImageSearchTool
from medrag.vision.modality import ModalityPrediction


def picture(kind: str, k: int = 0) -> Image.Image:
    image = Image.new("L", (48, 48), 0)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if kind == "circle" else draw.rectangle)([6 + k, 6, 40, 40 - k], fill=255)
    return image


@pytest.fixture
def settings(home, tmp_path):
    import json

    folder = tmp_path / "cases"
    (folder / "images").mkdir(parents=True)
    rows = []
    for case, (kind, modality) in enumerate([("circle", "CT"), ("circle", "MR"), ("square", "CT"), ("square", "MR")]):
        for k in range(2):
            picture(kind, 2 * k).save(folder / "images" / f"c{case}_{k}.png")
            rows.append({"image_id": f"c{case}_{k}", "case_id": f"CASE{case}", "file": f"images/c{case}_{k}.png",
                         "modality_type": modality, "caption": f"{kind} lesion on {modality}"})
    (folder / "images.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    settings = load_settings()
    ingest_images([folder], index_name="cases", embedder=FakeImageTextEmbedder(64), settings=settings, progress=False)
    return settings


class FixedClassifier:
    """Says the same modality for every image (the trained classifier is tested on its own)."""

    modalities = ["ct", "mr"]

    def __init__(self, modality: str, confidence: float = 0.9) -> None:
        self.prediction = ModalityPrediction(modality, confidence)

    def predict(self, image) -> ModalityPrediction:
        return self.prediction


def test_registry_builds_it_lazily_with_the_modalities_it_serves(settings):
    tool = tools.create("search_images", index="cases", settings=settings)
    assert isinstance(tool, Tool) and tool.searcher is None  # opened on first use
    assert tool.modalities == frozenset({"ct", "mr", "unknown"})  # unknown: routed by its own classifier
    with pytest.raises(IndexNotFound):
        tools.create("search_images", index="nope", settings=settings)
    with pytest.raises(ToolError, match="index=NAME"):
        ImageSearchTool()


def test_image_query_returns_cited_cases_of_the_routed_modality(settings, tmp_path):
    query = tmp_path / "q.png"
    picture("circle", 1).save(query)
    searcher = ImageSearcher.open("cases", settings)
    searcher.classifier = FixedClassifier("mr")
    result = ImageSearchTool(searcher)(image=str(query), k=3)
    assert result.ok, result.error
    assert result.output["route"] == {"modality": "mr", "by": "classifier", "confidence": 0.9}
    assert all(ev.citation.locator["modality"] == "mr" for ev in result.evidence)
    top = result.evidence[0]
    assert top.citation.locator["case_id"] == "CASE1" and "circle lesion" in top.text and top.kind == "figure"
    assert top.citation.locator["image"].endswith(".png") and result.output["cases"][0] == "CASE1"


def test_routing_falls_back_to_all_when_unsure_or_absent(settings, tmp_path):
    query = tmp_path / "q.png"
    picture("square", 1).save(query)  # not a copy of an indexed file (copies are left out of the results)
    searcher = ImageSearcher.open("cases", settings)
    searcher.classifier = FixedClassifier("ct", confidence=0.4)
    hits, details = searcher.search_image(query, 8)
    assert details["route"]["by"] == "classifier" and "unsure" in details["route"]["note"] and len(hits) == 8
    hits, details = searcher.search_image(query, 8, modality="xray")
    assert hits == []  # an explicit modality is a hard filter
    searcher.classifier = None  # the heuristic guess: a grey image with a black frame is 'unknown'
    hits, details = searcher.search_image(query, 8)
    assert details["route"]["by"] == "heuristic" and "all searched" in details["route"]["note"]


def test_the_query_image_itself_is_left_out(settings):
    searcher = ImageSearcher.open("cases", settings)
    indexed = searcher.index.records["c0_0"].path
    hits, details = searcher.search_image(indexed, 3, modality="any")
    # c1_0 holds the same pixels as c0_0 (same file content): copies of the query are left out too.
    assert details["excluded"] == ["c0_0", "c1_0"] and not {"c0_0", "c1_0"} & {h.record.image_id for h in hits}


def test_text_query_and_bad_calls(settings):
    tool = tools.create("search_images", index="cases", settings=settings)
    result = tool(query="square lesion on CT", k=2)
    assert result.ok and result.evidence[0].citation.locator["caption"] == "square lesion on CT"
    assert not tool().ok and "either an image or a text query" in tool().error
    assert not tool(image="a.png", query="b").ok
    missing = tool(image="/no/such.png")
    assert not missing.ok and "no such image" in missing.error
