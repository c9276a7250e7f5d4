"""segment_monai: a tiny random-initialised MONAI UNet saved as a bundle and loaded through the tool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monai", reason='MONAI is not installed (pip install "medrag[monai]")')
torch = pytest.importorskip("torch")

from medrag.errors import ModelUnavailable  # noqa: E402
from medrag.registry import tools  # noqa: E402
from medrag.tools.segment import SegmentMonai  # noqa: E402
from medrag.vision import load_image  # noqa: E402
from medrag.vision.monai_seg import MonaiSegmenter  # noqa: E402
from vision_samples import write_chest_png, write_ct_dicom  # noqa: E402

NETWORK = {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def write_bundle(folder: Path, *, network: dict = NETWORK, modality: str = "CT", seed: int = 0, bias_class: int | None = None) -> Path:
    """A MONAI bundle as users get one: metadata.json, inference.json with network_def, models/model.pt (a state dict)."""
    from monai.bundle import ConfigParser

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    metadata = {
        "name": "tiny_test_unet",
        "version": "0.0.1",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "modality": modality, "num_channels": 1, "spatial_shape": [64, 64]}},
            "outputs": {"pred": {"type": "image", "num_channels": 3, "channel_def": {"0": "background", "1": "organ", "2": "lesion"}}},
        },
    }
    inference = {
        "network_def": network,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -160, "a_max": 240, "b_min": 0.0, "b_max": 1.0, "clip": True}]},
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (folder / "configs" / "inference.json").write_text(json.dumps(inference))
    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = parser.get_parsed_content("network_def")
    if bias_class is not None:  # make one class win everywhere, so the expected mask is known
        last = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[bias_class] = 5.0
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


@pytest.fixture
def home(tmp_path: Path, clean_env) -> Path:
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_bundle_contract_is_read_without_weights(tmp_path: Path):
    seg = MonaiSegmenter(write_bundle(tmp_path / "b"))
    assert seg.modalities == {"ct"} and seg.labels == ["background", "organ", "lesion"] and seg.name == "tiny_test_unet"
    assert seg._model is None


def test_segment_monai_on_ct_dicom(tmp_path: Path, home: Path):
    bundle = write_bundle(tmp_path / "b", bias_class=1)
    path, _ = write_ct_dicom(tmp_path / "ct.dcm")
    assert tools.get("segment_monai") is SegmentMonai
    result = SegmentMonai(model=bundle)(image=str(path))
    assert result.ok, result.error
    (ev,) = result.evidence
    assert ev.kind == "measurement" and "tiny_test_unet" in ev.text and "organ 100.0%" in ev.text
    assert ev.citation.locator["weights"].endswith("model.pt") and ev.citation.locator["model"] == "tiny_test_unet"
    assert result.output["fractions"] == {"organ": 1.0, "lesion": 0.0}
    assert result.output["boxes"]["organ"] == (0, 0, 96, 96) and result.output["boxes"]["lesion"] is None
    assert Path(result.output["overlay"]).is_file()


def test_random_weights_give_masks_at_image_size(tmp_path: Path):
    seg = MonaiSegmenter(write_bundle(tmp_path / "b"), device="cpu")
    path, _ = write_ct_dicom(tmp_path / "ct.dcm")
    out = seg.segment(load_image(path))
    assert set(out.masks) == {"organ", "lesion"}
    assert all(m.shape == (96, 96) and m.dtype == bool for m in out.masks.values())
    assert seg._intensity == (-160.0, 240.0, 0.0, 1.0)  # taken from the bundle's ScaleIntensityRanged


def test_modality_contract_from_metadata(tmp_path: Path, home: Path):
    bundle = write_bundle(tmp_path / "b")
    png, _ = write_chest_png(tmp_path / "cxr.png")
    result = SegmentMonai(model=bundle)(image=str(png))
    assert not result.ok and "ModalityMismatch" in result.error and "accepts ct images only" in result.error


def test_bad_bundles_are_clear(tmp_path: Path, home: Path):
    path, _ = write_ct_dicom(tmp_path / "ct.dcm")
    missing = SegmentMonai(model=tmp_path / "nothing")(image=str(path))
    assert not missing.ok and "ModelUnavailable" in missing.error and "configs/metadata.json" in missing.error
    three_d = write_bundle(tmp_path / "b3", network=dict(NETWORK, spatial_dims=3))
    with pytest.raises(ModelUnavailable, match="3D network"):
        MonaiSegmenter(three_d).setup()
    wrong = write_bundle(tmp_path / "bw")
    other = write_bundle(tmp_path / "bo", network=dict(NETWORK, channels=[2, 4, 8]))
    (wrong / "models" / "model.pt").write_bytes((other / "models" / "model.pt").read_bytes())
    with pytest.raises(ModelUnavailable, match="cannot load"):
        MonaiSegmenter(wrong).setup()


def test_cli_runs_monai_bundle(cli, tmp_path: Path):
    bundle = write_bundle(tmp_path / "b", bias_class=2)
    path, _ = write_ct_dicom(tmp_path / "ct.dcm")
    code, out, err = cli("tool", "run", "segment_monai", "--model", bundle, "--image", path, "--json")
    assert code == 0, err
    assert json.loads(out)["output"]["fractions"]["lesion"] == 1.0
    assert np.isclose(json.loads(out)["output"]["fractions"]["organ"], 0.0)


def test_instance_contract_for_the_planner(tmp_path: Path):
    tool = SegmentMonai(model=write_bundle(tmp_path / "b", modality="MRI"))
    assert tool.modalities == {"mr"} and tool.segmenter._model is None
