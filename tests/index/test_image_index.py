"""ImageIndex: add, replace, search by image and text, evidence with citations, atomic save and checked load."""

from __future__ import annotations

import numpy as np
import pytest

from medrag.embed.base import EmbedderInfo, l2_normalise
from medrag.errors import IndexCorrupt, IndexMismatch, IndexNotFound, InputError
from medrag.index.image_index import ImageIndex, ImageIndexStore, ImageRecord

INFO = EmbedderInfo(name="fake-image-text:16", fingerprint="fp-1", dim=16)


def record(i: int, case: str, modality: str = "ct", caption: str = "") -> ImageRecord:
    return ImageRecord(image_id=f"img{i}", path=f"/data/img{i}.png", source=f"img{i}.png", doc_id="images:data",
                       content_hash=f"h{i}", caption=caption, case_id=case, title=f"Case {case}", diagnosis="Bladder diverticulum",
                       modality=modality, plane="Axial")


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).normal(size=(n, 16)))


@pytest.fixture
def index() -> ImageIndex:
    idx = ImageIndex("cases", INFO)
    records = [record(0, "A", "ct", "bladder wall thickened"), record(1, "A", "mr", "liver lesion"), record(2, "B", "ct"),
               record(3, "C", "mr", "brain mass")]
    idx.add(records, vectors(4), vectors(4, seed=1))
    return idx


def test_counts_modalities_and_captionless_records(index):
    assert len(index) == 4 and index.modalities == {"ct": 2, "mr": 2}
    assert len(index.captions) == 4  # record 2 has no caption: its case title and diagnosis are its text
    bare = ImageIndex("bare", INFO)
    nothing = ImageRecord(image_id="x", path="/x.png", source="x.png", doc_id="d")
    bare.add([nothing], vectors(1), vectors(1))
    assert len(bare.images) == 1 and len(bare.captions) == 0  # no text at all: image search only


def test_search_by_image_finds_itself_first_and_filters(index):
    query = index.images.reconstruct("img1")
    hits = index.search_by_image(query, k=2)
    assert hits[0].record.image_id == "img1" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    routed = index.search_by_image(query, k=5, where={"modality": "ct"})
    assert {h.record.modality for h in routed} == {"ct"} and len(routed) == 2
    assert all(h.record.image_id != "img1" for h in index.search_by_image(query, k=3, exclude=["img1"]))


def test_search_by_text_fuses_image_and_caption_rankings(index):
    query = index.captions.reconstruct("img3")
    hits = index.search_by_text(query, k=4)
    assert hits[0].record.image_id == "img3"
    assert {"caption", "fused"} <= set(hits[0].scores)


def test_evidence_cites_case_image_and_caption(index):
    hit = index.search_by_image(index.images.reconstruct("img0"), k=1)[0]
    ev = hit.evidence("cases")
    assert ev.evidence_id == "image:img0" and ev.kind == "figure"
    assert "Case A" in ev.text and "bladder wall thickened" in ev.text and "Bladder diverticulum" in ev.text
    assert ev.citation.chunk_id == "img0" and ev.citation.source == "img0.png"
    assert ev.citation.locator["case_id"] == "A" and ev.citation.locator["image"] == "/data/img0.png"
    assert ev.citation.locator["caption"] == "bladder wall thickened" and ev.citation.locator["modality"] == "ct"


def test_adding_an_id_again_replaces_it(index):
    index.add([record(0, "Z", "mr", "new caption")], vectors(1, seed=5), vectors(1, seed=6))
    assert len(index) == 4 and index.records["img0"].case_id == "Z" and index.modalities == {"ct": 1, "mr": 3}
    assert index.remove(["img0", "nope"]) == 1 and "img0" not in index.images and "img0" not in index.captions
    assert index.remove_doc("images:data") == 3 and len(index) == 0


def test_bad_input(index):
    with pytest.raises(InputError, match="vectors"):
        index.add([record(9, "Q")], vectors(2))
    with pytest.raises(InputError, match="duplicate"):
        index.add([record(9, "Q"), record(9, "Q")], vectors(2))


def test_save_load_round_trip_and_store(index, tmp_path):
    store = ImageIndexStore(tmp_path / "image-indexes")
    store.save(index)
    assert store.names() == ["cases"] and store.info("cases")["counts"] == {"images": 4, "captions": 4, "cases": 3}
    assert store.info("cases")["modalities"] == {"ct": 2, "mr": 2}
    loaded = store.open("cases", INFO)
    assert loaded.records == index.records
    query = index.images.reconstruct("img2")
    assert [h.record.image_id for h in loaded.search_by_image(query, 4)] == [h.record.image_id for h in index.search_by_image(query, 4)]
    with pytest.raises(IndexMismatch, match="fake-image-text"):
        store.open("cases", EmbedderInfo(name="other", fingerprint="fp-2", dim=16))
    with pytest.raises(IndexNotFound, match="medrag ingest"):
        store.open("missing")


def test_corrupt_folders_are_refused(index, tmp_path):
    store = ImageIndexStore(tmp_path)
    path = store.save(index)
    (path / "records.jsonl").write_text((path / "records.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(IndexCorrupt, match="inconsistent"):
        store.open("cases")
    (path / "manifest.json").write_text('{"format": "medrag.text-index", "format_version": 1, "embedder": {"name": "x", "fingerprint": "y", "dim": 16}}')
    with pytest.raises(IndexCorrupt, match="image-index"):
        store.open("cases")


def test_a_failed_save_leaves_the_previous_index(index, tmp_path, monkeypatch):
    store = ImageIndexStore(tmp_path)
    store.save(index)
    index.add([record(7, "N")], vectors(1, 7), vectors(1, 8))

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr("medrag.index.image_index.write_jsonl", boom)
    with pytest.raises(OSError):
        store.save(index)
    assert len(store.open("cases")) == 4
