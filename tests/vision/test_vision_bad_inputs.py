"""Bad input on the image path is refused with a medrag InputError that says what is wrong.

Covered elsewhere (tests/vision/test_vision_image.py): missing, empty and non-image files, truncated PNG and
DICOM, pixel-less DICOM, 30000x30000 header bombs, NaN TIFFs and 1x1 PNGs through ``load_image``. Here: the
remaining sizes and DICOM channel layouts, bytes input, and the same refusals on the embedder's path
(``DualEncoderEmbedder.embed_images`` / ``preprocess_batch``), which takes PIL images rather than files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from test_vision_image import _png_header_only
from vision_samples import chest_xray_array, write_dicom

from medrag.embed.image_text import (
    preprocess_batch,
    preprocess_image,
    resize_square,
    to_gray_array,
)
from medrag.errors import InputError, MedragError
from medrag.vision import load_image


def test_20000_square_png_is_refused_before_decoding(tmp_path: Path):
    (tmp_path / "huge.png").write_bytes(_png_header_only(20000, 20000))
    with pytest.raises(InputError, match="decompression bomb|exceeds the cap"):
        load_image(tmp_path / "huge.png")


def test_non_image_and_truncated_bytes(tmp_path: Path):
    with pytest.raises(InputError, match="not an image"):
        load_image(b"%PDF-1.7 this is a document, not a picture")
    arr, _ = chest_xray_array(96)
    buffer = io.BytesIO()
    Image.fromarray(arr, "L").save(buffer, format="PNG")
    with pytest.raises(InputError, match="truncated"):
        load_image(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.new("L", (1, 1), 9).save(tmp_path / "dot.png")
    with pytest.raises(InputError, match="too small"):
        load_image((tmp_path / "dot.png").read_bytes())


def test_dicom_with_a_wrong_channel_count_is_refused(tmp_path: Path):
    path = write_dicom(tmp_path / "grey.dcm", np.full((8, 8), 5, np.uint16), modality="CT")
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel = 3  # says colour, holds one grey plane (and no planar configuration)
    ds.save_as(tmp_path / "three.dcm")
    with pytest.raises(InputError, match="three.dcm: cannot decode DICOM pixel data"):
        load_image(tmp_path / "three.dcm")
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel = 2  # not a valid DICOM value at all
    ds.PixelData = np.zeros((8, 8, 2), np.uint16).tobytes()
    ds.save_as(tmp_path / "two.dcm")
    with pytest.raises(InputError, match="Samples per Pixel|SamplesPerPixel"):
        load_image(tmp_path / "two.dcm")


def test_embedder_preprocessing_refuses_bad_images(tmp_path: Path):
    with pytest.raises(InputError, match="too small"):
        preprocess_image(Image.new("L", (1, 1)), 32)
    with pytest.raises(InputError, match="expected a PIL image"):
        preprocess_batch([Image.new("L", (40, 40)), np.zeros((40, 40))], 32)
    arr, _ = chest_xray_array(96)
    Image.fromarray(arr, "L").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    lazy = Image.open(tmp_path / "cut.png")  # PIL reads only the header here
    with pytest.raises(InputError, match="image 1: .*truncated"):
        preprocess_batch([Image.open(tmp_path / "full.png"), lazy], 32)
    assert issubclass(InputError, MedragError)


def test_batch_preprocessing_matches_one_by_one():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L") for h, w in ((50, 70), (90, 40), (33, 33))]
    images.append(Image.fromarray(rng.integers(0, 4000, (40, 60), dtype=np.uint16)))  # 16-bit: the general path
    images.append(Image.new("RGB", (30, 20), (200, 10, 10)))
    batch = preprocess_batch(images, 24, 28)
    for i, image in enumerate(images):
        np.testing.assert_allclose(batch[i], preprocess_image(image, 24, 28), atol=1e-5)
        # The 8-bit shortcut gives the numbers of the general path (what training used), up to float rounding.
        square = resize_square(to_gray_array(image), 28)[2:26, 2:26]
        np.testing.assert_allclose(batch[i, 0], (square - 0.5) / 0.25, atol=1e-5)
