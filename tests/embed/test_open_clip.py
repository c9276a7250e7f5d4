"""open_clip models behind ImageTextEmbedder (the optional ``clip`` extra).

Skipped when open_clip is not installed. Run in an environment with the extra:
    pip install -e ".[clip,dev]" && python -m pytest tests/embed/test_open_clip.py -q -m "slow or not slow"
A tiny architecture is described by a model-config JSON, built with random
weights, saved as a local checkpoint, and loaded through ``open_clip:CONFIG@CHECKPOINT``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medrag.embed.image_text import ImageTextEmbedder, OpenCLIPEmbedder, make_image_embedder, parse_open_clip
from medrag.errors import InputError, ModelUnavailable

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_spec_parsing_needs_no_open_clip():
    assert parse_open_clip("ViT-B-16@/w/model.pt") == ("ViT-B-16", "/w/model.pt")
    assert parse_open_clip("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224") == (
        "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", None)
    with pytest.raises(InputError, match="needs a checkpoint"):
        OpenCLIPEmbedder("ViT-B-16")
    with pytest.raises(ModelUnavailable, match="not found"):
        make_image_embedder("open_clip:ViT-B-16@/no/such/file.pt")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip", reason="open_clip is the optional 'clip' extra: pip install 'medrag[clip]'")
    import torch

    root = tmp_path_factory.mktemp("openclip")
    config = root / "medrag-tiny-clip.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(str(config))
    torch.manual_seed(0)
    model = open_clip.create_model("medrag-tiny-clip", pretrained=None)
    checkpoint = root / "tiny.pt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    return config, checkpoint, model.eval()


@pytest.mark.slow
def test_loads_a_local_checkpoint_and_matches_the_raw_model(tiny):
    import open_clip
    import torch

    config, checkpoint, model = tiny
    embedder = make_image_embedder(f"open_clip:{config}@{checkpoint}", device="cpu")
    assert embedder._model is None  # construction reads no weights
    assert isinstance(embedder, ImageTextEmbedder)  # (the protocol check reads .dim, which loads them)
    ramp = np.tile(np.linspace(0, 255, 40), (30, 1)).astype(np.uint8)
    pictures = [Image.fromarray(ramp, "L"), Image.fromarray(ramp.astype(np.uint16) * 40), Image.new("RGBA", (20, 20), (9, 200, 9, 100))]
    image_vecs = embedder.embed_images(pictures)
    text_vecs = embedder.embed_texts(["a chest x-ray", "an axial ct slice"])
    assert image_vecs.shape == (3, 16) and text_vecs.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(image_vecs, axis=1), 1.0, rtol=1e-5)

    _, _, preprocess = open_clip.create_model_and_transforms(str(config.stem), pretrained=None)
    from medrag.embed.image_text import to_rgb_image

    with torch.no_grad():
        raw = model.encode_image(torch.stack([preprocess(to_rgb_image(p)) for p in pictures]))
        raw_text = model.encode_text(open_clip.get_tokenizer(config.stem)(["a chest x-ray", "an axial ct slice"]))
    np.testing.assert_allclose(image_vecs, (raw / raw.norm(dim=1, keepdim=True)).numpy(), atol=1e-5)
    np.testing.assert_allclose(text_vecs, (raw_text / raw_text.norm(dim=1, keepdim=True)).numpy(), atol=1e-5)
    info = embedder.info()
    assert info.dim == 16 and info.name == f"open_clip:{config}@{checkpoint}"
    assert make_image_embedder(info.name).info() == info


@pytest.mark.slow
def test_a_broken_checkpoint_is_a_clear_error(tiny, tmp_path):
    config, _, _ = tiny
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailable, match="cannot load open_clip"):
        make_image_embedder(f"open_clip:{config}@{bad}").embed_texts(["x"])
