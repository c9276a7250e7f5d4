"""Speed, memory and recall of the FAISS index kinds, next to raw faiss calls on the same data.

    flock /tmp/medrag-bench.lock python tools/bench_index.py                 # 10k, 100k and 1M vectors (~30 min on 2 cores)
    python tools/bench_index.py --sizes 10000 100000 --out /tmp/bench.json    # quicker, while developing

Data: seeded synthetic 384-d unit vectors drawn around 2,000 centres (sentence embeddings
cluster by topic; uniform random vectors have no meaningful neighbours and make every
approximate index look bad). Queries come from the same distribution.

For each size and kind (flat, hnsw, ivfpq) it reports:
- build_s: FaissIndex.add of all vectors with string ids and metadata (IVF-PQ: includes training;
  faiss builds with --build-threads threads, searches are timed with --threads);
- memory: the faiss structure's serialized size, the id map as saved (ids.json), their sum, medrag's
  estimate, and the process RSS growth (structure + id maps + metadata); with ``ivf_refine`` the
  float16 originals live in a memory-mapped file, reported apart as originals_disk_bytes;
- latency of one query at a time, k=10: medrag search p50/p95/p99 and the same call on the raw
  faiss index (same parameters, no ids/metadata); ``p50_ratio`` = medrag / raw. The two are timed
  in alternating blocks of different queries, so neither profits from the other's warm cache;
- filtered search p50 (a filter matching 10% of rows);
- recall@10: overlap of the top 10 with exact search.

Latency timing stops after --latency queries or --latency-budget seconds per run (at least 20
queries), so exact search over 1M vectors does not take an hour. HNSW at sizes whose build is
projected (from the previous size's build rate) to exceed --hnsw-budget minutes is built with the
lighter params in HNSW_LIGHT, or skipped when even those would not fit; the JSON says which.

The top-level ``targets`` block says pass/fail for the targets of issue 4.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 384
K = 10
TARGET_P50_RATIO = 1.2
TARGET_IVFPQ_BYTES = 0.2e9  # 0.2 GB at 1M vectors: faiss structure + id map
TARGET_IVFPQ_RECALL = 0.9
HNSW_LIGHT = {"hnsw_m": 16, "hnsw_ef_construction": 40}  # when the default graph would take too long to build


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
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


def raw_search(index, k: int, x: np.ndarray):
    """The raw faiss call medrag makes for an unfiltered search (same structure, same parameters).

    An IVF index with ``ivf_refine`` is compared with what one would write by hand: faiss fetches
    ivf_refine x k candidates, numpy re-scores them against float16 originals held in memory.
    """
    import faiss

    raw = index._index
    if index.structure == "ivfpq" and index.params.ivf_refine:
        fetch, originals = k * index.params.ivf_refine, x.astype(np.float16)

        def refined(q):
            labels = raw.search(q, fetch)[1][0]
            labels = labels[labels >= 0]
            scores = originals[labels].astype(np.float32) @ q[0]
            top = np.argsort(-scores)[:k]
            return scores[top], labels[top]

        return refined
    if index.structure == "hnsw" and k > index.params.hnsw_ef_search:
        params = faiss.SearchParametersHNSW(efSearch=k)
        return lambda q: raw.search(q, k, params=params)
    return lambda q: raw.search(q, k)  # efSearch / nprobe / qb are set on the index itself


def time_searches(index, queries: np.ndarray, n_max: int, budget_s: float, x: np.ndarray) -> dict[str, list[float]]:
    """Per-query seconds of medrag search, raw faiss and a filtered search, in alternating blocks."""
    raw = raw_search(index, K, x)
    calls = {
        "medrag": lambda q: index.search(q, k=K),
        "raw_faiss": raw,
        "filtered_10pct": lambda q: index.search(q, k=K, where={"group": 3}),
    }
    times: dict[str, list[float]] = {name: [] for name in calls}
    started, block = time.perf_counter(), 10
    for b, start in enumerate(range(0, n_max, block)):
        if start >= 20 and time.perf_counter() - started > budget_s:
            break
        chunk = queries[start : min(start + block, n_max)]
        order = list(calls) if b % 2 == 0 else ["raw_faiss", "medrag", "filtered_10pct"]
        for name in order:
            for q in chunk:
                q = q[None, :]
                t0 = time.perf_counter()
                calls[name](q)
                times[name].append(time.perf_counter() - t0)
    return times


def id_map_bytes(index) -> int:
    """Size of the id map as FaissIndex.save writes it (ids.json)."""
    pairs = sorted(index._int_to_str.items())
    return len(json.dumps([[n, s] for n, s in pairs]).encode())


def bench_one(kind: str, x: np.ndarray, queries: np.ndarray, exact: np.ndarray, args, params: dict) -> dict:
    import faiss

    from medrag.index.faiss_index import FaissIndex

    n = len(x)
    ids = [f"v{i}" for i in range(n)]
    metadata = [{"group": i % 10} for i in range(n)]
    gc.collect()
    rss_before = rss_bytes()
    faiss.omp_set_num_threads(args.build_threads)
    started = time.perf_counter()
    index = FaissIndex(DIM, kind=kind, params=params, use_gpu=False)
    for start in range(0, n, 50_000):  # batches, as ingestion adds them
        index.add(ids[start : start + 50_000], x[start : start + 50_000], metadata[start : start + 50_000])
    build_s = time.perf_counter() - started
    rss_growth = rss_bytes() - rss_before
    faiss.omp_set_num_threads(args.threads)

    saved = None
    if index.stats().get("originals_disk_bytes"):
        # Search the originals as a user would: memory-mapped from the saved index, not held from the build.
        saved = tempfile.TemporaryDirectory(dir=args.work_dir)
        index.save(Path(saved.name) / "index")
        del index
        gc.collect()
        index = FaissIndex.load(Path(saved.name) / "index", use_gpu=False)
    index.search(queries[:5], k=K)  # warm up
    times = time_searches(index, queries, args.latency, args.latency_budget, x)
    found = index.search(queries, k=K)
    recall = float(np.mean([len({f"v{j}" for j in row} & {h.id for h in hits}) / K for row, hits in zip(exact, found)]))
    lat = {name: percentiles(samples) for name, samples in times.items()}
    stats = index.stats()
    faiss_bytes, ids_bytes = int(faiss.serialize_index(index._index).nbytes), id_map_bytes(index)
    result = {
        "kind": kind,
        "structure": index.structure,
        "n": n,
        "build_s": round(build_s, 2),
        "memory": {
            "faiss_bytes": faiss_bytes,
            "id_map_bytes": ids_bytes,
            "total_bytes": faiss_bytes + ids_bytes,
            "total_gb": round((faiss_bytes + ids_bytes) / 1e9, 4),
            "estimate_bytes": stats["memory_bytes"],
            "rss_growth_bytes": int(rss_growth),
            "originals_disk_bytes": stats.get("originals_disk_bytes", 0),
        },
        "latency": {
            "timed_queries": len(times["medrag"]),
            "medrag": lat["medrag"],
            "raw_faiss": lat["raw_faiss"],
            "p50_ratio": round(lat["medrag"]["p50_ms"] / max(lat["raw_faiss"]["p50_ms"], 1e-9), 3),
            "filtered_10pct": lat["filtered_10pct"],
        },
        "recall@10": round(recall, 4),
        "params": {key: stats[key] for key in stats if key not in ("kind", "structure", "dim", "count", "deleted", "memory_bytes")},
        "param_overrides": params,
    }
    del index
    gc.collect()
    if saved is not None:
        saved.cleanup()
    return result


def hnsw_plan(n: int, previous: dict | None, budget_min: float) -> tuple[dict | None, str]:
    """HNSW params for ``n`` vectors given the previous size's build: defaults, lighter ones, or None (skip)."""
    if previous is None:
        return {}, "default params"
    # Insertion cost grows ~ log(n) per vector and ~ with M x efConstruction; the light graph (half
    # of each) is assumed to build in a third of the default's time, which errs on the slow side.
    rate = previous["build_s"] / previous["n"] * math.log(n) / math.log(previous["n"])
    projected = rate * n / 60  # minutes with the previous run's params
    light_before = previous["param_overrides"] == HNSW_LIGHT
    default_min, light_min = (projected * 3, projected) if light_before else (projected, projected / 3)
    if default_min <= budget_min:
        return {}, f"default params (build projected at {default_min:.1f} min <= {budget_min:.1f} min)"
    if light_min <= budget_min:
        return dict(HNSW_LIGHT), f"light params {HNSW_LIGHT}: default build projected at {default_min:.1f} min > {budget_min:.1f} min, light at {light_min:.1f} min"
    return None, f"skipped: build projected at {light_min:.1f} min even with {HNSW_LIGHT} (budget {budget_min:.1f} min)"


