"""Contrastive training: tiny runs on synthetic shapes (fast) and on a MedPix subset (slow, data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from medrag.embed.image_text import DualEncoderEmbedder
from medrag.embed.medpix import describe, load_medpix_pairs, split_by_group
from medrag.embed.train import ImageCaptionPair, clip_loss, load_state_dict, retrieval_metrics, train_dual_encoder
from medrag.errors import InputError, SourceFileError
from medrag.testing.fakes import HashingEmbedder

CAPTIONS = {"circle": "a round bright disc", "square": "a filled box with corners", "stripes": "horizontal line pattern"}
TINY = dict(epochs=12, batch_size=12, image_size=24, embed_dim=16, widths=(8, 16, 32), lr=5e-3, progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models: on a busy shared machine a second torch thread only adds contention (20x slower seen).
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def draw_shape(kind: str, rng: np.random.Generator) -> Image.Image:
    image = Image.new("L", (32, 32), 0)
    draw = ImageDraw.Draw(image)
    x, y, r = (int(v) for v in rng.integers([10, 10, 5], [22, 22, 9]))
    if kind == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    elif kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=255)
    else:
        for row in range(int(rng.integers(0, 3)), 32, 6):
            draw.rectangle([0, row, 31, row + 2], fill=255)
    return image


def shape_pairs(folder, per_kind: int = 12, seed: int = 0) -> list[ImageCaptionPair]:
    """Images of circles, squares and stripes with matching captions; two images per group."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for kind, caption in CAPTIONS.items():
        for i in range(per_kind):
            path = folder / f"{kind}{i}.png"
            draw_shape(kind, rng).save(path)
            pairs.append(ImageCaptionPair(str(path), caption, f"{kind}-{i // 2}"))
    return pairs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    pairs = shape_pairs(root / "images")
    metrics = train_dual_encoder(pairs, root / "model", text_model=HashingEmbedder(64), seed=1, **TINY)
    return pairs, root / "model", metrics


def test_learns_above_chance_on_its_training_pairs(trained):
    _, _, metrics = trained
    i2t, t2i = metrics["train"]["image_to_text"], metrics["train"]["text_to_image"]
    assert i2t["chance@1"] == pytest.approx(1 / 3, abs=0.02)  # three distinct captions
    assert i2t["recall@1"] >= 0.75, metrics
    assert t2i["recall@1"] >= 0.75, metrics
    assert metrics["loss"][-1] < metrics["loss"][0]


