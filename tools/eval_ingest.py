"""How well PDF ingestion finds figures and links their captions, against textbook/ground_truth.json.

For every PDF listed in the ground truth (the scanned variant included, read by
OCR), figures are extracted with ``medrag.ingest.pdf.read_pdf`` and compared
page by page with the expected figures:

* page count match: pages where the number of figures found equals the number expected;
* figure recall / precision: expected "Figure N.k" found on its page / figures found that were expected;
* caption exact: linked caption equals the printed caption (whitespace collapsed);
  caption fuzzy: similarity ratio >= 0.9 (OCR misreads a character here and there);
* images saved: the figure's PNG exists and opens.

    python tools/eval_ingest.py --data ../shared/data --out results/ingest_figures.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from difflib import SequenceMatcher
from pathlib import Path

import pymupdf

from medrag.ingest.pdf import read_pdf

FUZZY = 0.9


def norm(text: str | None) -> str:
    return " ".join((text or "").split())


def evaluate_pdf(pdf_path: Path, expected_pages: list[dict], ocr: str | None, figures_dir: Path) -> dict:
    started = time.perf_counter()
    doc = read_pdf(pdf_path, ocr=ocr, figures_dir=figures_dir)
    seconds = time.perf_counter() - started
    expected_total = found_total = found_expected = count_match = exact = fuzzy = saved = 0
    ratios: list[float] = []
    mismatches = []
    for gt_page in expected_pages:
        page = doc.pages[gt_page["page"] - 1]
        expected = {f["figure"]: f for f in gt_page["figures"]}
        found = page.figures
        expected_total += len(expected)
        found_total += len(found)
        count_match += len(found) == len(expected)
        by_label = {f.label: f for f in found if f.label}
        found_expected += sum(1 for label in by_label if label in expected)
        for label, gt in expected.items():
            figure = by_label.get(label)
            if figure is None:
                mismatches.append({"page": page.number, "figure": label, "problem": "not found"})
                continue
            ratio = SequenceMatcher(None, norm(figure.caption), norm(gt["caption"])).ratio()
            ratios.append(ratio)
            exact += norm(figure.caption) == norm(gt["caption"])
            fuzzy += ratio >= FUZZY
            if ratio < FUZZY:
                mismatches.append({"page": page.number, "figure": label, "problem": "caption differs",
                                   "ratio": round(ratio, 3), "found": norm(figure.caption)[:160], "expected": gt["caption"][:160]})
            if figure.image_path and Path(figure.image_path).is_file():
                pix = pymupdf.Pixmap(figure.image_path)
                saved += pix.width > 0 and pix.height > 0
        for figure in found:
            if figure.label not in expected:
                mismatches.append({"page": page.number, "figure": figure.label, "problem": "unexpected figure",
                                   "bbox": [round(v) for v in figure.bbox], "origin": figure.origin})
    return {
        "pages": len(expected_pages),
        "seconds": round(seconds, 2),
        "ocr_pages": (doc.metadata.get("ocr") or {}).get("pages", 0),
        "figures_expected": expected_total,
        "figures_found": found_total,
        "figures_found_expected": found_expected,
        "pages_with_figure_count_match": count_match,
        "captions_exact": exact,
        "captions_fuzzy": fuzzy,
        "mean_caption_similarity": round(sum(ratios) / len(ratios), 4) if ratios else None,
        "figure_images_saved": saved,
        "mismatches": mismatches,
    }


def summarise(rows: list[dict]) -> dict:
    total = {k: sum(r[k] for r in rows) for k in (
        "pages", "figures_expected", "figures_found", "figures_found_expected",
        "pages_with_figure_count_match", "captions_exact", "captions_fuzzy", "figure_images_saved")}
    expected = total["figures_expected"] or 1
    return {
        **total,
        "page_count_match_rate": round(total["pages_with_figure_count_match"] / max(total["pages"], 1), 4),
        "figure_recall": round(total["figures_found_expected"] / expected, 4),
        "figure_precision": round(total["figures_found_expected"] / max(total["figures_found"], 1), 4),
        "caption_exact_rate": round(total["captions_exact"] / expected, 4),
        "caption_fuzzy_rate": round(total["captions_fuzzy"] / expected, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("results/ingest_figures.json"))
    parser.add_argument("--ocr", default="auto", help="OCR engine for the scanned PDF: auto, tesseract, rapidocr")
    parser.add_argument("--skip-scanned", action="store_true", help="leave out the scanned PDF (OCR takes minutes)")
    args = parser.parse_args(argv)
    textbook = args.data / "textbook"
    truth = json.loads((textbook / "ground_truth.json").read_text(encoding="utf-8"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in truth["pdfs"].items():
            if args.skip_scanned and not entry["has_text_layer"]:
                continue
            row = evaluate_pdf(textbook / name, entry["pages"], None if entry["has_text_layer"] else args.ocr, Path(tmp) / "figures")
            row["scanned"] = not entry["has_text_layer"]
            results[name] = row
            print(f"{name}: {row['figures_found_expected']}/{row['figures_expected']} figures, "
                  f"captions exact {row['captions_exact']}, fuzzy {row['captions_fuzzy']}, "
                  f"{len(row['mismatches'])} mismatches, {row['seconds']}s", file=sys.stderr)
    text_rows = [r for r in results.values() if not r["scanned"]]
    scan_rows = [r for r in results.values() if r["scanned"]]
    out = {
        "data": str(textbook),
        "ocr": args.ocr,
        "machine": {"python": platform.python_version(), "pymupdf": pymupdf.VersionBind, "cpu": platform.processor() or platform.machine()},
        "text_pdfs": summarise(text_rows) if text_rows else None,
        "scanned_pdfs": summarise(scan_rows) if scan_rows else None,
        "all": summarise(list(results.values())),
        "pdfs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: out[k] for k in ("text_pdfs", "scanned_pdfs")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
