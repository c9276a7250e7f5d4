"""Modality detection at load time: the rules, and a trained classifier when one is configured."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vision_samples import chest_xray_array

from medrag.vision import load_image
from medrag.vision.modality import (
    MODEL_ENV,
    configured_model_folder,
    detect_modality,
    guess_modality,
    train_modality_classifier,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "embed"))
from test_modality_classifier import synthetic


def test_dark_zoomed_slice_without_background_is_not_called_xray(tmp_path: Path):
    """A cropped slice (no black frame, but mostly dark tissue) was called 'xray' by the first rules."""
    rng = np.random.default_rng(0)
    arr = np.clip(rng.normal(55, 20, (128, 128)), 20, 255)
    arr[40:80, 40:90] = 170  # one bright structure
    Image.fromarray(arr.astype(np.uint8), "L").save(tmp_path / "crop.png")
    img = load_image(tmp_path / "crop.png")
    assert img.modality == "unknown" and "cropped CT or MR" in img.metadata["modality_reason"]
    film, _ = chest_xray_array(128)
    Image.fromarray(film, "L").save(tmp_path / "film.png")
    assert load_image(tmp_path / "film.png").modality == "xray"


def test_no_model_configured_means_rules(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setenv("MEDRAG_HOME", str(tmp_path))
    assert configured_model_folder() is None
    film, _ = chest_xray_array(64)
    Image.fromarray(film, "L").save(tmp_path / "film.png")
    img = load_image(tmp_path / "film.png")
    assert detect_modality(img) == guess_modality(img)


def test_configured_classifier_decides_and_rules_keep_colour(tmp_path: Path, monkeypatch):
    samples = synthetic(tmp_path, n=8)
    train_modality_classifier(samples, tmp_path / "home" / "models" / "modality", c=1.0)
    monkeypatch.delenv(MODEL_ENV, raising=False)
    monkeypatch.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    assert configured_model_folder() == tmp_path / "home" / "models" / "modality"
    ct = load_image(next(s[0] for s in samples if s[1] == "ct"))
    assert ct.modality == "ct" and ct.metadata["modality_reason"].startswith("trained classifier modality")
    assert ct.metadata["modality_source"] == "classifier"
    assert load_image(next(s[0] for s in samples if s[1] == "mr")).modality == "mr"
    # The model knows no photographs: a colour image stays 'photo' by the rules.
    Image.new("RGB", (40, 30), (180, 40, 30)).save(tmp_path / "photo.png")
    assert load_image(tmp_path / "photo.png").modality == "photo"
    # A caller's word and DICOM tags still win over any detection.
    assert load_image(next(s[0] for s in samples if s[1] == "ct"), modality="mr").modality == "mr"
    # $MEDRAG_MODALITY_MODEL names another folder; a broken one falls back to the rules (with a log line).
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "nowhere"))
    img = load_image(next(s[0] for s in samples if s[1] == "ct"))
    assert detect_modality(img) == guess_modality(img)


@pytest.mark.slow
@pytest.mark.data
def test_rules_on_medpix_and_the_shared_radiographs(shared_data: Path):
    """Measured on all 763 MedPix PNGs (2026-11-26): 77 (10.1%) CT/MR called 'xray' (181 with the first rules);
    all 11 radiographs of ../shared/data/images called 'xray'. On the first 150 MedPix images here."""
    import json

    rows = [json.loads(line) for line in (shared_data / "medpix/images.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("file") and (shared_data / "medpix" / r["file"]).is_file()][:150]
    guesses = [load_image(shared_data / "medpix" / r["file"]).modality for r in rows]
    assert guesses.count("xray") / len(guesses) < 0.15
    films = [json.loads(line) for line in (shared_data / "images/index.jsonl").read_text().splitlines()]
    films = [f for f in films if f["modality"].split()[0] in ("X-ray", "CR")]
    assert films and all(load_image(shared_data / "images" / f["file"]).modality == "xray" for f in films)


def test_image_features_in_worker_processes_equal_those_computed_here(tmp_path: Path, caplog):
    """Many images go to worker processes; their features are the same numbers, and a bad file is skipped either way."""
    from medrag.vision import modality

    rng = np.random.default_rng(3)
    samples = []
    for i in range(modality.PARALLEL_FROM + 2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i % 7, 48), dtype=np.uint8), "L").save(path)
        samples.append((str(path), "ct" if i % 2 else "mr", None, f"case{i}"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    samples.insert(5, (str(tmp_path / "broken.png"), "ct", None, "broken"))
    blocks, views = (modality.TEXTURE,), ("original", "hflip")
    modality._FEATURE_CACHE.clear()
    here, kept_here = modality._features_of(samples, None, blocks, views, workers=1)
    modality._FEATURE_CACHE.clear()
    with caplog.at_level("WARNING"):
        pooled, kept_pooled = modality._features_of(samples, None, blocks, views, workers=2)
    assert kept_here == kept_pooled and 5 not in kept_pooled and len(kept_pooled) == len(samples) - 1
    assert here.shape == (2, len(samples) - 1, here.shape[-1]) and np.array_equal(here, pooled)
    assert "broken.png" in caplog.text


def test_a_full_feature_cache_evicts_other_images_never_those_being_read(tmp_path: Path, monkeypatch):
    from medrag.vision import modality

    samples = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((20, 20), 40 * i, dtype=np.uint8), "L").save(path)
        samples.append((str(path), "ct", None, f"case{i}"))
    modality._FEATURE_CACHE.clear()
    modality._features_of(samples[:2], None, (modality.PHYSICS,))  # cached: 2 entries
    modality._FEATURE_CACHE[("/elsewhere.png", 0.0, "original", modality.PHYSICS)] = np.zeros(17, np.float32)
    monkeypatch.setattr(modality, "FEATURE_CACHE_LIMIT", 3)  # 3 cached + 1 new > 3: eviction
    feats, kept = modality._features_of(samples[:3], None, (modality.PHYSICS,))
    assert kept == [0, 1, 2] and feats.shape == (1, 3, 17)
    assert {k[0] for k in modality._FEATURE_CACHE} == {s[0] for s in samples[:3]}  # only the other image went
