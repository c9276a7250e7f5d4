"""`medrag train-retriever`: errors as one line with an exit code, held-out figures printed."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageDraw

import medrag.embed.train
from medrag.cli import main
from medrag.testing.fakes import HashingEmbedder


@pytest.fixture
def cli(capsys):
    def run(*args) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write_medpix(folder, cases: int = 10) -> None:
    """A MedPix-shaped folder: two images a case, circles for even cases, squares for odd ones."""
    (folder / "images").mkdir(parents=True)
    rows = []
    for case in range(cases):
        for k in range(2):
            name = f"images/MPX{case}_{k}.png"
            image = Image.new("L", (40, 40), 0)
            shape = ImageDraw.Draw(image).ellipse if case % 2 == 0 else ImageDraw.Draw(image).rectangle
            shape([8 + k, 8, 30, 30 - k], fill=255)
            image.save(folder / name)
            caption = "round mass" if case % 2 == 0 else "square block"
            rows.append({"image_id": f"{case}_{k}", "case_id": f"MPX{case}", "file": name, "modality_type": "CT",
                         "plane": "Axial", "caption": caption, "location": "Chest"})
    (folder / "images.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_missing_folder(cli, tmp_path):
    code, _, err = cli("train-retriever", "--data", tmp_path / "nowhere", "--out", tmp_path / "m")
    assert code == 2 and "data folder not found" in err
    assert not (tmp_path / "m").exists()


def test_folder_without_listing(cli, tmp_path):
    code, _, err = cli("train-retriever", "--data", tmp_path, "--out", tmp_path / "m")
    assert code == 2 and "images.jsonl" in err and "Traceback" not in err


def test_no_usable_pairs(cli, tmp_path):
    (tmp_path / "images.jsonl").write_text(json.dumps({"case_id": "C1", "file": "images/gone.png", "caption": "x"}) + "\n")
    code, _, err = cli("train-retriever", "--data", tmp_path, "--out", tmp_path / "m")
    assert code == 2 and "no image" in err


def test_bad_options(cli, tmp_path):
    write_medpix(tmp_path / "medpix")
    code, _, err = cli("train-retriever", "--data", tmp_path / "medpix", "--out", tmp_path / "m", "--epochs", "0")
    assert code == 2 and "epochs must be" in err
    code, _, err = cli("train-retriever", "--data", tmp_path / "medpix", "--out", tmp_path / "m", "--test-fraction", "1.5")
    assert code == 2 and "test fraction" in err


def test_trains_and_prints_held_out_figures(cli, tmp_path, monkeypatch):
    import torch

    # The CLI trains with MiniLM and the full CNN; a tiny tower and the hashing embedder keep this test fast.
    real = medrag.embed.train.train_dual_encoder

    def tiny(pairs, out, **kwargs):
        return real(pairs, out, text_model=HashingEmbedder(64), widths=(4, 8), embed_dim=8, **kwargs)

    monkeypatch.setattr(medrag.embed.train, "train_dual_encoder", tiny)
    write_medpix(tmp_path / "medpix")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, out, err = cli("train-retriever", "--data", tmp_path / "medpix", "--out", tmp_path / "m", "--epochs", "1",
                             "--batch-size", "4", "--image-size", "16", "--test-fraction", "0.3", "--no-progress")
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert "held-out:" in out and "image_to_text: R@1" in out and "chance" in out
    assert (tmp_path / "m" / "config.json").is_file()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["image_size"] == 16 and "heldout" in config["metrics"]
