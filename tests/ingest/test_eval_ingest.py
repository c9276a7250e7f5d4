"""tools/eval_ingest.py: figure and caption match rates against a ground_truth.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from test_figures import CAPTION_ABOVE, CAPTION_BELOW, CAPTION_DRAWING, figures_pdf

TOOL = Path(__file__).resolve().parents[2] / "tools" / "eval_ingest.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("eval_ingest", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_reports_match_rates_and_mismatches(tmp_path: Path) -> None:
    textbook = tmp_path / "data" / "textbook"
    textbook.mkdir(parents=True)
    figures_pdf(textbook / "book.pdf")
    truth = {"pdfs": {"book.pdf": {"has_text_layer": True, "pages": [
        {"page": 1, "figures": [
            {"figure": "Figure 3.1", "caption": CAPTION_BELOW},
            {"figure": "Figure 3.2", "caption": CAPTION_ABOVE.replace("Fig.", "Figure")},  # printed "Fig.": caption differs
        ]},
        {"page": 2, "figures": [{"figure": "Figure 3.3", "caption": CAPTION_DRAWING}]},
    ]}}}
    (textbook / "ground_truth.json").write_text(json.dumps(truth))
    out = tmp_path / "result.json"
    assert load_tool().main(["--data", str(tmp_path / "data"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    summary = result["text_pdfs"]
    assert summary["figures_expected"] == 3 and summary["figures_found"] == 4  # + the uncaptioned photo
    assert summary["figure_recall"] == 1.0 and summary["figure_precision"] == 0.75
    assert summary["captions_exact"] == 2 and summary["captions_fuzzy"] == 3
    assert summary["figure_images_saved"] == 3
    assert summary["page_count_match_rate"] == 0.5
    assert result["scanned_pdfs"] is None
    (mismatch,) = result["pdfs"]["book.pdf"]["mismatches"]
    assert mismatch["problem"] == "unexpected figure" and mismatch["page"] == 2
