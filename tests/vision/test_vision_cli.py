"""`medrag tool list|run` in-process through medrag.cli.main with MEDRAG_HOME in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vision_samples import write_chest_png, write_ct_dicom


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_list_json_names_every_tool_with_modalities_and_inputs(cli):
    code, out, err = cli("tool", "list", "--json")
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert {"search_text", "kg_lookup", "segment_lungs_xray", "segment_ct_tissues", "zoom_region"} <= set(rows)
    assert rows["segment_lungs_xray"]["modalities"] == ["xray"] and rows["segment_lungs_xray"]["body_regions"] == ["chest"]
    assert rows["segment_ct_tissues"]["modalities"] == ["ct"]
    assert rows["kg_lookup"]["modalities"] == ["text"] and "operation" in rows["kg_lookup"]["inputs"]
    assert rows["zoom_region"]["inputs"]["box"]["required"] and rows["zoom_region"]["description"]
    code, out, _ = cli("tool", "list")
    assert code == 0 and "segment_lungs_xray\t[xray]" in out


def test_run_json(cli, tmp_path, home):
    path, _ = write_chest_png(tmp_path / "cxr.png")
    code, out, err = cli("tool", "run", "segment_lungs_xray", "--image", path, "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["ok"] and payload["tool"] == "segment_lungs_xray"
    assert payload["evidence"][0]["kind"] == "measurement" and payload["evidence"][0]["text"].startswith("Lung fields cover")
    assert payload["evidence"][0]["citation"]["chunk_id"] == "segment_lungs_xray:cxr.png"
    assert Path(payload["overlay"]).is_file() and str(home) in payload["overlay"]
    assert set(payload["output"]["fractions"]) == {"lungs", "right_lung", "left_lung"}


def test_run_with_args_and_text_output(cli, tmp_path):
    path, _ = write_chest_png(tmp_path / "cxr.png")
    code, out, err = cli("tool", "run", "zoom_region", "--image", path, "--arg", "box=[0.25,0.25,0.5,0.5]", "--arg", "margin=0")
    assert code == 0, err
    assert out.startswith("Zoomed crop of cxr.png: pixels x 64-128, y 64-128") and "overlay: " in out
    ct, _ = write_ct_dicom(tmp_path / "ct.dcm")
    code, out, err = cli("tool", "run", "segment_ct_tissues", "--image", ct, "--arg", "window=lung")
    assert code == 0, err
    assert out.startswith("The body covers ")


def test_modality_mismatch_is_one_error_line(cli, tmp_path):
    ct, _ = write_ct_dicom(tmp_path / "ct.dcm")
    code, out, err = cli("tool", "run", "segment_lungs_xray", "--image", ct, "--json")
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert "segment_lungs_xray accepts xray images only" in line and "'ct'" in line


def test_run_errors(cli, tmp_path):
    path, _ = write_chest_png(tmp_path / "cxr.png")
    code, _, err = cli("tool", "run", "kg_lookup", "--image", path)
    assert code == 2 and "not an image tool" in one_line_error(err)
    code, _, err = cli("tool", "run", "no_such_tool", "--image", path)
    assert code == 2 and "unknown tool 'no_such_tool'" in one_line_error(err)
    code, _, err = cli("tool", "run", "zoom_region", "--image", path, "--arg", "box")
    assert code == 2 and "KEY=VALUE" in one_line_error(err)
    code, _, err = cli("tool", "run", "zoom_region", "--image", path, "--arg", "box=[5,5,1,1]")
    assert code == 1 and "x1 > x0" in one_line_error(err)
    code, _, err = cli("tool", "run", "zoom_region", "--image", tmp_path / "nope.png", "--arg", "box=[0,0,1,1]")
    assert code == 2 and "no such image file" in one_line_error(err)


@pytest.mark.data
def test_run_on_real_images(cli, shared_data):
    d = shared_data / "images"
    code, out, err = cli("tool", "run", "segment_ct_tissues", "--image", d / "pydicom/CT_small.dcm", "--json")
    assert code == 0, err
    assert json.loads(out)["evidence"][0]["citation"]["source"] == "CT_small.dcm"
    code, _, err = cli("tool", "run", "segment_lungs_xray", "--image", d / "pydicom/CT_small.dcm", "--json")
    assert code == 2 and "'ct'" in one_line_error(err)
    code, _, err = cli("tool", "run", "segment_ct_tissues", "--image", d / "skimage/retina.jpg")
    assert code == 2 and "accepts ct images only" in one_line_error(err) and "'photo'" in err
