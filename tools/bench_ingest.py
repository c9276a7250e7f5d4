"""Ingestion speed: pages/s for text and scanned PDFs, reports/s for IU XML reports; to a JSON file.

    .venv/bin/python tools/bench_ingest.py --out results/bench_ingest.json

* Text PDFs: the full ``medrag ingest`` pipeline (parse with blocks, figures,
  thumbnails; chunk; embed with the default sentence-transformers model; save
  the index) against the floor the issue names: raw PyMuPDF ``page.get_text()``
  plus raw sentence-transformers encoding of the same pages' text (one vector
  per page, the same model). Target: medrag pages/s >= 0.8 x raw.
* Scanned PDF: parse with OCR (the first --scanned-pages pages of the image-only
  chapter), with figures; OCR dominates, so no embedding is timed here.
* Reports: the first --reports IU reports written as IU-style XML files (one per
  report, as in ecgen-radiology/), parsed alone and ingested end to end.

Each measurement is the best of --repeats runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def best_of(repeats: int, fn):
    times = []
    out = None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return out, min(times)


def iu_xml(row: dict) -> str:
    """One report in the layout of the IU collection's XML files (the fields reports.jsonl was made from)."""
    abstract = "".join(
        f'<AbstractText Label="{label.upper()}">{escape(row[label])}</AbstractText>' if row.get(label)
        else f'<AbstractText Label="{label.upper()}"/>'
        for label in ("comparison", "indication", "findings", "impression")
    )
    mesh = "".join(f"<major>{escape(m)}</major>" for m in row.get("mesh_major") or [])
    images = "".join(f'<parentImage id="{i}"><caption>Xray Chest PA and Lateral</caption></parentImage>' for i in row.get("image_ids") or [])
    return (
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{row["report_id"]}"/><IUXRId id="{row["iu_xr_id"]}"/>'
        f"<articleDate>2013-08-01</articleDate><MedlineCitation><Article><Abstract>{abstract}</Abstract></Article>"
        f"</MedlineCitation><MeSH>{mesh}</MeSH>{images}</eCitation>"
    )


def bench_text_pdfs(pdfs: list[Path], model: str, repeats: int) -> dict:
    import pymupdf
    from sentence_transformers import SentenceTransformer

    from medrag.config import load_settings
    from medrag.embed.text import SentenceTransformerEmbedder
    from medrag.ingest.pipeline import ingest

    pages = sum(pymupdf.open(p).page_count for p in pdfs)
    embedder = SentenceTransformerEmbedder(model, device="cpu")
    embedder.setup()  # model loading is not ingestion
    raw_model = SentenceTransformer(embedder.resolved.location, device="cpu", local_files_only=embedder.resolved.is_local)

    def raw() -> int:
        texts = []
        for path in pdfs:
            with pymupdf.open(path) as doc:
                texts.extend(page.get_text() for page in doc)
        raw_model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)
        return len(texts)

    def medrag() -> int:
        with tempfile.TemporaryDirectory() as home:
            settings = load_settings(home=home, progress=False)
            report = ingest(pdfs, index_name="bench", embedder=embedder, settings=settings)
            return report.chunks_added

    # The same floor, but encoding the texts medrag embeds (its chunks) instead of one truncated
    # text per page: what is left of the gap is medrag's own overhead (parsing, figures, index).
    from medrag.index.text_index import embedding_text
    from medrag.ingest.pdf import read_pdf
    from medrag.ingest.pipeline import chunk_for

    settings_for_chunks = load_settings(progress=False)
    chunk_texts = [embedding_text(c) for p in pdfs for c in chunk_for(read_pdf(p), settings_for_chunks)]

    def raw_same_texts() -> None:
        for path in pdfs:
            with pymupdf.open(path) as doc:
                [page.get_text() for page in doc]
        raw_model.encode(chunk_texts, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)

    _, raw_s = best_of(repeats, raw)
    _, raw_same_s = best_of(repeats, raw_same_texts)
    chunks, medrag_s = best_of(repeats, medrag)

    def parse_only() -> None:
        from medrag.ingest.pdf import read_pdf

        with tempfile.TemporaryDirectory() as tmp:
            for path in pdfs:
                read_pdf(path, thumbnails_dir=Path(tmp) / "pages", figures_dir=Path(tmp) / "figures")

    _, parse_s = best_of(repeats, parse_only)
    raw_rate, medrag_rate = pages / raw_s, pages / medrag_s
    return {
        "pdfs": [p.name for p in pdfs],
        "pages": pages,
        "chunks": chunks,
        "embedder": model,
        "medrag_ingest_s": round(medrag_s, 2),
        "medrag_pages_per_s": round(medrag_rate, 2),
        "medrag_parse_only_pages_per_s": round(pages / parse_s, 2),
        "raw_pymupdf_plus_encode_s": round(raw_s, 2),
        "raw_pages_per_s": round(raw_rate, 2),
        "ratio_medrag_to_raw": round(medrag_rate / raw_rate, 3),
        "target_ratio": 0.8,
        "raw_tokens_note": "raw encodes one text per page, truncated by the model at its max_seq_length; medrag embeds every chunk of the page",
        "raw_same_texts_s": round(raw_same_s, 2),
        "raw_same_texts_pages_per_s": round(pages / raw_same_s, 2),
        "ratio_medrag_to_raw_same_texts": round(raw_same_s / medrag_s, 3),
    }


