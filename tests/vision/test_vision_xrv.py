"""classify_chest_xray: random-initialised torchxrayvision models saved as release files, loaded through the tool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

xrv = pytest.importorskip("torchxrayvision", reason='torchxrayvision is not installed (pip install "medrag[xray]")')
import torch  # noqa: E402

from medrag.errors import ModelUnavailable  # noqa: E402
from medrag.registry import tools  # noqa: E402
from medrag.tools.classify import ClassifyChestXray  # noqa: E402
from medrag.tools.vision import ModalityMismatch  # noqa: E402
from medrag.vision.xrv import XrvClassifier, weight_file_name  # noqa: E402
from vision_samples import write_chest_png, write_ct_dicom  # noqa: E402

DENSENET = "densenet121-res224-all"


@pytest.fixture(scope="module")
def densenet_dir(tmp_path_factory) -> Path:
    """A random DenseNet saved as torchxrayvision publishes its DenseNet weights: the pickled module, under the release file name."""
    folder = tmp_path_factory.mktemp("xrv")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = xrv.models.DenseNet(num_classes=18)
        with torch.no_grad():  # small logits, so outputs are not saturated and Grad-CAM has gradients
            model.classifier.weight.mul_(1e-3)
    torch.save(model, folder / weight_file_name(DENSENET))
    return folder


@pytest.fixture
def home(tmp_path: Path, clean_env) -> Path:
    clean_env.setenv("MEDRAG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.slow
def test_densenet_probabilities_with_pathology_labels(densenet_dir: Path, tmp_path: Path, home: Path):
    png, _ = write_chest_png(tmp_path / "cxr.png")
    assert tools.get("classify_chest_xray") is ClassifyChestXray
    tool = ClassifyChestXray(model=densenet_dir)  # weights name inferred from the release file name
    assert tool.classifier._model is None  # lazy
    result = tool(image=str(png), body_part="chest")
    assert result.ok, result.error
    measure, figure = result.evidence
    labels = [p for p in xrv.models.model_urls[DENSENET]["labels"] if p]
    assert list(result.output["probabilities"]) and set(result.output["probabilities"]) == set(labels)
    assert all(0.0 <= p <= 1.0 for p in result.output["probabilities"].values()) and result.output["multilabel"]
    assert measure.kind == "measurement" and "torchxrayvision densenet121-res224-all" in measure.text
    c = measure.citation
    assert c.locator["model"] == f"torchxrayvision {DENSENET}" and c.locator["weights"] == str(densenet_dir / weight_file_name(DENSENET))
    assert weight_file_name(DENSENET) in c.title and c.locator["weights_fingerprint"]
    assert figure.kind == "figure" and Path(result.output["overlay"]).is_file()
    assert result.output["saliency"]["peak_box"] is not None and result.output["next"]["tool"] == "zoom_region"


@pytest.mark.slow
def test_real_chest_xray(densenet_dir: Path, shared_data: Path, home: Path):
    image = shared_data / "images" / "torchxrayvision_tests" / "00000001_000.png"
    result = ClassifyChestXray(model=densenet_dir / weight_file_name(DENSENET), weights=DENSENET)(image=str(image), saliency=False)
    assert result.ok, result.error and len(result.evidence) == 1
    assert "Cardiomegaly" in result.output["probabilities"]


def test_refuses_ct_before_anything_else(densenet_dir: Path, tmp_path: Path, home: Path):
    path, _ = write_ct_dicom(tmp_path / "ct.dcm")
    tool = ClassifyChestXray(model=densenet_dir)
    with pytest.raises(ModalityMismatch, match="accepts xray images only"):
        tool.check(tool.load(str(path)))


def test_missing_or_misnamed_weights_are_clear(tmp_path: Path, densenet_dir: Path, home: Path):
    with pytest.raises(ModelUnavailable, match="release page"):
        XrvClassifier(tmp_path / "none").setup()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "weights.pt").write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match="pass weights=NAME"):
        XrvClassifier(odd / "weights.pt").setup()
    with pytest.raises(ModelUnavailable, match="Rename it"):
        XrvClassifier(odd / "weights.pt", weights=DENSENET).setup()
    with pytest.raises(ModelUnavailable, match="unknown torchxrayvision weights"):
        XrvClassifier(densenet_dir, weights="densenet999").setup()
    png, _ = write_chest_png(tmp_path / "cxr.png")
    result = ClassifyChestXray()(image=str(png))  # default location is empty
    assert not result.ok and "ModelUnavailable" in result.error and "torchxrayvision" in result.error


@pytest.mark.slow
def test_resnet_state_dict_weights(tmp_path: Path, home: Path):
    """ResNet weights are published as a state dict of a 1-channel torchvision ResNet-50."""
    import torchvision

    weights = "resnet50-res512-all"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torchvision.models.resnet50(num_classes=len(xrv.models.model_urls[weights]["labels"]), weights=None)
        net.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            net.fc.weight.mul_(1e-3)
    torch.save(net.state_dict(), tmp_path / weight_file_name(weights))
    png, _ = write_chest_png(tmp_path / "cxr.png")
    result = ClassifyChestXray(model=tmp_path)(image=str(png))
    assert result.ok, result.error
    assert result.output["model"]["model"] == f"torchxrayvision {weights}" and result.output["saliency"]["method"] == "grad-cam"
    assert len(result.output["probabilities"]) == len([p for p in xrv.models.model_urls[weights]["labels"] if p])


@pytest.mark.slow
def test_cli_run_with_model(cli, densenet_dir: Path, tmp_path: Path):
    png, _ = write_chest_png(tmp_path / "cxr.png")
    code, out, err = cli("tool", "run", "classify_chest_xray", "--model", densenet_dir, "--setup", f"weights={DENSENET}",
                         "--image", png, "--json", "--arg", "saliency=false")
    assert code == 0, err
    assert json.loads(out)["evidence"][0]["citation"]["locator"]["model"] == f"torchxrayvision {DENSENET}"
    ct, _ = write_ct_dicom(tmp_path / "ct.dcm")
    code, out, err = cli("tool", "run", "classify_chest_xray", "--model", densenet_dir, "--image", ct)
    assert code != 0 and "accepts xray images only" in err and "'ct'" in err
