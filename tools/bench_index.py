"""Speed, memory and recall of the FAISS index kinds, next to raw faiss calls on the same data.

    python tools/bench_index.py --out results/bench_index.json               # 10k and 100k vectors
    python tools/bench_index.py --sizes 10000 100000 1000000 --out ...       # + 1M (needs ~4 GB RAM, long)

Data: seeded synthetic 384-d unit vectors drawn around 2,000 centres (sentence embeddings
cluster by topic; uniform random vectors have no meaningful neighbours and make every
approximate index look bad). Queries come from the same distribution.

For each size and kind (flat, hnsw, ivfpq) it reports:
- build_s: FaissIndex.add of all vectors with string ids and metadata (IVF-PQ: includes training);
- memory: the faiss structure's serialized size, medrag's estimate, and the process RSS growth
  (structure + id maps + metadata);
- latency of one query at a time, k=10: medrag search p50/p95/p99 and the same call on the raw
  faiss index (same parameters, no ids/metadata); ``p50_ratio`` = medrag / raw;
- filtered search p50 (a filter matching 10% of rows);
- recall@10: overlap of the top 10 with exact search.
faiss runs with --threads OpenMP threads (default 1: a shared machine gives unstable timings otherwise).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

DIM = 384
K = 10


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def clustered_vectors(n: int, dim: int, seed: int, centres: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = np.random.default_rng(12345).standard_normal((centres, dim)).astype(np.float32)  # same centres for data and queries
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: 1M x 384 float64 noise would need 3 GB
        m = min(100_000, n - start)
        x[start : start + m] = middle[rng.integers(0, centres, m)] + 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {f"p{p}_ms": round(float(np.percentile(ms, p)), 4) for p in (50, 95, 99)}


def raw_params(index, k: int):
    """The search parameters medrag passes, for the raw faiss call."""
    import faiss

    if index.structure == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=max(index.params.hnsw_ef_search, k))
    if index.structure == "ivfpq":
        return faiss.SearchParametersIVF(nprobe=index._index.nprobe)
    return None


def bench_one(kind: str, x: np.ndarray, queries: np.ndarray, exact: np.ndarray, n_latency: int) -> dict:
    import faiss

    from medrag.index.faiss_index import FaissIndex

    n = len(x)
    ids = [f"v{i}" for i in range(n)]
    metadata = [{"group": i % 10} for i in range(n)]
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    index = FaissIndex(DIM, kind=kind, use_gpu=False)
    for start in range(0, n, 50_000):  # batches, as ingestion adds them
        index.add(ids[start : start + 50_000], x[start : start + 50_000], metadata[start : start + 50_000])
    build_s = time.perf_counter() - started
    rss_growth = rss_bytes() - rss_before

    # warm up, then one query at a time
    index.search(queries[:5], k=K)
    params = raw_params(index, K)
    raw = index._index
    ours, theirs, filtered = [], [], []
    for q in queries[:n_latency]:
        q = q[None, :]
        t0 = time.perf_counter()
        index.search(q, k=K)
        t1 = time.perf_counter()
        raw.search(q, K, params=params) if params is not None else raw.search(q, K)
        t2 = time.perf_counter()
        index.search(q, k=K, where={"group": 3})
        t3 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
        filtered.append(t3 - t2)

    found = index.search(queries, k=K)
    recall = float(np.mean([len({f"v{j}" for j in row} & {h.id for h in hits}) / K for row, hits in zip(exact, found)]))
    medrag_lat, raw_lat = percentiles(ours), percentiles(theirs)
    stats = index.stats()
    result = {
        "kind": kind,
        "structure": index.structure,
        "n": n,
        "build_s": round(build_s, 2),
        "memory": {
            "faiss_bytes": int(faiss.serialize_index(raw).nbytes),
            "estimate_bytes": stats["memory_bytes"],
            "rss_growth_bytes": int(rss_growth),
        },
        "latency": {
            "medrag": medrag_lat,
            "raw_faiss": raw_lat,
            "p50_ratio": round(medrag_lat["p50_ms"] / max(raw_lat["p50_ms"], 1e-9), 3),
            "filtered_10pct": percentiles(filtered),
        },
        "recall@10": round(recall, 4),
        "params": {key: stats[key] for key in ("nlist", "nprobe", "pq_m", "code_bytes", "hnsw_m", "ef_search") if key in stats},
    }
    del index, raw
    gc.collect()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq"])
    parser.add_argument("--queries", type=int, default=200, help="queries for recall (the first --latency of them are timed)")
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_index.json"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import faiss
    from tqdm.auto import tqdm

    from medrag.index.faiss_index import AnnParams

    faiss.omp_set_num_threads(args.threads)
    report = {
        "config": {
            "dim": DIM, "k": K, "sizes": args.sizes, "kinds": args.kinds, "queries": args.queries, "timed_queries": args.latency,
            "threads": args.threads, "seed": args.seed, "data": "clustered synthetic unit vectors (2,000 centres, noise 0.8)",
            "params": AnnParams().to_dict(),
        },
        "machine": {"python": platform.python_version(), "faiss": faiss.__version__, "cpu": platform.processor() or platform.machine()},
        "runs": [],
    }
    runs = [(n, kind) for n in args.sizes for kind in args.kinds]
    with tqdm(total=len(runs), desc="bench", unit="run", disable=args.no_progress) as bar:
        for n in args.sizes:
            x = clustered_vectors(n, DIM, seed=args.seed)
            queries = clustered_vectors(args.queries, DIM, seed=args.seed + 1)
            exact_index = faiss.IndexFlatIP(DIM)
            exact_index.add(x)
            exact = exact_index.search(queries, K)[1]
            del exact_index
            for kind in args.kinds:
                bar.set_postfix(n=n, kind=kind)
                row = bench_one(kind, x, queries, exact, args.latency)
                report["runs"].append(row)
                print(json.dumps({k: row[k] for k in ("kind", "n", "build_s", "recall@10")} | {
                    "p50_ms": row["latency"]["medrag"]["p50_ms"], "ratio": row["latency"]["p50_ratio"],
                    "faiss_mb": round(row["memory"]["faiss_bytes"] / 2**20, 1)}), file=sys.stderr)
                bar.update(1)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")  # partial results survive a kill
            del x
    return 0


if __name__ == "__main__":
    sys.exit(main())
