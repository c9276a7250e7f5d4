"""load_image: PNG/TIFF/DICOM decoding, windowing, MONOCHROME1, frames, and the refusals."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrag.errors import InputError
from medrag.vision import MedicalImage, load_image
from medrag.vision.modality import guess_modality
from vision_samples import chest_xray_array, ct_phantom_hu, write_ct_dicom, write_dicom


def test_16bit_png_keeps_values_and_windows_by_percentiles(tmp_path: Path):
    arr = np.linspace(0, 4000, 64 * 48, dtype=np.float64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert isinstance(img, MedicalImage) and img.pixels.dtype == np.float32
    assert img.pixels.shape == (48, 64) and img.pixels.max() == pytest.approx(4000, abs=1)
    assert img.metadata["bits"] == 16 and img.metadata["window"]["kind"] == "percentiles"
    assert img.display.mode == "RGB" and img.display.size == (64, 48)
    assert np.asarray(img.display).max() == 255 and np.asarray(img.display).min() == 0


def test_rgba_is_colour_and_guessed_photo(tmp_path: Path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (40, 50, 4), dtype=np.uint8)
    Image.fromarray(arr, "RGBA").save(tmp_path / "c.png")
    img = load_image(tmp_path / "c.png")
    assert img.pixels.shape == (40, 50, 3)
    assert img.modality == "photo" and img.metadata["modality_source"] == "guess"


def test_grey_film_is_guessed_xray_and_grey_rgb_collapses(tmp_path: Path):
    arr, _ = chest_xray_array(128)
    Image.fromarray(arr, "L").convert("RGB").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.pixels.shape == (128, 128)  # grey saved as RGB comes back grey
    assert img.modality == "xray" and "radiograph" in img.metadata["modality_reason"]
    assert load_image(tmp_path / "g.png", modality="ct").modality == "ct"


def test_grey_slice_with_black_background_is_not_called_xray(tmp_path: Path):
    hu, _ = ct_phantom_hu()
    arr = np.clip((hu + 1000) / 8, 0, 255).astype(np.uint8)
    Image.fromarray(arr, "L").save(tmp_path / "slice.png")
    img = load_image(tmp_path / "slice.png")
    assert img.modality == "unknown" and "CT or MR" in guess_modality(img)[1]


def test_bytes_input(tmp_path: Path):
    arr, _ = chest_xray_array(64)
    Image.fromarray(arr, "L").save(tmp_path / "b.png")
    img = load_image((tmp_path / "b.png").read_bytes())
    assert img.source.startswith("bytes:") and img.name == img.source and img.width == 64


def test_ct_dicom_rescale_to_hounsfield_and_windows(tmp_path: Path):
    path, truth = write_ct_dicom(tmp_path / "ct.dcm")
    img = load_image(path)
    assert img.modality == "ct" and img.metadata["hounsfield"] and img.metadata["modality_source"] == "dicom"
    assert img.pixels[truth["bone"]].mean() == pytest.approx(800)
    assert img.pixels[~truth["body"]].mean() == pytest.approx(-1000)
    assert img.metadata["window"]["kind"] == "percentiles"
    lung = load_image(path, window="lung")
    assert lung.metadata["window"] == {"kind": "preset", "name": "lung", "center": -600.0, "width": 1500.0}
    # Lung window shows lung tissue grey; soft-tissue window shows it black.
    assert np.asarray(lung.display)[..., 0][truth["air_in_body"]].mean() > 40
    soft = load_image(path, window="soft_tissue")
    assert np.asarray(soft.display)[..., 0][truth["air_in_body"]].mean() == 0
    assert load_image(path, window=(40, 400)).metadata["window"]["kind"] == "explicit"
    assert load_image(path, window="40,400").metadata["window"] == {"kind": "explicit", "center": 40.0, "width": 400.0}
    with pytest.raises(InputError, match="center,width"):
        load_image(path, window=(1, 2, 3))
    with pytest.raises(InputError, match="presets"):
        load_image(path, window="brain-ish")
    raw = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    with pytest.raises(InputError, match="Hounsfield"):
        load_image(write_dicom(tmp_path / "mr.dcm", raw, modality="MR", slope=None), window="lung")


def test_dicom_window_tags_and_body_part(tmp_path: Path):
    raw = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    path = write_dicom(tmp_path / "x.dcm", raw, modality="DX", slope=None, window=(2000, 1000), body_part="THORAX")
    img = load_image(path)
    assert img.modality == "xray" and img.body_part == "chest"
    assert img.metadata["window"] == {"kind": "dicom", "center": 2000.0, "width": 1000.0}
    assert load_image(path, body_part="Abdomen").body_part == "abdomen"


def test_monochrome1_is_inverted_to_bright_is_dense(tmp_path: Path):
    raw = np.tile(np.arange(64, dtype=np.uint16) * 10, (32, 1))
    mono2 = load_image(write_dicom(tmp_path / "m2.dcm", raw, modality="CR", slope=None))
    mono1 = load_image(write_dicom(tmp_path / "m1.dcm", raw, modality="CR", slope=None, photometric="MONOCHROME1", window=(200, 400)))
    assert mono1.metadata["inverted"] and not mono2.metadata["inverted"]
    assert np.corrcoef(mono1.pixels.ravel(), mono2.pixels.ravel())[0, 1] < -0.99
    # The DICOM window moves with the inversion: centre 200 in stored values -> 630 - 200 + 0.
    assert mono1.metadata["window"]["center"] == pytest.approx(630 - 200)
    d1 = np.asarray(mono1.display)[..., 0]
    assert d1[:, 0].mean() > d1[:, -1].mean()  # low stored values show white


def test_multiframe_pick(tmp_path: Path):
    frames = np.stack([np.full((16, 16), 100, np.uint16), np.full((16, 16), 900, np.uint16)])
    frames[:, 0, 0] = 0
    path = write_dicom(tmp_path / "mf.dcm", frames, modality="MR", slope=None)
    assert load_image(path).pixels[5, 5] == 100
    img = load_image(path, frame=1)
    assert img.pixels[5, 5] == 900 and img.metadata["frames"] == 2 and img.modality == "mr"
    with pytest.raises(InputError, match="no frame 2"):
        load_image(path, frame=2)


def test_truncated_and_pixelless_dicom_are_refused(tmp_path: Path):
    path, _ = write_ct_dicom(tmp_path / "ct.dcm")
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.dcm"):
        load_image(tmp_path / "cut.dcm")
    (tmp_path / "head.dcm").write_bytes(data[:200])
    with pytest.raises(InputError):
        load_image(tmp_path / "head.dcm")
    nopix = write_dicom(tmp_path / "nopix.dcm", np.zeros((8, 8), np.uint16), pixel_data=False)
    with pytest.raises(InputError, match="no pixel data"):
        load_image(nopix)


def test_missing_and_non_image_files(tmp_path: Path):
    with pytest.raises(InputError, match="no such image file"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "notes.png").write_text("this is not a picture")
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "notes.png")
    (tmp_path / "notes.dcm").write_text("this is not a DICOM either")
    with pytest.raises(InputError, match="DICOM"):
        load_image(tmp_path / "notes.dcm")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="modality must be"):
        load_image(tmp_path / "notes.png", modality="ultrasound")


def test_truncated_png_is_refused(tmp_path: Path):
    arr, _ = chest_xray_array(128)
    Image.fromarray(arr, "L").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_image(tmp_path / "cut.png")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_from_header(tmp_path: Path):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")
    arr, _ = chest_xray_array(100)
    Image.fromarray(arr, "L").save(tmp_path / "ok.png")
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(tmp_path / "ok.png", max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == before  # the cap is set for the call only
    assert load_image(tmp_path / "ok.png").width == 100


def test_dicom_pixel_cap(tmp_path: Path):
    path, _ = write_ct_dicom(tmp_path / "ct.dcm")
    with pytest.raises(InputError, match="exceeds the cap"):
        load_image(path, max_pixels=100)


def test_nan_tiff_and_tiny_images_refused(tmp_path: Path):
    arr = np.ones((16, 16), np.float32)
    arr[3, 4] = np.nan
    Image.fromarray(arr, "F").save(tmp_path / "nan.tif")
    with pytest.raises(InputError, match="NaN"):
        load_image(tmp_path / "nan.tif")
    ok = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(ok, "F").save(tmp_path / "ok.tif")
    img = load_image(tmp_path / "ok.tif")
    assert img.metadata["bits"] == 32 and img.pixels.max() == pytest.approx(1.0)
    Image.new("L", (1, 1), 128).save(tmp_path / "one.png")
    with pytest.raises(InputError, match="too small"):
        load_image(tmp_path / "one.png")
