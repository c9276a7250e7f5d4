"""Synthetic images for the vision tests: a phantom CT DICOM and a cartoon chest X-ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

SIDE = 96


def _ellipse(shape, cy, cx, ry, rx) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def ct_phantom_hu(side: int = SIDE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A body ellipse in air: fat rim, soft tissue, two lungs, a bone disk. Returns HU and truth masks."""
    shape = (side, side)
    body = _ellipse(shape, side / 2, side / 2, side * 0.40, side * 0.45)
    inner = _ellipse(shape, side / 2, side / 2, side * 0.34, side * 0.39)
    lungs = _ellipse(shape, side / 2, side * 0.32, side * 0.18, side * 0.10) | _ellipse(shape, side / 2, side * 0.68, side * 0.18, side * 0.10)
    bone = _ellipse(shape, side * 0.72, side / 2, side * 0.06, side * 0.06)
    hu = np.full(shape, -1000.0)
    hu[body] = -100.0  # fat rim
    hu[inner] = 40.0
    hu[lungs] = -850.0
    hu[bone] = 800.0
    truth = {"body": body, "fat": body & ~inner, "air_in_body": lungs, "bone": bone}
    return hu, truth


def write_dicom(
    path: Path,
    raw: np.ndarray,
    *,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    window: tuple[float, float] | None = None,
    body_part: str | None = None,
    pixel_data: bool = True,
) -> Path:
    """Write an uncompressed 16-bit DICOM; ``raw`` is HxW or FxHxW of stored values."""
    raw = np.asarray(raw)
    signed = raw.min() < 0
    raw = raw.astype(np.int16 if signed else np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Phantom^Test"
    if body_part:
        ds.BodyPartExamined = body_part
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = raw.shape[-2:]
    if raw.ndim == 3:
        ds.NumberOfFrames = raw.shape[0]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        ds.PixelData = raw.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_dicom(path: Path, **kwargs) -> tuple[Path, dict[str, np.ndarray]]:
    hu, truth = ct_phantom_hu()
    raw = (hu + 1024.0).astype(np.uint16)  # stored = HU - intercept, slope 1
    return write_dicom(path, raw, **kwargs), truth


def chest_xray_array(side: int = 256, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A cartoon frontal chest film: dark air at the sides, bright body, two dark lungs."""
    shape = (side, side)
    img = np.full(shape, 15.0)
    body = _ellipse(shape, side * 0.60, side / 2, side * 0.55, side * 0.40)
    right = _ellipse(shape, side * 0.48, side * 0.33, side * 0.24, side * 0.11)  # image left = patient's right
    left = _ellipse(shape, side * 0.48, side * 0.67, side * 0.24, side * 0.10)
    img[body] = 200.0
    img[right | left] = 70.0
    img += np.random.default_rng(seed).normal(0, 6, shape)
    return np.clip(img, 0, 255).astype(np.uint8), {"right_lung": right, "left_lung": left}


def write_chest_png(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arr, truth = chest_xray_array()
    Image.fromarray(arr, "L").save(path)
    return path, truth
