"""OCR for PDF pages without a text layer (scanned books).

Two engines behind one small protocol: the Tesseract command-line program
(Debian/Ubuntu: ``apt-get install tesseract-ocr``) and RapidOCR (ONNX models
shipped in the ``rapidocr-onnxruntime`` wheel: ``pip install "medrag[ocr]"``).
``auto`` takes the first that is installed, in that order.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from medrag.errors import ConfigError, MissingExtra

log = logging.getLogger(__name__)


@dataclass
class OcrLine:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    confidence: float  # 0..1


class OcrEngine(Protocol):
    name: str

    def recognize(self, image: np.ndarray) -> list[OcrLine]:
        """Text lines of an RGB uint8 image (H, W, 3), top to bottom."""
        ...


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self) -> None:
        self._ocr = None
        self._lock = threading.Lock()

    def recognize(self, image: np.ndarray) -> list[OcrLine]:
        with self._lock:
            if self._ocr is None:  # models load on first use
                try:
                    from rapidocr_onnxruntime import RapidOCR
                except ImportError as exc:
                    raise MissingExtra("rapidocr-onnxruntime", "ocr", "OCR of scanned pages") from exc
                self._ocr = RapidOCR()
            result, _ = self._ocr(image)
        lines = []
        for points, text, score in result or []:
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            lines.append(OcrLine(str(text), (min(xs), min(ys), max(xs), max(ys)), float(score)))
        return sorted(lines, key=lambda ln: (ln.box[1], ln.box[0]))


class TesseractEngine:
    name = "tesseract"

    def __init__(self, language: str = "eng") -> None:
        self.language = language

    def recognize(self, image: np.ndarray) -> list[OcrLine]:
        from PIL import Image

        exe = shutil.which("tesseract")
        if exe is None:
            raise MissingExtra("tesseract-ocr", "ocr", "OCR with Tesseract (install the tesseract-ocr system package)")
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        run = subprocess.run(
            [exe, "stdin", "stdout", "-l", self.language, "tsv"], input=buffer.getvalue(), capture_output=True, timeout=120
        )
        if run.returncode != 0:
            raise ConfigError(f"tesseract failed: {run.stderr.decode(errors='replace').strip()[:300]}")
        # TSV rows are words; join them into lines keyed by (block, paragraph, line).
        words: dict[tuple, list[dict]] = {}
        for row in csv.DictReader(io.StringIO(run.stdout.decode()), delimiter="\t", quoting=csv.QUOTE_NONE):
            if row.get("level") == "5" and row.get("text", "").strip() and float(row.get("conf", -1)) >= 0:
                words.setdefault((row["block_num"], row["par_num"], row["line_num"]), []).append(row)
        lines = []
        for ws in words.values():
            x0 = min(int(w["left"]) for w in ws)
            y0 = min(int(w["top"]) for w in ws)
            x1 = max(int(w["left"]) + int(w["width"]) for w in ws)
            y1 = max(int(w["top"]) + int(w["height"]) for w in ws)
            conf = sum(float(w["conf"]) for w in ws) / len(ws) / 100.0
            lines.append(OcrLine(" ".join(w["text"] for w in ws), (x0, y0, x1, y1), conf))
        return sorted(lines, key=lambda ln: (ln.box[1], ln.box[0]))


# "auto" tries them in this order: Tesseract keeps the spaces of Latin-script text,
# RapidOCR's bundled (Chinese-English) recogniser often drops them.
ENGINES = {"tesseract": TesseractEngine, "rapidocr": RapidOcrEngine}


def available_engines() -> list[str]:
    import importlib.util

    found = []
    if shutil.which("tesseract"):
        found.append("tesseract")
    if importlib.util.find_spec("rapidocr_onnxruntime") is not None:
        found.append("rapidocr")
    return found


def make_ocr(name: str = "auto") -> OcrEngine | None:
    """An OCR engine by name; ``auto`` = the first installed one (None when none is); ``off`` = None."""
    if name == "off":
        return None
    if name == "auto":
        found = available_engines()
        return ENGINES[found[0]]() if found else None
    if name not in ENGINES:
        raise ConfigError(f"unknown OCR engine '{name}'; use auto, off, {', '.join(ENGINES)}")
    return ENGINES[name]()