def bench_scanned(pdf: Path, n_pages: int, ocr: str) -> dict:
    import pymupdf

    from medrag.ingest.pdf import read_pdf

    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "part.pdf"
        with pymupdf.open(pdf) as source, pymupdf.open() as out:
            out.insert_pdf(source, from_page=0, to_page=min(n_pages, source.page_count) - 1)
            out.save(part)
        started = time.perf_counter()
        doc = read_pdf(part, ocr=ocr, figures_dir=Path(tmp) / "figures")
        seconds = time.perf_counter() - started
    return {
        "pdf": pdf.name,
        "pages": len(doc.pages),
        "ocr_engine": (doc.metadata.get("ocr") or {}).get("engine"),
        "ocr_dpi": (doc.metadata.get("ocr") or {}).get("dpi"),
        "figures_found": doc.metadata["figure_count"],
        "seconds": round(seconds, 2),
        "pages_per_s": round(len(doc.pages) / seconds, 3),
    }


def bench_reports(jsonl: Path, n: int, model: str, repeats: int) -> dict:
    from medrag.config import load_settings
    from medrag.embed.text import SentenceTransformerEmbedder
    from medrag.ingest.pipeline import ingest
    from medrag.ingest.reports import read_xml_report

    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()[:n]]
    embedder = SentenceTransformerEmbedder(model, device="cpu")
    embedder.setup()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ecgen-radiology"
        folder.mkdir()
        for row in rows:
            (folder / f"{row['iu_xr_id']}.xml").write_text(iu_xml(row), encoding="utf-8")
        files = sorted(folder.glob("*.xml"))
        _, parse_s = best_of(repeats, lambda: [read_xml_report(f) for f in files])

        def run() -> int:
            with tempfile.TemporaryDirectory() as home:
                settings = load_settings(home=home, progress=False)
                return ingest([folder], index_name="reports", embedder=embedder, settings=settings).chunks_added

        chunks, ingest_s = best_of(repeats, run)
    return {
        "reports": len(rows),
        "chunks": chunks,
        "embedder": model,
        "parse_only_reports_per_s": round(len(rows) / parse_s, 1),
        "ingest_s": round(ingest_s, 2),
        "ingest_reports_per_s": round(len(rows) / ingest_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("results/bench_ingest.json"))
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="sentence-transformers model for both sides")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scanned-pages", type=int, default=6, help="pages of the scanned chapter to OCR (about 10 s each)")
    parser.add_argument("--ocr", default="auto")
    parser.add_argument("--reports", type=int, default=500)
    parser.add_argument("--text-pdfs", type=int, default=4, help="how many of the text chapters to ingest")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    textbook = args.data / "textbook"
    text_pdfs = sorted(p for p in textbook.glob("*.pdf") if "SCANNED" not in p.name)[: args.text_pdfs]
    scanned = next(textbook.glob("*SCANNED*.pdf"))
    out = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "note": "shared machine (2 cores, other jobs running): figures are best of --repeats",
        },
    }
    print("text PDFs ...", file=sys.stderr)
    out["text_pdfs"] = bench_text_pdfs(text_pdfs, args.model, args.repeats)
    print(json.dumps(out["text_pdfs"]), file=sys.stderr)
    print("reports ...", file=sys.stderr)
    out["reports"] = bench_reports(args.data / "reports" / "reports.jsonl", args.reports, args.model, args.repeats)
    print(json.dumps(out["reports"]), file=sys.stderr)
    print("scanned PDF ...", file=sys.stderr)
    out["scanned_pdf"] = bench_scanned(scanned, args.scanned_pages, args.ocr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
