"""transformers CLIP and SigLIP folders behind ImageTextEmbedder, on tiny random models the test saves.

The models are built from tiny configs (no download), saved with save_pretrained
together with a word-level tokenizer, then loaded through the public specs
``clip:DIR`` / ``siglip:DIR`` as a user would load BiomedCLIP or MedSigLIP exports.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medrag.embed.base import TextEmbedder
from medrag.embed.image_text import ImageTextEmbedder, TransformersImageTextEmbedder, make_image_embedder, to_rgb_image
from medrag.embed.text import make_embedder
from medrag.errors import InputError, ModelUnavailable

pytestmark = pytest.mark.slow  # importing transformers and building two models takes 10-40 s on a busy CPU

WORDS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + "a ct mr scan of the chest brain liver axial slice".split()
TEXT = dict(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, pad_token_id=0, bos_token_id=2, eos_token_id=3)
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]",
                                   eos_token="[EOS]", model_max_length=16)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    import torch
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, SiglipConfig, SiglipImageProcessor,
                              SiglipModel, SiglipProcessor)

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=8))
    clip.save_pretrained(root / "clip")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=word_tokenizer()).save_pretrained(root / "clip")
    siglip = SiglipModel(SiglipConfig(text_config=TEXT, vision_config=VISION))
    siglip.save_pretrained(root / "siglip")
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=word_tokenizer()).save_pretrained(root / "siglip")
    return {"clip": root / "clip", "siglip": root / "siglip"}


def images():
    ramp = np.tile(np.linspace(0, 255, 40), (30, 1)).astype(np.uint8)
    return [
        Image.fromarray(ramp, "L"),
        Image.fromarray((1000 + ramp.astype(np.uint16) * 12)),  # 16-bit grey
        Image.new("RGBA", (20, 24), (200, 10, 10, 128)),
        Image.fromarray(np.dstack([ramp, ramp[:, ::-1], ramp]), "RGB"),
    ]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_loads_through_the_public_spec_and_embeds(folders, kind):
    embedder = make_image_embedder(f"{kind}:{folders[kind]}")
    assert embedder._model is None  # construction reads no weights
    assert isinstance(embedder, ImageTextEmbedder) and isinstance(embedder, TextEmbedder)  # (reads .dim: loads them)
    dim = 8 if kind == "clip" else 16
    image_vecs = embedder.embed_images(images())
    text_vecs = embedder.embed_texts(["a ct scan of the chest", "brain mr"])
    for vectors, n in ((image_vecs, 4), (text_vecs, 2), (embedder.embed_queries(["liver"]), 1)):
        assert vectors.shape == (n, dim) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.embed_images([]).shape == (0, dim)
    info = embedder.info()
    assert info.name == f"{kind}:{folders[kind]}" and info.dim == dim
    assert make_embedder(info.name).info() == info  # the name an index stores rebuilds the same embedder


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_matches_the_raw_model_forward_pass(folders, kind):
    import torch
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(str(folders[kind])).eval()
    processor = AutoProcessor.from_pretrained(str(folders[kind]))
    rgb = [to_rgb_image(im) for im in images()]
    padding = "max_length" if kind == "siglip" else True
    tokens = processor.tokenizer(["a ct scan", "brain"], padding=padding, truncation=True, max_length=16, return_tensors="pt")
    if kind == "siglip":
        tokens.pop("attention_mask")
    tokens.pop("token_type_ids", None)
    with torch.no_grad():
        raw_images = model.get_image_features(pixel_values=processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"])
        raw_texts = model.get_text_features(**tokens)
    raw_images = getattr(raw_images, "pooler_output", raw_images)
    raw_texts = getattr(raw_texts, "pooler_output", raw_texts)
    embedder = make_image_embedder(f"{kind}:{folders[kind]}", device="cpu")
    norm = lambda t: (t / t.norm(dim=1, keepdim=True)).numpy()  # noqa: E731
    np.testing.assert_allclose(embedder.embed_images(images()), norm(raw_images), atol=1e-5)
    np.testing.assert_allclose(embedder.embed_texts(["a ct scan", "brain"]), norm(raw_texts), atol=1e-5)


def test_batches_give_the_same_vectors(folders):
    one_by_one = TransformersImageTextEmbedder(folders["clip"], batch_size=1)
    together = TransformersImageTextEmbedder(folders["clip"], batch_size=8)
    np.testing.assert_allclose(one_by_one.embed_images(images()), together.embed_images(images()), atol=1e-5)


def test_fingerprint_follows_the_weights(folders, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folders["clip"], copy)
    assert make_image_embedder(f"clip:{copy}").info().fingerprint == make_image_embedder(f"clip:{folders['clip']}").info().fingerprint
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert make_image_embedder(f"clip:{copy}").info().fingerprint != make_image_embedder(f"clip:{folders['clip']}").info().fingerprint


def test_clear_errors(folders, tmp_path):
    with pytest.raises(ModelUnavailable, match="save_pretrained"):
        make_image_embedder(f"clip:{tmp_path}")
    with pytest.raises(InputError, match="clip:/path"):
        make_image_embedder("clip:")
    with pytest.raises(InputError, match="not an image embedder spec"):
        make_image_embedder("all-MiniLM-L6-v2")
    with pytest.raises(InputError, match="texts only"):
        make_image_embedder("hashing:64")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelUnavailable, match="cannot load"):
        make_image_embedder(f"clip:{tmp_path}").embed_texts(["x"])
    with pytest.raises(InputError, match="PIL image"):
        make_image_embedder(f"clip:{folders['clip']}").embed_images([np.zeros((4, 4))])
