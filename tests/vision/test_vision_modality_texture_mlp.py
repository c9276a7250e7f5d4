"""medrag.vision.modality, format 5: the image_texture block and the perceptron (mlp) modality head."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medrag.errors import InputError, ModelUnavailable
from medrag.testing.image_fakes import FakeImageTextEmbedder
from medrag.vision.modality import (
    HEADS,
    MLP_ALPHA_GRID,
    TEXTURE_PATTERNS,
    ModalityClassifier,
    _fit_mlp,
    _mlp_logits,
    _softmax,
    choose_c,
    cv_probabilities,
    image_statistics,
    image_texture,
    train_modality_classifier,
)

from test_vision_modality_views import synthetic, synthetic_medpix

TEXTURE_DIM = sum(2 * (n + 2) for n, _ in TEXTURE_PATTERNS)


def test_texture_is_fixed_length_histograms_and_tells_noise_from_smooth():
    for image in (Image.new("L", (2, 2), 3), Image.new("L", (30, 50), 7), Image.new("RGB", (20, 20), (200, 0, 0)),
                  Image.fromarray(np.arange(64 * 80, dtype=np.uint16).reshape(64, 80))):
        texture = image_texture(image)
        assert texture.shape == (TEXTURE_DIM,) and np.isfinite(texture).all()
    # Each (pattern, mask) histogram sums to one (or to zero for an empty mask).
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (256, 256)).astype(np.uint8), "L")
    smooth = Image.fromarray(np.tile(np.linspace(0, 255, 256), (256, 1)).astype(np.uint8), "L")
    a, b = image_texture(noisy), image_texture(smooth)
    start = 0
    for n, _ in TEXTURE_PATTERNS:
        for _mask in range(2):
            assert a[start:start + n + 2].sum() == pytest.approx(1.0, abs=1e-5)
            start += n + 2
    # Last bin: non-uniform patterns (common in noise, rare on a ramp); a ramp is one edge pattern (half the neighbours).
    assert a[9] > 0.2 and b[9] < 0.05 and b[5] > 0.9 > a[5]
    assert np.array_equal(image_texture(noisy), a)  # deterministic


def test_mlp_head_fits_predicts_and_keeps_classes_a_fold_never_saw():
    rng = np.random.default_rng(1)
    y = np.array([0, 1, 2] * 30)
    x = rng.normal(0, 1, (90, 5)) + 2.0 * np.eye(3)[y] @ rng.normal(0, 1, (3, 5))
    params = _fit_mlp(x, y, 3, 0.1, None)
    assert params["w1"].shape == (5, 256) and params["w2"].shape == (256, 3) and params["b2"].shape == (3,)
    assert np.mean(_mlp_logits(x, params).argmax(1) == y) > 0.9
    # Two classes present of three: scikit-learn's single logistic output becomes two logits; the third never wins.
    two = y < 2
    params = _fit_mlp(x[two], y[two], 3, 0.1, None)
    logits = _mlp_logits(x, params)
    assert logits.shape == (90, 3) and not (logits.argmax(1) == 2).any()
    assert np.mean(logits[two].argmax(1) == y[two]) > 0.9


def test_cross_validation_chooses_alpha_for_the_mlp_head():
    rng = np.random.default_rng(3)
    y = np.array([0, 1] * 20)
    groups = [f"g{i // 2}" for i in range(40)]
    x = rng.normal(0, 1, (40, 4)) + y[:, None]
    probs = cv_probabilities(x, y, groups, 2, 0.3, head="mlp")
    assert probs.shape == (40, 2) and np.allclose(probs.sum(axis=1), 1.0)
    best, scores = choose_c(x, y, groups, 2, head="mlp")
    assert best in MLP_ALPHA_GRID and set(scores) == {str(a) for a in MLP_ALPHA_GRID}
    # Ties go to the stronger regularisation: the largest alpha, the smallest C.
    assert HEADS["mlp"].regularisation(1.0) > HEADS["mlp"].regularisation(0.1)
    assert HEADS["logistic"].regularisation(0.01) > HEADS["logistic"].regularisation(1.0)
    with pytest.raises(InputError, match="unknown classifier head"):
        choose_c(x, y, groups, 2, head="forest")


def test_texture_and_mlp_are_trained_saved_and_applied_at_prediction(tmp_path):
    samples = synthetic(tmp_path)
    metrics = train_modality_classifier(samples[:12], tmp_path / "clf", eval_samples=samples[12:], min_plane_examples=4,
                                        texture=True, head="mlp", views=("original", "hflip"))
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    stats_dim = image_statistics(Image.new("L", (8, 8))).shape[0]
    assert config["format_version"] == 6 and config["features"]["name"] == "image_statistics_v3+image_texture_v1"
    assert config["features"]["texture"] is True
    assert config["features"]["sources"] == [{"name": "image_statistics_v3", "columns": [0, stats_dim]},
                                             {"name": "image_texture_v1", "columns": [stats_dim, stats_dim + TEXTURE_DIM]}]
    model = config["model"]
    assert model["head"] == "mlp" and model["alpha"] in MLP_ALPHA_GRID and "C" not in model
    assert model["C_plane"] is not None and "perceptron" in model["type"]
    assert metrics["heldout"]["modality_accuracy"] == 1.0
    clf = ModalityClassifier(tmp_path / "clf")
    assert clf.recipe == {"statistics": True, "physics": False, "texture": True, "scattering": False, "views": ("original", "hflip")}
    with np.load(tmp_path / "clf" / "weights.npz") as saved:
        assert {"head_modality.w1", "head_modality.b1", "head_modality.w2", "head_modality.b2", "head_plane"} <= set(saved.files)
    with Image.open(samples[12][0]) as image:
        image.load()
        features = clf.features([image])
        prediction = clf.predict(image)
    assert features.shape == (2, 1, stats_dim + TEXTURE_DIM)
    w = clf._weights
    by_hand = np.mean([_softmax(np.maximum(((f - w["mean"]) / w["std"]) @ w["head_modality.w1"] + w["head_modality.b1"], 0)
                                @ w["head_modality.w2"] + w["head_modality.b2"]) for f in features], axis=0)[0]
    assert prediction.probabilities == {m: round(float(p), 4) for m, p in zip(clf.modalities, by_hand)}
    assert prediction.modality == samples[12][1] and prediction.plane in ("axial", "sagittal")
    config["model"]["head"] = "forest"  # a head of a newer version
    (tmp_path / "clf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable, match="'forest' head"):
        ModalityClassifier(tmp_path / "clf").predict(image)


def test_bad_head_options_are_refused_before_any_work(tmp_path):
    samples = synthetic(tmp_path, n=3)
    with pytest.raises(InputError, match="unknown classifier head"):
        train_modality_classifier(samples, tmp_path / "a", head="forest")
    with pytest.raises(InputError, match="ensemble is made of logistic"):
        train_modality_classifier(samples, tmp_path / "b", embedder=FakeImageTextEmbedder(9), ensemble=True, head="mlp")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_cli_trains_texture_and_the_mlp_head(cli, tmp_path):
    folder = synthetic_medpix(tmp_path / "medpix")
    code, out, err = cli("images", "train-modality", "--data", folder, "--out", tmp_path / "clf", "--texture", "--head", "mlp")
    assert code == 0, err
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["features"]["texture"] is True and config["model"]["head"] == "mlp" and "held-out" in out
    code, _, err = cli("images", "train-modality", "--data", folder, "--out", tmp_path / "bad", "--head", "forest")
    assert code != 0 and "unknown classifier head" in err and not (tmp_path / "bad").exists()
