"""Ingestion speed: pages/s for text and scanned PDFs, reports/s for IU XML reports; to a JSON file.

    flock /tmp/medrag-bench.lock .venv/bin/python tools/bench_ingest.py --out results/bench_ingest.json

* Text PDFs: the full ``medrag ingest`` pipeline (parse with blocks, figures,
  page images; chunk; embed with the default sentence-transformers model; save
  the index) against the floor the issue names: raw PyMuPDF extraction plus raw
  sentence-transformers encoding of the same pages. "The same pages" means all
  of each page's text, so the raw side windows it the only way a 256-token model
  can read it whole: ``page.get_text()`` is tokenised with the model's own
  tokenizer (no special tokens), cut into consecutive windows of
  ``max_seq_length - 2`` word pieces (no overlap; [CLS] and [SEP] make it
  ``max_seq_length``), each window decoded back to text, and all windows of all
  pages encoded in one ``SentenceTransformer.encode`` call with its default
  batch_size (32). Target: medrag pages/s >= 0.8 x that raw pages/s
  (``ratio``); medrag's embedder uses the same batch size.
  Also reported, clearly labelled and not the target: the raw script that
  encodes one text per page, which the model silently truncates at
  ``max_seq_length`` (it embeds only the start of each page), and the raw
  encoding of exactly the chunk texts medrag embeds (what is left of the gap is
  medrag's own overhead: parsing, figures, page images, index).
* Scanned PDF: parse with OCR (the first --scanned-pages pages of the image-only
  chapter), with figures; OCR dominates, so no embedding is timed here.
* Reports: the first --reports IU reports written as IU-style XML files (one per
  report, as in ecgen-radiology/), parsed alone and ingested end to end.

The machine is shared, so the text-PDF measurements are interleaved (one round
runs each variant once, in a rotating order) and each figure is the best of
--repeats rounds; every round's seconds are kept in the JSON.
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

TARGET_RATIO = 0.8
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def best_of(repeats: int, fn):
    times = []
    out = None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return out, min(times)


def interleaved(repeats: int, variants: dict) -> dict[str, list[float]]:
    """Seconds of each variant per round; round r starts at variant r (mod n) so no variant always runs first."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            started = time.perf_counter()
            variants[name]()
            times[name].append(round(time.perf_counter() - started, 2))
            print(f"  round {r + 1}: {name} {times[name][-1]} s", file=sys.stderr)
    return times


