"""medrag.vision.modality, format 4: image views (augmentation and test-time averaging), image_physics, per-source ensembles,
v3 folders still loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medrag.errors import InputError, ModelUnavailable
from medrag.testing.image_fakes import FakeImageTextEmbedder
from medrag.vision.modality import (
    VIEWS,
    ModalityClassifier,
    _softmax,
    choose_c,
    cv_probabilities,
    image_physics,
    image_statistics,
    image_view,
    train_modality_classifier,
)


def synthetic(folder, n: int = 8):
    """'ct': flat black air, one narrow grey band, a saturated rim; 'mr': noisy background, a brightness slope (bias field)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    samples = []
    for i in range(n):
        for modality in ("ct", "mr"):
            plane = "axial" if i % 2 == 0 else "sagittal"
            ry, rx = (24, 24) if plane == "axial" else (30, 12)
            r = ((yy - 32) / ry) ** 2 + ((xx - 32) / rx) ** 2
            if modality == "ct":
                img = np.where(r < 1, 110 + rng.normal(0, 6, r.shape), 0)
                img = np.where((r >= 0.8) & (r < 1), 255, img)
            else:
                img = np.where(r < 1, 60 + 150 * xx / 64 + rng.normal(0, 10, r.shape), 20 + np.abs(rng.normal(0, 10, r.shape)))
            path = folder / f"{modality}_{i}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(path)
            samples.append((str(path), modality, plane, f"case{i}"))
    return samples


