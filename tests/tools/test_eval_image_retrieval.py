"""tools/eval_image_retrieval.py: the label audit it applies (--label-audit) and what it reports about it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from medrag.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "eval_image_retrieval.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("eval_image_retrieval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_audit_corrects_both_sides_and_counts_the_heldout_corrections(tool, tmp_path):
    train = [("/d/images/MPX1_a.png", "ct", "axial", "MPX1"), ("/d/images/MPX1_b.png", "ct", "axial", "MPX1")]
    test = [("/d/images/MPX2_c.png", "ct", "axial", "MPX2"), ("/d/images/MPX2_d.png", "mr", "axial", "MPX2")]
    audit = tmp_path / "audit.jsonl"
    audit.write_text("\n".join(json.dumps(r) for r in (
        {"image_id": "MPX1_b", "case_id": "MPX1", "label": "CT", "corrected": "mr", "reason": "T2 MR"},
        {"image_id": "MPX2_c", "case_id": "MPX2", "label": "CT", "corrected": "mr", "reason": "MR angiogram"},
        {"image_id": "MPX7_x", "case_id": "MPX7", "label": "MR", "corrected": "ct", "reason": "not in this data"})) + "\n")
    new_train, new_test, published, report = tool.audited_samples(train, test, str(audit))
    assert [s[1] for s in new_train] == ["ct", "mr"] and [s[1] for s in new_test] == ["mr", "mr"]
    assert published == {s[0]: s[1] for s in train + test}  # the labels as published, to score against as well
    assert report == {"file": str(audit), "corrections_applied": 2, "heldout_corrections": 1, "train_corrections": 1,
                      "corrected_heldout_images": ["MPX2_c"]}
    for off in ("none", None):
        assert tool.audited_samples(train, test, off) == (train, test, published, {
            "file": None, "corrections_applied": 0, "heldout_corrections": 0, "train_corrections": 0, "corrected_heldout_images": []})
    audit.write_text('{"image_id": "MPX1_b"\n')
    with pytest.raises(InputError, match=f"{audit}:1"):
        tool.audited_samples(train, test, str(audit))


def test_the_project_audit_is_the_default(tool):
    assert tool.DEFAULT_LABEL_AUDIT == ROOT / "evals" / "medpix_label_audit.jsonl" and tool.DEFAULT_LABEL_AUDIT.is_file()
    assert "--label-audit" in tool.__doc__
    report = tool.audited_samples([], [], str(tool.DEFAULT_LABEL_AUDIT))[3]
    assert report["file"] == "evals/medpix_label_audit.jsonl" and report["corrections_applied"] == 0  # no samples, nothing applied


def test_variants_cover_every_feature_set_and_view_set_and_saved_ones_are_reused_only_as_asked(tool, tmp_path):
    import numpy as np
    from PIL import Image

    from medrag.vision.modality import train_modality_classifier

    variants = tool.MODALITY_VARIANTS
    assert list(variants)[:3] == ["image_statistics", "image_statistics_flip", "image_statistics_flip_crop"]  # simplest first
    assert "image_physics" in variants and "image_physics_flip" not in variants
    assert {v for v, recipe in variants.items() if recipe.get("head") == "mlp"} == {
        "image_statistics_mlp_flip_crop", "statistics_and_texture_mlp_flip_crop"}  # the slow head: image-only features, three views
    assert set(tool.CORE_VARIANTS) < set(variants) and tool.CORE_VARIANTS[0] == "image_statistics"  # the class report uses it
    assert tool.VARIANT_SETS["all"] == tuple(variants) and tool.VARIANT_SETS["core"] == tool.CORE_VARIANTS
    # --train-data's default: the baseline (first, as the class report needs) and the headline recipe, one of core's
    assert tool.HEADLINE_VARIANTS[0] == "image_statistics" and set(tool.HEADLINE_VARIANTS) <= set(tool.CORE_VARIANTS)
    assert all(set(tool.VARIANT_BASE) | {"embedder", "views"} == set(recipe) for recipe in variants.values())  # every option stated
    assert variants["statistics_and_texture_flip"] == {**tool.VARIANT_BASE, "embedder": False, "texture": True, "views": ("original", "hflip")}
    assert variants["ensemble_statistics_retriever_flip_crop"] == {**tool.VARIANT_BASE, "embedder": True, "ensemble": True,
                                                                   "views": ("original", "hflip", "crop90")}
    samples = []
    for i in range(4):
        for modality, level in (("ct", 30), ("mr", 200)):
            path = tmp_path / f"{modality}{i}.png"
            Image.fromarray(np.full((16, 16), level + i, dtype=np.uint8), "L").save(path)
            samples.append((str(path), modality, None, f"case{i}"))
    folder = tmp_path / "clf"
    asked = {**tool.VARIANT_BASE, "views": ("original", "hflip")}
    assert not tool.saved_as_asked(folder, asked, None)  # nothing saved
    train_modality_classifier(samples, folder, min_modality_examples=2, c=1.0, views=("original", "hflip"))
    assert tool.saved_as_asked(folder, asked, None)
    assert not tool.saved_as_asked(folder, {**asked, "views": ("original",)}, None)
    assert not tool.saved_as_asked(folder, {**asked, "physics": True}, None)
    assert not tool.saved_as_asked(folder, {**asked, "texture": True}, None)
    assert not tool.saved_as_asked(folder, {**asked, "head": "mlp"}, None)
    assert not tool.saved_as_asked(folder, {**asked, "ensemble": True}, None)
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 2  # an older classifier left in --save-modality: trained again
    (folder / "config.json").write_text(json.dumps(config))
    assert not tool.saved_as_asked(folder, asked, None)


def test_per_fold_cv_trains_a_retriever_per_fold_and_scores_each_fold_once(tool, tmp_path):
    """Each training case is scored once, by a classifier and a retriever that never saw it; folders are reused."""
    import numpy as np
    from PIL import Image

    from medrag.embed.train import ImageCaptionPair
    from medrag.vision.modality import CV_FOLDS, _fold_of

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    disc = ((yy - 16) ** 2 + (xx - 16) ** 2) < 100
    pairs, samples = [], []
    for i in range(10):
        for modality in ("ct", "mr"):
            img = np.where(disc, 120, 0) + rng.normal(0, 4, disc.shape) if modality == "ct" else 60 + 4 * xx + rng.normal(0, 20, disc.shape)
            path = tmp_path / f"{modality}{i}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(path)
            case = f"case{i}-{modality}"
            pairs.append(ImageCaptionPair(str(path), f"{modality} image", case))
            samples.append((str(path), modality, None, case))
    config = {"training": {"epochs": 1, "batch_size": 8, "seed": 0}, "image_size": 24, "embed_dim": 8,
              "architecture": {"widths": [4, 8]}, "text_model": {"spec": "hashing:32"}}
    work = tmp_path / "per_fold"
    figures = tool.per_fold_cv("statistics_and_retriever", pairs, samples, config, work)
    folds = {_fold_of(s[3], CV_FOLDS) for s in samples}
    assert figures["samples"] == len(samples) and len(figures["folds"]) == CV_FOLDS
    assert figures["cv_modality_accuracy"] >= 0.9  # the grey levels alone tell these apart
    for k in range(CV_FOLDS):
        assert (work / f"retriever{k}" / "config.json").is_file() and (work / f"statistics_and_retriever_{k}" / "config.json").is_file()
        trained_on = json.loads((work / f"statistics_and_retriever_{k}" / "config.json").read_text())["data"]["samples"]
        assert trained_on == sum(_fold_of(s[3], CV_FOLDS) != k for s in samples)  # the fold itself is left out
    assert len(folds) > 1
    stamp = (work / "retriever0" / "config.json").stat().st_mtime
    assert tool.per_fold_cv("statistics_and_retriever", pairs, samples, config, work) == figures
    assert (work / "retriever0" / "config.json").stat().st_mtime == stamp  # reused, not trained again
    plain = tool.per_fold_cv("image_statistics", pairs, samples, config, tmp_path / "plain")  # no retriever to train
    assert plain["samples"] == len(samples) and not list((tmp_path / "plain").glob("retriever*"))


def test_finalists_are_the_best_plain_variant_and_retriever_variants_that_reach_it(tool):
    def cv(**figures):
        return {v: {"cv_modality_accuracy": a} for v, a in figures.items()}

    figures = cv(image_statistics=0.91, statistics_and_retriever=0.95, ensemble_texture_scattering_flip_crop=0.947,
                 statistics_physics_and_retriever_flip_crop=0.94, ensemble_texture_scattering_retriever=0.947)
    assert tool.finalists(figures) == ["statistics_and_retriever", "ensemble_texture_scattering_flip_crop",
                                       "ensemble_texture_scattering_retriever"]
    assert tool.finalists(cv(image_statistics=0.93, statistics_and_texture=0.93)) == ["image_statistics"]  # ties: the earlier
    assert tool.finalists(cv(retriever_vectors=0.9, statistics_and_retriever=0.92)) == ["statistics_and_retriever"]


def test_the_contract_command_trains_on_one_folder_and_writes_the_headline_figures_of_another(tool, tmp_path):
    """--train-data A --data B --out FILE (the issue's acceptance command) end to end, on small synthetic folders."""
    sys.path.insert(0, str(ROOT / "tests" / "vision"))
    from test_vision_modality_views import synthetic_medpix

    folders = []
    for name in ("a", "b"):
        folder = synthetic_medpix(tmp_path / name)
        rows = [json.loads(line) for line in (folder / "images.jsonl").read_text().splitlines()]
        (folder / "images.jsonl").write_text("".join(
            json.dumps({**r, "caption": f"{r['plane']} {r['modality_type']} image of {r['case_id']}"}) + "\n" for r in rows))
        folders.append(folder)
    out = tmp_path / "out.json"
    assert tool.main(["--train-data", str(folders[0]), "--data", str(folders[1]), "--out", str(out), "--cache", str(tmp_path / "cache"),
                      "--epochs", "1", "--extra-images", str(tmp_path / "none"), "--label-audit", "none", "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert list(result)[:4] == ["image_to_case_recall@10", "text_to_image_recall@10", "image_to_text_recall@10", "chance@10"]
    assert {"modality_accuracy", "plane_accuracy", "n_images"} <= set(result) and result["n_images"] == 16
    assert 0.0 <= result["text_to_image_recall@10"] <= 1.0 and 0.0 <= result["modality_accuracy"] <= 1.0
    # one image per synthetic case: no same-case query, so that figure is None instead of a crash at the end of the run
    assert result["image_to_case_recall@10"] is None and result["target"]["met"] is None
    assert result["modality_selection"]["candidates"] == "headline" and set(result["modality_variants"]) == set(tool.HEADLINE_VARIANTS)
