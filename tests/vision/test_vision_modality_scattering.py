"""medrag.vision.modality, format 6: the image_scattering block and ensembles of up to three members."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medrag.errors import InputError
from medrag.testing.image_fakes import FakeImageTextEmbedder
from medrag.vision.modality import (
    ModalityClassifier,
    _ensemble_members,
    _softmax,
    image_scattering,
    image_statistics,
    image_texture,
    train_modality_classifier,
)

from test_vision_modality_views import synthetic, synthetic_medpix

SCATTERING_DIM = 2 * (1 + 4 * 8 + 8 * 8 * 6)  # mean and spread of 417 channels


def dims() -> tuple[int, int]:
    blank = Image.new("L", (8, 8))
    return image_statistics(blank).shape[0], image_texture(blank).shape[0]


def test_scattering_block_is_fixed_length_and_tells_noise_from_smooth():
    for image in (Image.new("L", (2, 2), 3), Image.new("L", (30, 50), 7), Image.new("RGB", (20, 20), (200, 0, 0)),
                  Image.fromarray(np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)), Image.new("RGBA", (40, 40))):
        features = image_scattering(image)
        assert features.shape == (SCATTERING_DIM,) and features.dtype == np.float32 and np.isfinite(features).all()
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(np.clip(128 + rng.normal(0, 40, (256, 256)), 0, 255).astype(np.uint8), "L")
    smooth = Image.fromarray(np.tile(np.linspace(0, 255, 256), (256, 1)).astype(np.uint8), "L")
    a, b = image_scattering(noisy), image_scattering(smooth)
    finest = slice(1, 9)  # order 1, finest scale, all eight orientations (means)
    assert a[finest].min() > 2 * b[finest].max()
    assert np.array_equal(image_scattering(noisy), a)  # deterministic
    # Contrast-invariant: the same image at half the grey levels has nearly the same coefficients.
    dim = Image.fromarray((np.asarray(noisy) // 2).astype(np.uint8), "L")
    assert np.abs(image_scattering(dim)[finest] - a[finest]).max() < 0.1


def test_ensemble_members_group_grey_level_blocks_and_keep_scattering_and_embedder_alone():
    sources = [{"name": "image_statistics_v3", "columns": [0, 10]}, {"name": "image_texture_v1", "columns": [10, 14]},
               {"name": "image_scattering_v1", "columns": [14, 20]}, {"name": "embedder", "columns": [20, 28]}]
    assert _ensemble_members(sources) == [{"features": "image_statistics_v3+image_texture_v1", "columns": [0, 14]},
                                          {"features": "image_scattering_v1", "columns": [14, 20]},
                                          {"features": "embedder", "columns": [20, 28]}]
    assert _ensemble_members(sources[2:]) == [{"features": "image_scattering_v1", "columns": [14, 20]},
                                              {"features": "embedder", "columns": [20, 28]}]
    assert _ensemble_members(sources[:2]) == [{"features": "image_statistics_v3+image_texture_v1", "columns": [0, 14]}]


def test_a_three_member_ensemble_is_trained_saved_and_averaged_at_prediction(tmp_path):
    samples = synthetic(tmp_path)
    embedder = FakeImageTextEmbedder(16)
    metrics = train_modality_classifier(samples[:12], tmp_path / "clf", eval_samples=samples[12:], embedder=embedder,
                                        texture=True, scattering=True, ensemble=True, min_plane_examples=4)
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    stats_dim, texture_dim = dims()
    grey = stats_dim + texture_dim
    assert config["format_version"] == 6 and config["features"]["scattering"] is True
    assert config["features"]["name"] == "image_statistics_v3+image_texture_v1+image_scattering_v1+embedder"
    model = config["model"]
    assert [b["features"] for b in model["blocks"]] == ["image_statistics_v3+image_texture_v1", "image_scattering_v1", "embedder"]
    assert [b["columns"] for b in model["blocks"]] == [[0, grey], [grey, grey + SCATTERING_DIM],
                                                       [grey + SCATTERING_DIM, grey + SCATTERING_DIM + 16]]
    assert all(str(b["C"]) in b["cv_accuracy"] for b in model["blocks"])
    assert "image_scattering_v1" in model["type"] and metrics["heldout"]["modality_accuracy"] == 1.0
    clf = ModalityClassifier(tmp_path / "clf", embedder=embedder)
    assert clf.recipe == {"statistics": True, "physics": False, "texture": True, "scattering": True, "views": ("original",)}
    with Image.open(samples[13][0]) as image:
        image.load()
        features = clf.features([image])
        assert features.shape == (1, 1, grey + SCATTERING_DIM + 16)
        x = (features[0, 0] - clf._weights["mean"]) / clf._weights["std"]
        parts = [_softmax(np.append(x[a:b], 1.0)[None] @ clf._weights[f"head_modality_{i}"])[0]
                 for i, (a, b) in enumerate(block["columns"] for block in model["blocks"])]
        assert np.allclose(clf.probabilities(features)[0], np.mean(parts, axis=0), atol=1e-6)
        assert clf.predict(image).modality == samples[13][1]


def test_an_ensemble_needs_two_members(tmp_path):
    samples = synthetic(tmp_path, n=3)
    with pytest.raises(InputError, match="at least two members.*image_statistics_v3\\+image_texture_v1"):
        train_modality_classifier(samples, tmp_path / "one", texture=True, ensemble=True, min_modality_examples=2)
    assert not (tmp_path / "one").exists()
    train_modality_classifier(samples, tmp_path / "two", statistics=False, texture=True, scattering=True, ensemble=True,
                              min_modality_examples=2, c=1.0)  # texture alone and scattering alone: two members
    blocks = json.loads((tmp_path / "two" / "config.json").read_text())["model"]["blocks"]
    assert [b["features"] for b in blocks] == ["image_texture_v1", "image_scattering_v1"]


def test_the_cli_trains_a_scattering_ensemble(cli, tmp_path):
    folder = synthetic_medpix(tmp_path / "medpix")
    code, out, err = cli("images", "train-modality", "--data", folder, "--out", tmp_path / "clf", "--scattering", "--ensemble")
    assert code == 0, err
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["features"]["scattering"] is True and len(config["model"]["blocks"]) == 2 and "held-out" in out
    code, _, err = cli("images", "train-modality", "--data", folder, "--out", tmp_path / "bad", "--ensemble")
    assert code != 0 and "at least two members" in err and not (tmp_path / "bad").exists()