def synthetic_medpix(folder):
    """FOLDER made a MedPix-layout folder (images.jsonl with modality_type and plane) of the ``synthetic`` images."""
    folder.mkdir()
    rows = [{"image_id": f"{case}_{modality}", "case_id": f"{case}_{modality}", "file": path.split("/")[-1],
             "modality_type": modality.upper(), "plane": plane.title()} for path, modality, plane, case in synthetic(folder)]
    (folder / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_views():
    image = Image.fromarray(np.arange(40 * 30, dtype=np.uint8).reshape(30, 40) % 251, "L")
    assert image_view(image, "original") is image
    assert np.array_equal(np.asarray(image_view(image, "hflip")), np.asarray(image)[:, ::-1])
    crop = image_view(image, "crop90")
    assert crop.size == (36, 28) and np.array_equal(np.asarray(crop), np.asarray(image)[1:29, 2:38])
    assert image_view(Image.new("L", (2, 2)), "crop90").size == (2, 2)  # too small to crop: left whole
    assert set(VIEWS) == {"original", "hflip", "crop90"}
    with pytest.raises(InputError, match="unknown image view"):
        image_view(image, "rotate")


def test_physics_cues_are_fixed_length_and_tell_the_phantoms_apart(tmp_path):
    for image in (Image.new("L", (2, 2), 3), Image.new("L", (30, 50), 7), Image.new("RGB", (20, 20), (200, 0, 0)),
                  Image.fromarray(np.arange(64 * 80, dtype=np.uint16).reshape(64, 80))):
        cues = image_physics(image)
        assert cues.shape == (17,) and np.isfinite(cues).all()
    samples = synthetic(tmp_path, n=1)
    ct, mr = (image_physics(Image.open(s[0])) for s in samples)
    assert ct[0] > mr[0]  # soft tissue within 0.02 of its mode: a narrow band on CT
    assert mr[8] > ct[8]  # slope of the plane fitted to the body: the MR phantom's bias field
    assert ct[10] > mr[10]  # exactly flat black patches: CT air
    assert ct[15] > mr[15]  # background pixels exactly at its minimum


def test_cross_validation_with_views_averages_the_views_of_each_sample():
    rng = np.random.default_rng(3)
    y = np.array([0, 1] * 20)
    groups = [f"g{i // 2}" for i in range(40)]
    x = rng.normal(0, 1, (40, 4)) + y[:, None]
    one = cv_probabilities(x, y, groups, 2, 1.0)
    assert one.shape == (40, 2) and np.allclose(one.sum(axis=1), 1.0)
    assert np.allclose(cv_probabilities(x[None], y, groups, 2, 1.0), one)  # a plain matrix is one view
    views = np.stack([x, x + rng.normal(0, 0.1, x.shape)])
    both = cv_probabilities(views, y, groups, 2, 1.0)
    assert both.shape == (40, 2) and np.allclose(both.sum(axis=1), 1.0) and not np.allclose(both, one)
    best, scores = choose_c(views, y, groups, 2, grid=(0.1, 1.0))
    assert best in (0.1, 1.0) and scores[str(best)] == round(float(np.mean(cv_probabilities(views, y, groups, 2, best).argmax(1) == y)), 4)


def test_views_and_physics_are_trained_saved_and_applied_at_prediction(tmp_path):
    samples = synthetic(tmp_path)
    metrics = train_modality_classifier(samples[:12], tmp_path / "clf", eval_samples=samples[12:], min_plane_examples=4,
                                        physics=True, views=("original", "hflip", "crop90"))
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["format_version"] == 6 and config["features"]["name"] == "image_statistics_v3+image_physics_v1"
    assert config["features"]["views"] == ["original", "hflip", "crop90"] and config["features"]["physics"] is True
    stats_dim = image_statistics(Image.new("L", (8, 8))).shape[0]
    assert config["features"]["sources"] == [{"name": "image_statistics_v3", "columns": [0, stats_dim]},
                                             {"name": "image_physics_v1", "columns": [stats_dim, stats_dim + 17]}]
    assert 0.0 <= config["model"]["cv_modality_accuracy"] <= 1.0 and "3 views" in config["model"]["type"]
    assert metrics["heldout"]["modality_accuracy"] == 1.0
    clf = ModalityClassifier(tmp_path / "clf")
    assert clf.views == ("original", "hflip", "crop90")
    with Image.open(samples[12][0]) as image:
        image.load()
        features = clf.features([image])
        prediction = clf.predict(image)
    assert features.shape == (3, 1, stats_dim + 17)
    by_hand = np.mean([_softmax(np.append((f[0] - clf._weights["mean"]) / clf._weights["std"], 1.0)[None] @ clf._weights["head_modality"])
                       for f in features], axis=0)[0]
    assert prediction.probabilities == {m: round(float(p), 4) for m, p in zip(clf.modalities, by_hand)}
    assert prediction.modality == samples[12][1]


def test_an_ensemble_averages_one_regression_per_source(tmp_path):
    samples = synthetic(tmp_path)
    embedder = FakeImageTextEmbedder(16)
    train_modality_classifier(samples[:12], tmp_path / "ens", embedder=embedder, ensemble=True, min_plane_examples=4)
    clf = ModalityClassifier(tmp_path / "ens", embedder=embedder)
    model = clf.config["model"]
    stats_dim = image_statistics(Image.new("L", (8, 8))).shape[0]
    assert [b["columns"] for b in model["blocks"]] == [[0, stats_dim], [stats_dim, stats_dim + 16]]
    assert [b["features"] for b in model["blocks"]] == ["image_statistics_v3", "embedder"] and model["C"] is None
    assert all(str(b["C"]) in b["cv_accuracy"] for b in model["blocks"])  # each block's own C, by cross-validation
    assert 0.0 <= model["cv_modality_accuracy"] <= 1.0 and model["type"].startswith("ensemble")
    with Image.open(samples[13][0]) as image:
        image.load()
        x = (clf.features([image])[0, 0] - clf._weights["mean"]) / clf._weights["std"]
        parts = [_softmax(np.append(x[a:b], 1.0)[None] @ clf._weights[f"head_modality_{i}"])[0]
                 for i, (a, b) in enumerate(block["columns"] for block in model["blocks"])]
        assert np.allclose(clf.probabilities(clf.features([image]))[0], np.mean(parts, axis=0), atol=1e-6)
        assert clf.predict(image).plane in ("axial", "sagittal")  # the plane head: one regression on all features
    with pytest.raises(InputError, match="at least two members"):
        train_modality_classifier(samples, tmp_path / "no", ensemble=True)


def test_bad_views_are_refused(tmp_path):
    samples = synthetic(tmp_path, n=3)
    for views in ((), ("original", "original"), ("original", "rotate")):
        with pytest.raises(InputError, match="views must be"):
            train_modality_classifier(samples, tmp_path / "clf", min_modality_examples=2, views=views)


def test_a_v3_folder_still_loads_and_predicts_as_before(tmp_path):
    samples = synthetic(tmp_path, n=3)
    train_modality_classifier(samples, tmp_path / "clf", min_modality_examples=2, c=1.0)
    with Image.open(samples[0][0]) as image:
        image.load()
    before = ModalityClassifier(tmp_path / "clf").predict(image)
    path = tmp_path / "clf" / "config.json"
    config = json.loads(path.read_text())
    config["format_version"] = 3  # as saved by v3: no views, no physics, no sources
    for key in ("statistics", "physics", "texture", "scattering", "views", "sources"):
        del config["features"][key]
    path.write_text(json.dumps(config))
    old = ModalityClassifier(tmp_path / "clf")
    assert old.views == ("original",) and old.predict(image) == before
    config["format_version"], config["features"]["views"] = 4, ["original", "zoom"]  # a view from a newer version
    path.write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable, match="views"):
        ModalityClassifier(tmp_path / "clf").predict(image)
    config["format_version"] = 7  # a newer format than this version reads
    path.write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable, match="train it again"):
        ModalityClassifier(tmp_path / "clf").predict(image)


def test_the_cli_trains_with_views_and_physics(cli, tmp_path):
    folder = tmp_path / "medpix"
    folder.mkdir()
    rows = []
    for path, modality, plane, case in synthetic(folder):
        rows.append({"image_id": f"{case}_{modality}", "case_id": f"{case}_{modality}", "file": path.split("/")[-1],
                     "modality_type": modality.upper(), "plane": plane.title()})
    (folder / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli("images", "train-modality", "--data", folder, "--out", tmp_path / "clf", "--views", "original,hflip", "--physics")
    assert code == 0, err
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["features"]["views"] == ["original", "hflip"] and config["features"]["physics"] is True and "held-out" in out
    code, _, err = cli("images", "train-modality", "--data", folder, "--out", tmp_path / "bad", "--views", "original,zoom")
    assert code != 0 and "views must be" in err
