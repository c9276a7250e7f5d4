"""Image preprocessing and DualEncoderEmbedder on a random-initialised tiny model (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medrag.embed.base import TextEmbedder
from medrag.embed.image_text import DualEncoderEmbedder, ImageTextEmbedder, preprocess_image, to_gray_array
from medrag.embed.text import make_embedder
from medrag.embed.train import build_model, make_config, save_dual_encoder
from medrag.errors import InputError, ModelUnavailable
from medrag.models import fingerprint_path
from medrag.testing.fakes import HashingEmbedder

SIZE = 24


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: on a busy shared machine a second torch thread only adds contention (20x slower seen).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gradient(width: int = 40, height: int = 30) -> np.ndarray:
    return np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))


# --- preprocessing ---------------------------------------------------------------


def check_input(array: np.ndarray) -> None:
    assert array.shape == (3, SIZE, SIZE)
    assert array.dtype == np.float32
    assert np.isfinite(array).all()
    np.testing.assert_array_equal(array[0], array[1])  # gray repeated into 3 channels
    np.testing.assert_array_equal(array[0], array[2])


def test_grayscale_8bit():
    image = Image.fromarray((gradient() * 255).astype(np.uint8), mode="L")
    gray = to_gray_array(image)
    assert gray.min() == 0.0 and gray.max() == 1.0
    check_input(preprocess_image(image, SIZE))


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_high_bit_depth_is_scaled_to_its_range(mode):
    # 12-bit data in a 16-bit container: dividing by 65535 would leave it nearly black.
    values = (1000 + gradient() * 3000).astype(np.uint16 if mode == "I;16" else np.int32)
    image = Image.fromarray(values)  # uint16 -> "I;16", int32 -> "I"
    assert image.mode == mode
    gray = to_gray_array(image)
    assert gray.min() == pytest.approx(0.0) and gray.max() == pytest.approx(1.0)
    check_input(preprocess_image(image, SIZE))


def test_constant_16bit_image_gives_zeros_not_nan():
    image = Image.fromarray(np.full((20, 20), 777, dtype=np.uint16))
    assert not to_gray_array(image).any()
    check_input(preprocess_image(image, SIZE))


def test_rgba_transparency_becomes_black():
    rgba = np.full((20, 20, 4), 255, dtype=np.uint8)
    rgba[:, :10, 3] = 0  # left half transparent
    gray = to_gray_array(Image.fromarray(rgba, mode="RGBA"))
    assert gray[:, :10].max() == 0.0 and gray[:, 10:].min() == 1.0
    check_input(preprocess_image(Image.fromarray(rgba, mode="RGBA"), SIZE))


def test_palette_and_other_modes():
    rgb = Image.fromarray((np.stack([gradient()] * 3, axis=2) * 255).astype(np.uint8), mode="RGB")
    for image in (rgb, rgb.convert("P"), rgb.convert("LA"), rgb.convert("1"), rgb.convert("F")):
        gray = to_gray_array(image)
        assert gray.shape == (30, 40) and 0.0 <= gray.min() and gray.max() <= 1.0, image.mode
        check_input(preprocess_image(image, SIZE))
    assert to_gray_array(rgb.convert("P")).max() > 0.9  # palette colours looked up, not indices


def test_non_square_is_center_cropped():
    tall = np.zeros((90, 30), dtype=np.uint8)
    tall[30:60] = 255  # only the middle third is white
    out = preprocess_image(Image.fromarray(tall, mode="L"), SIZE)
    assert out[0].min() > 0  # the square crop is the white middle


def test_preprocess_refuses_non_images():
    from medrag.errors import InputError

    with pytest.raises(InputError):
        preprocess_image(np.zeros((4, 4)), SIZE)


# --- DualEncoderEmbedder -------------------------------------------------------------


def save_random_model(folder, seed: int = 0):
    import torch

    text = HashingEmbedder(64)
    config = make_config(text.name, text.info().to_dict(), image_size=SIZE, embed_dim=16, widths=(4, 8))
    torch.manual_seed(seed)
    model = build_model(config)
    save_dual_encoder(model, config, folder)
    return model, config


@pytest.fixture
def model_folder(tmp_path):
    save_random_model(tmp_path / "model")
    return tmp_path / "model"


def sample_images():
    return [
        Image.fromarray((gradient() * 255).astype(np.uint8), mode="L"),
        Image.fromarray((1000 + gradient(33, 50) * 3000).astype(np.uint16)),
        Image.new("RGBA", (20, 20), (200, 10, 10, 128)),
    ]


def test_satisfies_the_protocol(model_folder):
    embedder = DualEncoderEmbedder(model_folder)
    assert isinstance(embedder, ImageTextEmbedder)
    assert isinstance(embedder, TextEmbedder)


def test_unit_norm_outputs_of_the_right_dim(model_folder):
    embedder = DualEncoderEmbedder(model_folder)
    images = embedder.embed_images(sample_images())
    texts = embedder.embed_texts(["a circle", "stripes"])
    queries = embedder.embed_queries(["a circle"])
    for vectors, n in ((images, 3), (texts, 2), (queries, 1)):
        assert vectors.shape == (n, 16) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.embed_images([]).shape == (0, 16)
    assert embedder.embed_texts([]).shape == (0, 16)


def test_info_names_fingerprint_and_dim(model_folder):
    info = DualEncoderEmbedder(model_folder).info()
    assert info.dim == 16
    assert info.fingerprint == fingerprint_path(str(model_folder))
    assert info.name == f"dual-encoder:{model_folder}"


def test_construction_reads_no_weights(model_folder):
    (model_folder / "model.safetensors").write_bytes(b"not weights")
    embedder = DualEncoderEmbedder(model_folder)  # fine: weights are not read yet
    assert embedder.info().dim == 16  # neither does info()
    assert embedder._model is None
    with pytest.raises(ModelUnavailable, match="differs from the manifest"):
        embedder.embed_texts(["a circle"])


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelUnavailable, match="train-retriever"):
        DualEncoderEmbedder(tmp_path)


def test_refuses_another_text_model(model_folder):
    config = json.loads((model_folder / "config.json").read_text())
    config["text_model"]["fingerprint"] = "something-else"
    (model_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelUnavailable, match="not the one"):
        DualEncoderEmbedder(model_folder).embed_queries(["x"])


def test_fingerprint_changes_when_weights_change(tmp_path):
    import torch

    model, config = save_random_model(tmp_path / "m")
    before = DualEncoderEmbedder(tmp_path / "m").info().fingerprint
    with torch.no_grad():
        model.image_proj.weight[0, 0] += 0.5
    save_dual_encoder(model, config, tmp_path / "m")
    after = DualEncoderEmbedder(tmp_path / "m").info().fingerprint
    assert before != after


def test_save_load_round_trip_is_exact(model_folder, tmp_path):
    from medrag.embed.train import load_state_dict

    first = DualEncoderEmbedder(model_folder)
    a_img, a_txt = first.embed_images(sample_images()), first.embed_queries(["a circle", "a square"])
    # Re-save the loaded weights elsewhere: the copy embeds identically.
    config = first.config
    model = build_model(config)
    model.load_state_dict(load_state_dict(model_folder, config))
    save_dual_encoder(model, config, tmp_path / "copy")
    second = DualEncoderEmbedder(tmp_path / "copy")
    np.testing.assert_array_equal(second.embed_images(sample_images()), a_img)
    np.testing.assert_array_equal(second.embed_queries(["a circle", "a square"]), a_txt)


def test_registered_as_dual_encoder(model_folder):
    embedder = make_embedder(f"dual-encoder:{model_folder}")
    assert isinstance(embedder, DualEncoderEmbedder)
    assert embedder.folder == model_folder


def test_make_embedder_knows_dual_encoder_without_a_prior_import(tmp_path) -> None:
    import subprocess
    import sys

    code = (
        "from medrag.embed.text import make_embedder\n"
        "from medrag.errors import MedragError\n"
        f"try:\n    make_embedder('dual-encoder:{tmp_path}')\n"
        "except MedragError as exc:\n    print('refused:', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "refused:" in out and "dual-encoder model folder" in out


def test_batches_with_prefetch_match_one_at_a_time(model_folder):
    """embed_images preprocesses the next batch in a helper thread: same vectors, and a bad image still raises."""
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (30 + i, 40), dtype=np.uint8), "L") for i in range(7)]
    fast = DualEncoderEmbedder(model_folder, batch_size=3).embed_images(images)
    serial = DualEncoderEmbedder(model_folder, batch_size=3, prefetch=False).embed_images(images)
    single = np.concatenate([DualEncoderEmbedder(model_folder, batch_size=1).embed_images([im]) for im in images[:2]])
    np.testing.assert_allclose(fast, serial, atol=1e-6)
    np.testing.assert_allclose(fast[:2], single, atol=1e-5)
    with pytest.raises(InputError, match="image 5: .*too small"):
        DualEncoderEmbedder(model_folder, batch_size=3).embed_images(images[:5] + [Image.new("L", (1, 1))])