def minutes_left(deadline_utc: str | None) -> float:
    """Minutes until HH:MM UTC today (inf without a deadline), less 2 for the runs after it."""
    if not deadline_utc:
        return math.inf
    now = time.gmtime()
    hours, minutes = (int(part) for part in deadline_utc.split(":"))
    return (hours * 60 + minutes) - (now.tm_hour * 60 + now.tm_min + now.tm_sec / 60) - 2


def targets(runs: list[dict], largest: int) -> dict:
    ratio = {f"{r['kind']}@{r['n']}": {"p50_ratio": r["latency"]["p50_ratio"], "pass": r["latency"]["p50_ratio"] <= TARGET_P50_RATIO} for r in runs}
    big = [r for r in runs if r["kind"] == "ivfpq" and r["n"] == largest]
    out = {
        "p50_ratio_max": TARGET_P50_RATIO,
        "p50_ratio": ratio,
        "p50_ratio_all_pass": all(v["pass"] for v in ratio.values()),
    }
    if big and largest >= 1_000_000:
        r = big[0]
        out["ivfpq_1m_memory"] = {"max_bytes": TARGET_IVFPQ_BYTES, "total_bytes": r["memory"]["total_bytes"],
                                  "faiss_bytes": r["memory"]["faiss_bytes"], "id_map_bytes": r["memory"]["id_map_bytes"],
                                  "pass": r["memory"]["total_bytes"] <= TARGET_IVFPQ_BYTES}
        out["ivfpq_1m_recall@10"] = {"min": TARGET_IVFPQ_RECALL, "value": r["recall@10"], "pass": r["recall@10"] >= TARGET_IVFPQ_RECALL}
    else:
        out["ivfpq_1m"] = "not measured (no 1M run)"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivfpq", "hnsw"], help="run in this order (HNSW last: its build is the slowest)")
    parser.add_argument("--queries", type=int, default=200, help="queries for recall (the first --latency of them are timed)")
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--latency-budget", type=float, default=60.0, help="seconds of latency timing per run (>= 20 queries)")
    parser.add_argument("--threads", type=int, default=1, help="faiss threads while searching (timed)")
    parser.add_argument("--build-threads", type=int, default=2, help="faiss threads while building")
    parser.add_argument("--hnsw-budget", type=float, default=12.0, help="minutes an HNSW build may take (projected)")
    parser.add_argument("--deadline-utc", help="HH:MM: HNSW builds projected to end after this are skipped too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_index.json"))
    parser.add_argument("--work-dir", help="where indexes with originals are saved and reloaded (default: the system temp folder)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    import faiss
    from tqdm.auto import tqdm

    from medrag.index.faiss_index import AnnParams

    report = {
        "config": {
            "dim": DIM, "k": K, "sizes": args.sizes, "kinds": args.kinds, "queries": args.queries, "timed_queries": args.latency,
            "latency_budget_s": args.latency_budget, "threads": args.threads, "build_threads": args.build_threads,
            "hnsw_budget_min": args.hnsw_budget, "deadline_utc": args.deadline_utc, "seed": args.seed,
            "data": "clustered synthetic unit vectors (2,000 centres, noise 0.8)",
            "params": AnnParams().to_dict(),
        },
        "machine": {"python": platform.python_version(), "faiss": faiss.__version__, "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count()},
        "decisions": {},
        "runs": [],
        "targets": {},
    }
    started = time.perf_counter()
    runs = [(n, kind) for n in args.sizes for kind in args.kinds]
    previous_hnsw = None
    with tqdm(total=len(runs), desc="bench", unit="run", disable=args.no_progress) as bar:
        for n in args.sizes:
            x = clustered_vectors(n, DIM, seed=args.seed)
            queries = clustered_vectors(args.queries, DIM, seed=args.seed + 1)
            faiss.omp_set_num_threads(args.build_threads)
            exact_index = faiss.IndexFlatIP(DIM)
            exact_index.add(x)
            exact = exact_index.search(queries, K)[1]
            del exact_index
            for kind in args.kinds:
                bar.set_postfix(n=n, kind=kind)
                params: dict | None = {}
                if kind == "hnsw":
                    params, why = hnsw_plan(n, previous_hnsw, min(args.hnsw_budget, minutes_left(args.deadline_utc)))
                    report["decisions"][f"hnsw@{n}"] = why
                if params is None:
                    bar.update(1)
                    continue
                row = bench_one(kind, x, queries, exact, args, params)
                if kind == "hnsw":
                    previous_hnsw = row
                report["runs"].append(row)
                print(json.dumps({k: row[k] for k in ("kind", "n", "build_s", "recall@10")} | {
                    "p50_ms": row["latency"]["medrag"]["p50_ms"], "raw_p50_ms": row["latency"]["raw_faiss"]["p50_ms"],
                    "ratio": row["latency"]["p50_ratio"], "total_mb": round(row["memory"]["total_bytes"] / 1e6, 1)}), file=sys.stderr)
                bar.update(1)
                report["targets"] = targets(report["runs"], max(args.sizes))
                report["elapsed_s"] = round(time.perf_counter() - started, 1)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")  # partial results survive a kill
            del x
    return 0


if __name__ == "__main__":
    sys.exit(main())
