"""Our own image classifier: data readers, training, the saved folder, classify_image with Grad-CAM, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrag.errors import InputError, ModelUnavailable
from medrag.registry import tools
from medrag.tools.classify import ClassifyImage
from medrag.vision import load_image
from medrag.vision.classifier import ImageClassifier, LabelledImage, read_labelled_images, split_by_group, train_classifier
from medrag.vision.saliency import occlusion, peak_region, to_image_space


def _blob_image(label: str, seed: int, side: int = 48) -> Image.Image:
    """'disk': a bright disk on a dark background; 'bars': bright vertical bars. Noise and position vary."""
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 8, (side, side))
    yy, xx = np.mgrid[:side, :side]
    if label == "disk":
        cy, cx = rng.integers(14, side - 14, size=2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = 200
    else:
        img[:, (xx[0] // 6) % 2 == 0] += 120
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L")


def _write_folder(root: Path, per_label: int = 12) -> Path:
    for label in ("bars", "disk"):
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            _blob_image(label, seed=hash(label) % 1000 + i).save(root / label / f"{label}{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict, Path]:
    data = _write_folder(tmp_path_factory.mktemp("data"))
    items = read_labelled_images(data)
    out = tmp_path_factory.mktemp("models") / "blobs"
    metrics = train_classifier(items, out, test_items=items[:4], epochs=4, batch_size=8, image_size=32, widths=(8, 16),
                               modalities=["xray", "unknown"], progress=False, description="synthetic blobs")
    return out, metrics, data


def test_read_folder_and_jsonl(tmp_path: Path):
    data = _write_folder(tmp_path / "f", per_label=2)
    items = read_labelled_images(data)
    assert {i.label for i in items} == {"bars", "disk"} and len(items) == 4 and items[0].group == "bars/bars0"
    listing = tmp_path / "f" / "list.jsonl"
    listing.write_text("\n".join(json.dumps(r) for r in [
        {"file": "disk/disk0.png", "kind": "disk", "case_id": "c1"},
        {"file": "disk/missing.png", "kind": "disk", "case_id": "c2"},  # skipped: no file
        {"file": "bars/bars0.png", "kind": "", "case_id": "c3"},  # skipped: no label
        {"image": "bars/bars1.png", "kind": "bars"},
    ]) + "\n")
    rows = read_labelled_images(listing, label_field="kind")
    assert [(Path(r.path).name, r.label) for r in rows] == [("disk0.png", "disk"), ("bars1.png", "bars")]
    assert rows[0].group == "c1"
    with pytest.raises(InputError, match="no rows"):
        read_labelled_images(listing, label_field="nothing")
    with pytest.raises(InputError, match="no such folder"):
        read_labelled_images(tmp_path / "absent")


def test_split_keeps_groups_together():
    items = [LabelledImage(f"{g}-{i}.png", "a", f"case{g}") for g in range(40) for i in range(3)]
    train, test = split_by_group(items, 0.25, seed=1)
    assert train and test and len(train) + len(test) == len(items)
    assert not {i.group for i in train} & {i.group for i in test}
    assert split_by_group(items, 0.25, seed=1) == (train, test)


@pytest.mark.slow  # trains a tiny CNN (torch import + training: ~10-20 s on a shared CPU)
def test_trained_folder_has_config_labels_and_metrics(trained):
    out, metrics, _ = trained
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == ["bars", "disk"] and (out / "labels.txt").read_text().split() == ["bars", "disk"]
    assert config["modalities"] == ["unknown", "xray"] and config["data"]["train_images"] == 24
    assert set(json.loads((out / "manifest.json").read_text())["files"]) == {config["weights"], "config.json", "labels.txt"}
    held = metrics["heldout"]
    assert held["n"] == 4 and 0 <= held["accuracy"] <= 1 and held["majority_label"] in ("bars", "disk")
    assert held["majority_baseline"] <= held["best_constant_baseline"] and sum(c["n"] for c in held["per_class"].values()) == 4
    assert metrics["train"]["accuracy"] >= 0.75, metrics  # an easy task: it must learn something in 4 epochs


@pytest.mark.slow
def test_classifier_probabilities_and_saliency(trained):
    out, _, data = trained
    clf = ImageClassifier(out, device="cpu")
    assert clf._model is None  # lazy: nothing loaded yet
    img = load_image(data / "disk" / "disk0.png", modality="xray")
    probs = clf.predict(img)
    assert set(probs) == {"bars", "disk"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    heat = clf.saliency(img, "disk")
    assert heat.shape == (img.height, img.width) and 0 <= heat.min() and heat.max() <= 1
    with pytest.raises(InputError, match="unknown label"):
        clf.saliency(img, "cat")


@pytest.mark.slow
def test_classify_image_tool_evidence_saliency_and_zoom_hint(trained, tmp_path, clean_env):
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    out, _, data = trained
    assert tools.get("classify_image") is ClassifyImage
    tool = ClassifyImage(model=out)
    result = tool(image=str(data / "disk" / "disk1.png"), modality="xray")
    assert result.ok, result.error
    measure, figure = result.evidence
    assert measure.kind == "measurement" and "disk" in measure.text and "not a diagnosis" in measure.text
    assert measure.citation.locator["model"] == "blobs" and measure.citation.locator["weights"].endswith(json.loads((out / "config.json").read_text())["weights"])
    assert set(measure.citation.locator["probabilities"]) == {"bars", "disk"}
    assert figure.kind == "figure" and "Grad-CAM" in figure.text
    overlay = Path(result.output["saliency"]["overlay"])
    assert overlay.is_file() and overlay.parent == tmp_path / "home" / "assets" / "overlays"
    peak = result.output["saliency"]["peak_box"]
    if peak:  # a flat map has no peak; otherwise the box is offered to zoom_region
        assert figure.citation.bbox == tuple(float(v) for v in peak)
        nxt = result.output["next"]
        zoom = tools.create(nxt["tool"])(**nxt["inputs"], modality="xray")
        assert zoom.ok, zoom.error
    target = tool(image=str(data / "bars" / "bars1.png"), modality="xray", target="bars", saliency=True)
    assert target.output["saliency"]["target"] == "bars"
    quiet = tool(image=str(data / "bars" / "bars1.png"), modality="xray", saliency=False)
    assert len(quiet.evidence) == 1 and "saliency" not in quiet.output


@pytest.mark.slow
def test_classify_image_contract_comes_from_the_model(trained, tmp_path, clean_env):
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    out, _, data = trained
    tool = ClassifyImage(model=out)
    assert tool.modalities == {"unknown", "xray"} and tool.classifier._model is None  # what the planner sees, no weights loaded
    assert ClassifyImage.modalities == {"ct", "mr", "unknown"}  # the listed default model's contract
    result = tool(image=str(data / "disk" / "disk1.png"), modality="ct")
    assert not result.ok and "ModalityMismatch" in result.error and "unknown, xray" in result.error


@pytest.mark.slow
def test_missing_and_corrupt_models_are_clear(trained, tmp_path, clean_env):
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    out, _, data = trained
    missing = ClassifyImage()(image=str(data / "disk" / "disk1.png"), modality="ct")
    assert not missing.ok and "ModelUnavailable" in missing.error and "medrag train-classifier" in missing.error
    assert "medpix-modality" in missing.error
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in out.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / json.loads((out / "config.json").read_text())["weights"]
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelUnavailable, match="differs from the manifest"):
        ImageClassifier(broken).setup()


def test_saliency_helpers_map_back_and_find_the_peak():
    cam = np.zeros((10, 10), np.float32)
    cam[2:4, 6:9] = 1.0
    # A 200x100 (w x h) image: shorter side 100 -> 10 (scale 0.1), centre crop: x offset 5 model pixels.
    heat = to_image_space(cam, (0.1, 5.0, 0.0), (100, 200), 10)
    assert heat.shape == (100, 200) and heat[:, :40].max() == 0 and heat[:, 160:].max() == 0  # outside the view
    x0, y0, x1, y1 = peak_region(heat)
    assert 100 <= x0 < x1 <= 150 and 10 <= y0 < y1 <= 50
    assert peak_region(np.zeros((5, 5))) is None
    gray = np.zeros((32, 32), np.float32)
    gray[8:16, 20:28] = 1.0
    occ = occlusion(lambda g: float(g[8:16, 20:28].mean()), gray, patch=8)
    assert peak_region(occ) == (16, 8, 32, 16) or occ[8:16, 20:28].min() == 1.0


@pytest.mark.slow
def test_train_classifier_cli_and_tool_list(cli, tmp_path):
    data = _write_folder(tmp_path / "data", per_label=6)
    out = tmp_path / "model"
    code, stdout, err = cli("train-classifier", "--data", data, "--out", out, "--epochs", "1", "--image-size", "32", "--batch-size", "4",
                            "--min-count", "2", "--test-fraction", "0.3", "--modalities", "xray", "--no-progress")
    assert code == 0, err
    assert "held-out" in stdout and "majority baseline" in stdout and (out / "config.json").is_file()
    # A synthetic disk is no radiograph to the modality rules (dark, no film exposure): state the modality.
    code, stdout, err = cli("tool", "run", "classify_image", "--model", out, "--image", data / "disk" / "disk0.png", "--arg", "modality=xray", "--json")
    assert code == 0, err
    payload = json.loads(stdout)
    assert payload["evidence"][0]["kind"] == "measurement" and Path(payload["overlay"]).is_file()
    code, stdout, err = cli("tool", "run", "classify_image", "--model", out, "--image", data / "disk" / "disk0.png", "--arg", "modality=mr")
    assert code != 0 and "accepts xray images only" in err and "'mr'" in err
    code, stdout, err = cli("train-classifier", "--data", tmp_path / "absent", "--out", out)
    assert code != 0 and "no such folder" in err
    code, stdout, _ = cli("tool", "list", "--json")
    rows = {row["name"]: row for row in json.loads(stdout)}
    assert {"classify_image", "classify_chest_xray", "segment_monai"} <= set(rows)
    assert rows["classify_chest_xray"]["modalities"] == ["xray"] and rows["classify_chest_xray"]["body_regions"] == ["chest"]
    assert "saliency" in rows["classify_image"]["inputs"] and "not a diagnosis" in rows["classify_image"]["description"].lower()