def token_windows(tokenizer, text: str, size: int) -> list[str]:
    """A page's whole text as consecutive windows of ``size`` word pieces (no overlap), decoded to text."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[i : i + size]) for i in range(0, len(ids), size)]


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
    from medrag.index.text_index import embedding_text
    from medrag.ingest.pdf import read_pdf
    from medrag.ingest.pipeline import chunk_for, ingest

    pages = sum(pymupdf.open(p).page_count for p in pdfs)
    embedder = SentenceTransformerEmbedder(model, device="cpu")
    embedder.setup()  # model loading is not ingestion
    raw_model = SentenceTransformer(embedder.resolved.location, device="cpu", local_files_only=embedder.resolved.is_local)
    tokenizer, max_len = raw_model.tokenizer, raw_model.max_seq_length
    window = max_len - 2  # room for [CLS] and [SEP]
    raw_batch = 32  # SentenceTransformer.encode's default: what a raw script gets
    counts: dict[str, int] = {}

    def raw_windowed(batch_size: int = raw_batch) -> None:
        texts = []
        for path in pdfs:
            with pymupdf.open(path) as doc:
                for page in doc:
                    texts.extend(token_windows(tokenizer, page.get_text(), window))
        raw_model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        counts["raw_windows"] = len(texts)

    def raw_truncated() -> None:
        texts = []
        for path in pdfs:
            with pymupdf.open(path) as doc:
                texts.extend(page.get_text() for page in doc)
        raw_model.encode(texts, batch_size=raw_batch, normalize_embeddings=True, show_progress_bar=False)

    settings_for_chunks = load_settings(progress=False)
    chunk_texts = [embedding_text(c) for p in pdfs for c in chunk_for(read_pdf(p), settings_for_chunks)]

    def raw_same_texts() -> None:
        for path in pdfs:
            with pymupdf.open(path) as doc:
                [page.get_text() for page in doc]
        raw_model.encode(chunk_texts, batch_size=embedder.batch_size, normalize_embeddings=True, show_progress_bar=False)

    def medrag() -> None:
        with tempfile.TemporaryDirectory() as home:
            settings = load_settings(home=home, progress=False)
            counts["chunks"] = ingest(pdfs, index_name="bench", embedder=embedder, settings=settings).chunks_added

    def parse_only() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for path in pdfs:
                read_pdf(path, thumbnails_dir=Path(tmp) / "pages", figures_dir=Path(tmp) / "figures")

    raw_model.encode(chunk_texts[:8])  # warm both models up outside the timings
    embedder.embed_texts(chunk_texts[:8])
    times = interleaved(repeats, {
        "medrag": medrag, "raw_windowed": raw_windowed, "raw_truncated": raw_truncated,
        "raw_same_texts": raw_same_texts, "parse_only": parse_only,
    })
    best = {name: min(values) for name, values in times.items()}
    rate = {name: pages / seconds for name, seconds in best.items()}
    page_tokens = 0
    for path in pdfs:
        with pymupdf.open(path) as doc:
            page_tokens += sum(len(tokenizer(page.get_text(), add_special_tokens=False)["input_ids"]) for page in doc)
    chunk_tokens = sum(len(ids) for ids in tokenizer(chunk_texts, truncation=True, max_length=max_len)["input_ids"])
    return {
        "pdfs": [p.name for p in pdfs],
        "pages": pages,
        "chunks": counts["chunks"],
        "embedder": model,
        "max_seq_length": max_len,
        "medrag_ingest_s": best["medrag"],
        "medrag_pages_per_s": round(rate["medrag"], 3),
        "medrag_chunks_per_s": round(counts["chunks"] / best["medrag"], 2),
        "medrag_parse_only_pages_per_s": round(rate["parse_only"], 2),
        "raw_baseline": (
            f"PyMuPDF page.get_text() for every page; each page's text tokenised with the model's tokenizer "
            f"(no special tokens) and cut into consecutive windows of max_seq_length-2 = {window} word pieces, "
            "no overlap, each decoded back to text; all windows encoded by one SentenceTransformer.encode call "
            f"(its default batch_size {raw_batch}, normalize_embeddings=True)"
        ),
        "medrag_embed_batch_size": embedder.batch_size,
        "raw_windows": counts["raw_windows"],
        "raw_s": best["raw_windowed"],
        "raw_pages_per_s": round(rate["raw_windowed"], 3),
        "ratio": round(rate["medrag"] / rate["raw_windowed"], 3),
        "word_pieces": {"page_text": page_tokens, "medrag_chunk_texts": chunk_tokens,
                        "note": (f"medrag's chunks: up to {settings_for_chunks.chunking.max_words} words, "
                                 f"{settings_for_chunks.chunking.overlap_sentences} sentence(s) repeated between neighbours, "
                                 "the section heading prefixed; captions are chunks of their own")},
        "secondary_raw_truncated_one_text_per_page": {
            "note": "NOT the target: one text per page, silently truncated by the model at max_seq_length, so it embeds only the start of each page",
            "seconds": best["raw_truncated"],
            "pages_per_s": round(rate["raw_truncated"], 3),
            "ratio_medrag_to_it": round(rate["medrag"] / rate["raw_truncated"], 3),
        },
        "secondary_raw_same_chunk_texts": {
            "note": "raw PyMuPDF extraction + raw encoding of exactly the chunk texts medrag embeds, at medrag's batch size: the rest of the gap is medrag's own overhead",
            "seconds": best["raw_same_texts"],
            "pages_per_s": round(rate["raw_same_texts"], 3),
            "ratio_medrag_to_it": round(rate["medrag"] / rate["raw_same_texts"], 3),
        },
        "rounds_s": times,
    }


def targets(text: dict) -> dict:
    """The issue's target, pass or fail; on a fail, where the time goes (from the measured figures)."""
    passed = text["ratio"] >= TARGET_RATIO
    out = {
        "ratio_medrag_to_raw_pages_per_s": {"target": f">= {TARGET_RATIO}", "value": text["ratio"], "pass": passed},
    }
    if not passed:
        same = text["secondary_raw_same_chunk_texts"]
        tokens = text["word_pieces"]
        parse_share = text["pages"] / text["medrag_parse_only_pages_per_s"] / text["medrag_ingest_s"]
        out["ratio_medrag_to_raw_pages_per_s"]["why"] = (
            f"medrag embeds {tokens['medrag_chunk_texts'] / tokens['page_text']:.2f}x the word pieces of the page text "
            "(neighbouring chunks share a sentence, chunks carry their section heading, captions are chunks of their own) "
            f"and parsing with figures and page images takes {parse_share:.0%} of its time; encoding exactly its chunk "
            f"texts raw gives {same['ratio_medrag_to_it']} of that raw rate, i.e. the rest of the gap is the extra text, not overhead"
        )
    return out


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
    from medrag.errors import SourceFileError
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

        def parse_all() -> int:
            skipped = 0
            for f in files:
                try:
                    read_xml_report(f)
                except SourceFileError:  # e.g. a report with no text in any section: ingest logs and skips it too
                    skipped += 1
            return skipped

        skipped, parse_s = best_of(repeats, parse_all)

        def run() -> int:
            with tempfile.TemporaryDirectory() as home:
                settings = load_settings(home=home, progress=False)
                return ingest([folder], index_name="reports", embedder=embedder, settings=settings, skip_bad=True).chunks_added

        chunks, ingest_s = best_of(repeats, run)
    return {
        "reports": len(rows),
        "skipped_reports": skipped,
        "chunks": chunks,
        "embedder": model,
        "parse_only_reports_per_s": round(len(rows) / parse_s, 1),
        "ingest_s": round(ingest_s, 2),
        "ingest_reports_per_s": round(len(rows) / ingest_s, 1),
        "ingest_chunks_per_s": round(chunks / ingest_s, 1),
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
            "note": "shared machine (2 cores, other jobs running): text-PDF variants interleaved, best of --repeats rounds",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "args": {"text_pdfs": args.text_pdfs, "repeats": args.repeats, "reports": args.reports, "scanned_pages": args.scanned_pages},
    }
    print("text PDFs ...", file=sys.stderr)
    out["text_pdfs"] = bench_text_pdfs(text_pdfs, args.model, args.repeats)
    print(json.dumps(out["text_pdfs"]), file=sys.stderr)
    out["targets"] = targets(out["text_pdfs"])
    if args.reports > 0:  # 0 leaves the part out
        print("reports ...", file=sys.stderr)
        out["reports"] = bench_reports(args.data / "reports" / "reports.jsonl", args.reports, args.model, args.repeats)
        print(json.dumps(out["reports"]), file=sys.stderr)
    if args.scanned_pages > 0:
        print("scanned PDF ...", file=sys.stderr)
        out["scanned_pdf"] = bench_scanned(scanned, args.scanned_pages, args.ocr)
    out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
