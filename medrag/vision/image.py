"""Load a medical image from PNG/JPEG/TIFF or DICOM into one shape: ``MedicalImage``.

``pixels`` keeps the values that mean something (Hounsfield units for CT
DICOM after RescaleSlope/Intercept; raw grey levels otherwise); ``display``
is the windowed 8-bit RGB picture for overlays, crops and vision models.
"""

from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medrag.errors import InputError

MODALITIES = ("xray", "ct", "mr", "photo", "unknown")
DEFAULT_MAX_PIXELS = 50_000_000
# (center, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}
DICOM_MODALITIES = {"CR": "xray", "DX": "xray", "RG": "xray", "DR": "xray", "CT": "ct", "MR": "mr",
                    "XC": "photo", "OP": "photo", "ES": "photo"}
BODY_PART_ALIASES = {"thorax": "chest", "lung": "chest", "lungs": "chest", "chest": "chest"}
ROBUST_PERCENTILES = (0.5, 99.5)
_PIL_LIMIT_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is process-global; tools may run in threads


@dataclass
class MedicalImage:
    pixels: np.ndarray  # float32, HxW (grey) or HxWx3 (colour)
    display: Image.Image  # uint8 RGB, windowed for viewing
    modality: str  # one of MODALITIES
    body_part: str | None
    source: str  # file path, or "bytes:<sha1>" for in-memory input
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file name used in citations."""
        return Path(self.source).name if not self.source.startswith("bytes:") else self.source

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def is_grey(self) -> bool:
        return self.pixels.ndim == 2


def normalise_body_part(value: str | None) -> str | None:
    if value is None or not str(value).strip():
        return None
    v = str(value).strip().lower()
    return BODY_PART_ALIASES.get(v, v)


def load_image(
    src: str | Path | bytes,
    *,
    modality: str | None = None,
    body_part: str | None = None,
    frame: int = 0,
    window: str | tuple[float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> MedicalImage:
    """Read an image file (or its bytes). ``modality``/``body_part`` override tags and guesses.

    ``window``: a CT preset name (lung, soft_tissue, bone) or (center, width); by
    default the DICOM WindowCenter/Width, else the 0.5-99.5 percentiles.
    """
    if modality is not None and modality not in MODALITIES:
        raise InputError(f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
        source = f"bytes:{hashlib.sha1(data).hexdigest()[:12]}"
        suffix = ""
    else:
        path = Path(src)
        if not path.is_file():
            raise InputError(f"{path}: no such image file")
        data = path.read_bytes()
        source = str(path)
        suffix = path.suffix.lower()
    if not data:
        raise InputError(f"{source}: the file is empty")
    is_dicom = data[128:132] == b"DICM" or suffix in (".dcm", ".dicom")
    if is_dicom:
        img = _load_dicom(data, source, frame=frame, window=window, max_pixels=max_pixels)
    else:
        img = _load_pil(data, source, frame=frame, window=window, max_pixels=max_pixels)
    if modality is not None:
        img.modality = modality
        img.metadata["modality_source"] = "argument"
    elif img.modality == "unknown" and not is_dicom:
        from medrag.vision.modality import MODEL_REASON, detect_modality

        img.modality, img.metadata["modality_reason"] = detect_modality(img)
        # "classifier" when a configured trained model decided, "guess" when the rules did
        img.metadata["modality_source"] = "classifier" if img.metadata["modality_reason"].startswith(MODEL_REASON) else "guess"
    if body_part is not None:
        img.body_part = normalise_body_part(body_part)
    return img


def _check_pixels(pixels: np.ndarray, source: str) -> np.ndarray:
    if pixels.size == 0 or min(pixels.shape[:2]) < 2:
        raise InputError(f"{source}: image is empty or too small ({'x'.join(map(str, pixels.shape[:2][::-1]))} pixels)")
    if not np.all(np.isfinite(pixels)):
        raise InputError(f"{source}: image holds NaN or infinite pixel values")
    return pixels.astype(np.float32, copy=False)


def _check_size(width: int, height: int, max_pixels: int, source: str) -> None:
    if width * height > max_pixels:
        raise InputError(
            f"{source}: {width}x{height} = {width * height} pixels exceeds the cap of {max_pixels} "
            "(possible decompression bomb); pass a higher max_pixels if the image is genuine"
        )


def _load_pil(data: bytes, source: str, *, frame: int, window, max_pixels: int) -> MedicalImage:
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels  # PIL itself refuses at twice this; we check the header size first
        try:
            try:
                im = Image.open(io.BytesIO(data))
            except Image.DecompressionBombError as exc:
                raise InputError(f"{source}: refused as a possible decompression bomb ({exc})") from None
            except Exception as exc:
                raise InputError(f"{source}: not an image PIL or pydicom can read ({exc})") from None
            _check_size(im.width, im.height, max_pixels, source)
            if frame:
                try:
                    im.seek(frame)
                except EOFError:
                    raise InputError(f"{source}: no frame {frame} (frames: {getattr(im, 'n_frames', 1)})") from None
            try:
                im.load()
            except Image.DecompressionBombError as exc:
                raise InputError(f"{source}: refused as a possible decompression bomb ({exc})") from None
            except Exception as exc:
                raise InputError(f"{source}: corrupt or truncated image ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    fmt, mode = im.format, im.mode
    if mode in ("RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")  # alpha dropped: medical content lives in the colour channels
    elif mode == "LA":
        im = im.convert("L")
    elif mode == "1":
        im = im.convert("L")
    pixels = np.asarray(im)
    if pixels.ndim == 3 and np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2]):
        pixels = pixels[..., 0]  # a grey image saved as RGB
    bits = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(mode, 8)
    pixels = _check_pixels(pixels, source)
    meta: dict[str, Any] = {"format": fmt, "mode": mode, "bits": bits, "frame": frame}
    if pixels.ndim == 3:
        display = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        meta["window"] = None
    elif bits == 8 and window is None:
        display = Image.fromarray(pixels.astype(np.uint8), "L").convert("RGB")
        meta["window"] = None
    else:
        display, meta["window"] = _windowed(pixels, window, hounsfield=False, tags=None)
    return MedicalImage(pixels=pixels, display=display, modality="unknown", body_part=None, source=source, metadata=meta)


def _load_dicom(data: bytes, source: str, *, frame: int, window, max_pixels: int) -> MedicalImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise InputError(f"{source}: not a DICOM file ({exc})") from None
    except Exception as exc:  # pydicom raises many types on truncated headers
        raise InputError(f"{source}: corrupt or truncated DICOM ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds:
        raise InputError(f"{source}: DICOM file has no pixel data (a report or structured document?)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(cols, rows, max_pixels, source)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InputError(
            f"{source}: cannot decode DICOM pixel data ({type(exc).__name__}: {exc}); check that SamplesPerPixel "
            f"({ds.get('SamplesPerPixel')}), PhotometricInterpretation ({ds.get('PhotometricInterpretation')}) and the "
            "bit depth match the pixel data, and that compressed data has its decoder installed"
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        if not 0 <= frame < frames:
            raise InputError(f"{source}: no frame {frame}; the file has {frames} frames (0..{frames - 1})")
        arr = arr[frame]
    elif frame:
        raise InputError(f"{source}: no frame {frame}; the file has one frame")
    pixels = arr.astype(np.float64)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    tags = _dicom_window(ds)
    inverted = False
    if photometric == "MONOCHROME1" and samples == 1:
        # MONOCHROME1 shows low values white; flip so every image reads bright = dense.
        lo, hi = float(pixels.min()), float(pixels.max())
        pixels = lo + hi - pixels
        if tags is not None:
            tags = (lo + hi - tags[0], tags[1])
        inverted = True
    pixels = _check_pixels(pixels, source)
    dicom_modality = str(ds.get("Modality", "")).upper()
    modality = DICOM_MODALITIES.get(dicom_modality, "unknown")
    meta: dict[str, Any] = {
        "format": "DICOM",
        "dicom_modality": dicom_modality or None,
        "photometric": photometric,
        "inverted": inverted,
        "bits": int(ds.get("BitsStored", 0) or 0) or None,
        "rescale": {"slope": slope, "intercept": intercept},
        "frame": frame,
        "frames": frames,
        "hounsfield": modality == "ct" and not inverted,
        "modality_source": "dicom" if modality != "unknown" else "none",
    }
    if pixels.ndim == 3:
        display = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        meta["window"] = None
    else:
        display, meta["window"] = _windowed(pixels, window, hounsfield=meta["hounsfield"], tags=tags)
    body = normalise_body_part(ds.get("BodyPartExamined"))
    return MedicalImage(pixels=pixels, display=display, modality=modality, body_part=body, source=source, metadata=meta)


def _dicom_window(ds) -> tuple[float, float] | None:
    from pydicom.multival import MultiValue

    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    # Multi-valued windows: the first is the one the modality suggests first.
    if isinstance(center, MultiValue):
        center = center[0]
    if isinstance(width, MultiValue):
        width = width[0]
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return None
    return (center, width) if width > 0 else None


def _windowed(pixels: np.ndarray, window, *, hounsfield: bool, tags) -> tuple[Image.Image, dict[str, Any]]:
    """Grey pixels -> RGB display image, and a record of the window used."""
    if isinstance(window, str) and "," in window:
        window = window.split(",")  # "center,width" from a command line
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise InputError(f"unknown window {window!r}; presets: {', '.join(CT_WINDOWS)} (or give center,width)")
        if not hounsfield:
            raise InputError(f"window preset {window!r} is in Hounsfield units and needs a CT DICOM; give center,width instead")
        center, width = CT_WINDOWS[window]
        used = {"kind": "preset", "name": window, "center": center, "width": width}
    elif window is not None:
        try:
            center, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise InputError(f"window must be a preset name or center,width, not {window!r}") from None
        if width <= 0:
            raise InputError(f"window width must be positive, not {width}")
        used = {"kind": "explicit", "center": center, "width": width}
    elif tags is not None:
        center, width = tags
        used = {"kind": "dicom", "center": center, "width": width}
    else:
        lo, hi = (float(v) for v in np.percentile(pixels, ROBUST_PERCENTILES))
        center, width = (lo + hi) / 2, max(hi - lo, 1e-6)
        used = {"kind": "percentiles", "percentiles": list(ROBUST_PERCENTILES), "center": center, "width": width}
    lo = center - width / 2
    scaled = np.clip((pixels - lo) / width, 0.0, 1.0) * 255.0
    return Image.fromarray(scaled.round().astype(np.uint8), "L").convert("RGB"), used
