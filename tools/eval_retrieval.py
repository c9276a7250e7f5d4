"""Retrieval quality of BM25, dense and hybrid search, side by side, on real data.

    python tools/eval_retrieval.py --data ../shared/data --out results/retrieval.json

DIR has the layout of ../shared/data:
- mirage/: corpus.jsonl (documents with the ``question_ids`` they answer) and
  benchmark_dev.json; the pubmedqa and bioasq questions are searched against
  the corpus (record-level: a hit is a gold document id);
- textbook/: PDFs + questions JSONL; items are pages (each at its best
  passage), a hit is a gold or also-supporting page.
recall@k here is the share of questions with at least one relevant item in
the top k; nDCG@10 uses binary relevance. Indexes are built under --home
(temporary by default; pass a folder to reuse them across runs).

Fusion settings (settings.retrieval: fusion, dense_share) were chosen on the
*dev* half of the MIRAGE questions only; each set is also scored on its dev and
test halves (a question's half is fixed by a hash of its id), so the test half
shows whether the choice holds on questions it was not tuned on. ``--tune``
re-runs that choice: a grid of dense_share on the MIRAGE dev half.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

KS = (1, 5, 10)
MODES = ("bm25", "dense", "hybrid")


def score_rankings(rankings: list[list[str]], relevant: list[set[str]]) -> dict:
    """recall@k (hit rate), MRR@10 and nDCG@10 for ranked item ids against relevant sets."""
    out = {f"recall@{k}": 0.0 for k in KS}
    mrr = ndcg = 0.0
    for ranked, gold in zip(rankings, relevant):
        first = next((i for i, item in enumerate(ranked) if item in gold), None)
        for k in KS:
            out[f"recall@{k}"] += first is not None and first < k
        mrr += 1.0 / (first + 1) if first is not None and first < 10 else 0.0
        dcg = sum(1.0 / math.log2(i + 2) for i, item in enumerate(ranked[:10]) if item in gold)
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(gold), 10)))
        ndcg += dcg / ideal if ideal else 0.0
    n = max(len(rankings), 1)
    result = {key: round(value / n, 4) for key, value in out.items()}
    result.update({"mrr@10": round(mrr / n, 4), "ndcg@10": round(ndcg / n, 4), "n": len(rankings)})
    return result


def half(qid: str) -> str:
    """dev or test, fixed by a hash of the question id (about half each, the same on every run)."""
    return "dev" if int(hashlib.sha1(str(qid).encode("utf-8")).hexdigest(), 16) % 2 == 0 else "test"


def score_with_halves(rankings: list[list[str]], relevant: list[set[str]], qids: list[str]) -> dict:
    """Scores over all questions, plus the same scores on the dev and test halves."""
    result = score_rankings(rankings, relevant)
    for name in ("dev", "test"):
        rows = [i for i, qid in enumerate(qids) if half(qid) == name]
        result[name] = score_rankings([rankings[i] for i in rows], [relevant[i] for i in rows])
    return result


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def evaluate_mirage(folder: Path, settings, embedder, tune: bool = False) -> dict:
    from medrag.index.hybrid import HybridRetriever
    from medrag.index.text_index import IndexStore
    from medrag.ingest.pipeline import ingest
    from medrag.ingest.records import RecordMapping

    corpus = folder / "corpus.jsonl"
    ingest([corpus], index_name="eval-mirage", embedder=embedder, settings=settings,
           mapping=RecordMapping("doc_id", ("text",), "title"))
    gold: dict[str, set[str]] = {}
    for line in corpus.read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        for qid in doc["question_ids"]:
            gold.setdefault(qid, set()).add(doc["doc_id"])
    bench = json.loads((folder / "benchmark_dev.json").read_text(encoding="utf-8"))
    questions = [(qid, q["question"]) for ds in ("pubmedqa", "bioasq") for qid, q in bench[ds].items() if qid in gold]
    index = IndexStore(settings.indexes_dir).open("eval-mirage", embedder.info())
    retriever = HybridRetriever(index, embedder, settings.retrieval)
    qids, relevant = [qid for qid, _ in questions], [gold[qid] for qid, _ in questions]

    def rank(mode: str) -> list[list[str]]:
        found = retriever.search_many([text for _, text in questions], k=40, mode=mode)
        return [unique([ev.citation.locator.get("record_id", ev.evidence_id) for ev in evs])[:10] for evs in found]

    results = {}
    for mode in MODES:
        started = time.perf_counter()
        rankings = rank(mode)
        results[mode] = score_with_halves(rankings, relevant, qids)
        results[mode]["ms_per_query"] = round(1000 * (time.perf_counter() - started) / len(questions), 1)
    if tune:  # dense_share grid on the dev half only (the test half is never looked at here)
        dev = [i for i, qid in enumerate(qids) if half(qid) == "dev"]
        base = settings.retrieval.dense_share
        results["tuning"] = {"split": "dev", "fusion": settings.retrieval.fusion, "dense_share": {}}
        for share in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9):
            settings.retrieval.dense_share = share
            rankings = rank("hybrid")
            scores = score_rankings([rankings[i] for i in dev], [relevant[i] for i in dev])
            results["tuning"]["dense_share"][str(share)] = {m: scores[m] for m in ("recall@1", "ndcg@10")}
        settings.retrieval.dense_share = base
    results["corpus"] = {"questions": len(questions), "chunks": len(index)}
    return results


def evaluate_textbook(folder: Path, settings, embedder, tune: bool = False) -> dict:
    from medrag.index.hybrid import HybridRetriever
    from medrag.index.text_index import IndexStore
    from medrag.ingest.pipeline import ingest

    pdfs = sorted(p for p in folder.glob("*.pdf") if not p.stem.endswith("_SCANNED"))
    ingest(pdfs, index_name="eval-textbook", embedder=embedder, settings=settings)
    qfile = next(iter(sorted(folder.glob("questions*.jsonl"))))
    questions = [json.loads(line) for line in qfile.read_text(encoding="utf-8").splitlines() if line.strip()]
    index = IndexStore(settings.indexes_dir).open("eval-textbook", embedder.info())
    retriever = HybridRetriever(index, embedder, settings.retrieval)
    relevant = [{f"{q['gold_pdf']}#{p}" for p in q["gold_pages"] + q.get("also_supported_pages", [])} for q in questions]
    results = {}
    for mode in MODES:
        found = retriever.search_many([q["question"] for q in questions], k=30, mode=mode)
        # Ranked pages (a page counted once, at its best passage), so nDCG stays in [0, 1].
        rankings = [unique([f"{ev.citation.source}#{ev.citation.page}" for ev in evs]) for evs in found]
        results[mode] = score_with_halves(rankings, relevant, [str(q.get("qid", n)) for n, q in enumerate(questions, 1)])
    results["corpus"] = {"chunks": len(index)}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/data")
    parser.add_argument("--out", type=Path, default=Path("results/retrieval.json"))
    parser.add_argument("--home", type=Path, default=None, help="MEDRAG_HOME for the eval indexes (default: temporary)")
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--only", choices=("mirage", "textbook"), default=None)
    parser.add_argument("--fusion", choices=("score", "rrf"), default=None, help="override settings.retrieval.fusion")
    parser.add_argument("--dense-share", type=float, default=None, help="override settings.retrieval.dense_share")
    parser.add_argument("--tune", action="store_true", help="also grid-search dense_share on the MIRAGE dev half")
    args = parser.parse_args(argv)
    from medrag.config import load_settings
    from medrag.embed.text import make_embedder

    with tempfile.TemporaryDirectory(prefix="medrag-eval-") as tmp:
        settings = load_settings(home=str(args.home or tmp), progress=True)
        if args.fusion:
            settings.retrieval.fusion = args.fusion
        if args.dense_share is not None:
            settings.retrieval.dense_share = args.dense_share
        embedder = make_embedder(args.embedder, device=settings.device)
        report = {"embedder": embedder.info().to_dict(), "settings": settings.retrieval.model_dump()}
        for name, fn in (("mirage", evaluate_mirage), ("textbook", evaluate_textbook)):
            folder = args.data / name
            if args.only not in (None, name):
                continue
            if not folder.is_dir():
                print(f"skipping {name}: {folder} not found", file=sys.stderr)
                continue
            report[name] = fn(folder, settings, embedder, tune=args.tune)
            for part in ("all", "dev", "test"):
                row = {m: (report[name][m] if part == "all" else report[name][m][part]) for m in MODES}
                print(name, part, json.dumps({m: {k: row[m][k] for k in ("recall@1", "recall@10", "ndcg@10", "n")} for m in MODES}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