def test_folder_holds_config_weights_and_manifest(trained):
    pairs, folder, metrics = trained
    config = json.loads((folder / "config.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert config["text_model"] == {**HashingEmbedder(64).info().to_dict(), "spec": "hashing:64"}
    assert config["training"]["seed"] == 1 and config["training"]["epochs"] == TINY["epochs"]
    assert config["data"]["pairs"] == len(pairs) and len(config["data"]["fingerprint"]) == 16
    assert config["metrics"] == metrics
    assert set(manifest["files"]) == {config["weights"], "config.json"}
    assert (folder / config["weights"]).is_file()


def test_loaded_model_reproduces_the_training_metrics(trained):
    pairs, folder, metrics = trained
    embedder = DualEncoderEmbedder(folder)
    images = [Image.open(p.image_path) for p in pairs]
    image_vecs = embedder.embed_images(images)
    text_vecs = embedder.embed_texts([p.caption for p in pairs])
    again = retrieval_metrics(image_vecs, text_vecs, [p.caption for p in pairs], [p.group_id for p in pairs])
    assert again == metrics["train"]
    # and a second load embeds identically
    np.testing.assert_array_equal(DualEncoderEmbedder(folder).embed_images(images), image_vecs)


def test_deterministic_with_a_seed(trained, tmp_path):
    pairs, folder, metrics = trained
    again = train_dual_encoder(pairs, tmp_path / "again", text_model=HashingEmbedder(64), seed=1, **TINY)
    assert again["loss"] == metrics["loss"]
    config = json.loads((folder / "config.json").read_text())
    first, second = load_state_dict(folder, config), load_state_dict(tmp_path / "again", config)
    assert all((first[k] == second[k]).all() for k in first)
    other = train_dual_encoder(pairs, tmp_path / "other", text_model=HashingEmbedder(64), seed=2, **{**TINY, "epochs": 1})
    assert other["loss"][0] != metrics["loss"][0]


def test_unreadable_images_are_skipped(tmp_path):
    pairs = shape_pairs(tmp_path / "images", per_kind=2)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    pairs.append(ImageCaptionPair(str(tmp_path / "broken.png"), "a broken file", "x"))
    pairs.append(ImageCaptionPair(str(tmp_path / "missing.png"), "a missing file", "y"))
    metrics = train_dual_encoder(pairs, tmp_path / "m", text_model=HashingEmbedder(64), **{**TINY, "epochs": 1})
    assert metrics["train"]["pairs"] == 6


def test_too_few_pairs(tmp_path):
    pairs = shape_pairs(tmp_path / "images", per_kind=1)[:1]
    with pytest.raises(InputError, match="at least 2"):
        train_dual_encoder(pairs, tmp_path / "m", text_model=HashingEmbedder(64), **TINY)


# --- loss and metrics ------------------------------------------------------------------


def test_metrics_of_perfect_and_chance_figures():
    vecs = np.eye(10, dtype=np.float32)
    groups = [str(i // 2) for i in range(10)]
    out = retrieval_metrics(vecs, vecs, [f"c{i}" for i in range(10)], groups)
    assert out["image_to_text"]["recall@1"] == 1.0
    assert out["image_to_text"]["chance@1"] == pytest.approx(0.1)
    assert out["image_to_text"]["chance@10"] == pytest.approx(1.0)
    # identity image vectors: the same-case image ties with all others; chance of 1 positive in 9 at k=10 is 1
    assert out["image_to_same_case"]["queries"] == 10 and out["image_to_same_case"]["chance@10"] == 1.0


def test_clip_loss_treats_a_group_as_positives():
    import torch

    vecs = torch.eye(4)
    aligned = clip_loss(vecs, vecs, torch.tensor(np.log(10.0)), torch.tensor([0, 1, 2, 3]))
    shuffled = clip_loss(vecs, vecs[[1, 0, 2, 3]], torch.tensor(np.log(10.0)), torch.tensor([0, 1, 2, 3]))
    grouped = clip_loss(vecs, vecs[[1, 0, 2, 3]], torch.tensor(np.log(10.0)), torch.tensor([0, 0, 2, 3]))
    assert aligned < grouped < shuffled


# --- MedPix pairs and the split by case ------------------------------------------------------


def write_medpix(folder) -> None:
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(8):
        name = f"images/c{i // 2}_{i}.png"
        Image.new("L", (8, 8), i * 20).save(folder / name)
        rows.append({"image_id": str(i), "case_id": f"C{i // 2}", "file": name, "modality_type": "CT", "plane": "Axial",
                     "caption": f"finding number {i}", "location": "Chest"})
    rows.append({"image_id": "nofile", "case_id": "C9", "file": None, "caption": "no file"})
    rows.append({"image_id": "gone", "case_id": "C9", "file": "images/gone.png", "caption": "missing file"})
    rows.append({"image_id": "nocap", "case_id": "C9", "file": "images/c0_0.png", "caption": "  "})
    (folder / "images.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_load_medpix_pairs_keeps_present_captioned_images(tmp_path):
    write_medpix(tmp_path)
    pairs = load_medpix_pairs(tmp_path)
    assert len(pairs) == 8
    assert pairs[0].caption == "CT Axial, Chest: finding number 0" and pairs[0].group_id == "C0"
    assert load_medpix_pairs(tmp_path, prefix=False)[0].caption == "finding number 0"
    assert describe({"caption": "x"}) == "x"


def test_load_medpix_pairs_errors(tmp_path):
    with pytest.raises(SourceFileError, match="images.jsonl"):
        load_medpix_pairs(tmp_path / "nowhere")
    (tmp_path / "images.jsonl").write_text(json.dumps({"case_id": "C1", "file": None, "caption": "x"}) + "\n")
    with pytest.raises(InputError, match="no image"):
        load_medpix_pairs(tmp_path)


def test_split_holds_whole_cases_apart_deterministically():
    pairs = [ImageCaptionPair(f"{i}.png", "c", f"case{i // 3}") for i in range(300)]
    train, test = split_by_group(pairs, 0.25, seed=0)
    assert not {p.group_id for p in train} & {p.group_id for p in test}
    assert len(train) + len(test) == 300 and 0.15 < len(test) / 300 < 0.35
    assert split_by_group(pairs, 0.25, seed=0) == (train, test)
    assert split_by_group(pairs, 0.25, seed=1) != (train, test)
    # a case stays on its side when other cases are removed
    assert split_by_group(pairs[:150], 0.25, seed=0)[1] == [p for p in test if p in pairs[:150]]


@pytest.mark.data
@pytest.mark.slow
def test_brief_training_on_a_medpix_subset(shared_data, tmp_path):
    pairs = load_medpix_pairs(shared_data / "medpix")
    train, test = split_by_group(pairs, 0.2)
    metrics = train_dual_encoder(train[:64], tmp_path / "m", epochs=1, batch_size=16, image_size=48, widths=(8, 16, 32),
                                 eval_pairs=test[:32], progress=False)
    assert metrics["heldout"]["pairs"] == 32
    embedder = DualEncoderEmbedder(tmp_path / "m")
    assert embedder.info().dim == 128
    config = embedder.config
    assert config["text_model"]["spec"] == "all-MiniLM-L6-v2" and config["text_model"]["dim"] == 384
    with Image.open(test[0].image_path) as image:
        vectors = embedder.embed_images([image])
    text = embedder.embed_queries([test[0].caption])
    np.testing.assert_allclose(np.linalg.norm(np.vstack([vectors, text]), axis=1), 1.0, rtol=1e-5)
