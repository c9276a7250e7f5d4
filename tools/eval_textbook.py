"""Retrieval recall on textbook questions: does a top-k passage come from a gold page?

    python tools/eval_textbook.py --data ../shared/data/textbook --out results/textbook_retrieval.json

DIR holds the textbook PDFs, ground_truth.json and a questions JSONL
(fields: question, gold_pdf, gold_pages, also_supported_pages). The PDFs are
ingested into an index under --home (a temporary folder by default; pass a
folder to reuse the index across runs), every question goes through the
hybrid retriever, and recall@1/5/10 and MRR@10 are printed and written to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def load_questions(data: Path, questions: Path | None) -> list[dict]:
    path = questions or next(iter(sorted(data.glob("questions*.jsonl"))), None)
    if path is None or not path.is_file():
        sys.exit(f"no questions JSONL found in {data} (pass --questions FILE)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(data: Path, home: Path, *, embedder_spec: str, questions_file: Path | None, ks=(1, 5, 10), progress=True) -> dict:
    from medrag.config import load_settings
    from medrag.embed.text import make_embedder
    from medrag.index.hybrid import HybridRetriever
    from medrag.index.text_index import IndexStore
    from medrag.ingest.pipeline import ingest

    settings = load_settings(home=str(home), embedder=embedder_spec, progress=progress)
    embedder = make_embedder(embedder_spec, device=settings.device)
    pdfs = sorted(p for p in data.glob("*.pdf") if not p.stem.endswith("_SCANNED"))
    started = time.perf_counter()
    report = ingest(pdfs, index_name="eval-textbook", embedder=embedder, settings=settings)
    ingest_s = time.perf_counter() - started
    index = IndexStore(settings.indexes_dir).open("eval-textbook", embedder.info())
    retriever = HybridRetriever(index, embedder, settings.retrieval)
    questions = load_questions(data, questions_file)

    hits_at = {k: 0 for k in ks}
    reciprocal_ranks = []
    per_question = []
    started = time.perf_counter()
    results = retriever.search_many([q["question"] for q in questions], k=max(ks))
    search_s = time.perf_counter() - started
    for q, evidence in zip(questions, results):
        gold = {(q["gold_pdf"], p) for p in q["gold_pages"] + q.get("also_supported_pages", [])}
        ranks = [i for i, ev in enumerate(evidence) if (ev.citation.source, ev.citation.page) in gold]
        first = ranks[0] + 1 if ranks else None
        for k in ks:
            hits_at[k] += int(first is not None and first <= k)
        reciprocal_ranks.append(1.0 / first if first else 0.0)
        per_question.append(
            {
                "qid": q.get("qid"),
                "first_hit_rank": first,
                "top": [(ev.citation.source, ev.citation.page) for ev in evidence[:3]],
                "gold": sorted(gold),
            }
        )
    n = len(questions)
    return {
        **{f"recall@{k}": round(hits_at[k] / n, 4) for k in ks},
        "mrr@10": round(sum(reciprocal_ranks) / n, 4),
        "n": n,
        "embedder": embedder.info().to_dict(),
        "settings": {"retrieval": settings.retrieval.model_dump(), "chunking": settings.chunking.model_dump()},
        "chunks": len(index),
        "ingest_seconds": round(ingest_s, 1) if report.chunks_added else None,
        "search_ms_per_question": round(1000 * search_s / n, 1),
        "misses": [p for p in per_question if p["first_hit_rank"] != 1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data/textbook")
    parser.add_argument("--out", type=Path, default=Path("results/textbook_retrieval.json"))
    parser.add_argument("--questions", type=Path, default=None, help="questions JSONL (default: questions*.jsonl in --data)")
    parser.add_argument("--home", type=Path, default=None, help="MEDRAG_HOME to build the index in (default: a temporary folder)")
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"data folder not found: {args.data}")
    with tempfile.TemporaryDirectory(prefix="medrag-eval-") as tmp:
        home = args.home or Path(tmp)
        result = evaluate(args.data, home, embedder_spec=args.embedder, questions_file=args.questions, progress=not args.no_progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("recall@1", "recall@5", "recall@10", "mrr@10", "n", "chunks")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
