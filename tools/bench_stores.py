"""Insert / search / filtered-search throughput of the vector stores behind the VectorIndex protocol.

    python tools/bench_stores.py                       # 20k x 384-d, all installed stores
    python tools/bench_stores.py --n 5000 --stores faiss milvus --out /tmp/b.json

Every store gets the same seeded, L2-normalised vectors and metadata ({"group": i % 10,
"page": i}); queries are other seeded vectors. Recall@k is measured against exact numpy
search (with the same filter), so an approximate store shows what it loses. Figures are for
this machine and are written with its CPU count and the package versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medrag.testing.conformance import unit_vectors  # noqa: E402


def make_faiss(dim, workdir):
    from medrag.index.faiss_index import FaissIndex

    return FaissIndex(dim, use_gpu=False)


def make_milvus(dim, workdir):
    from medrag.index.milvus_store import MilvusStore

    return MilvusStore(dim, uri=str(workdir / "milvus.db"))


def make_pgvector(dim, workdir, index_type="flat"):
    from medrag.index.pgvector_store import EMBEDDED, PgvectorStore

    return PgvectorStore(dim, uri=EMBEDDED + str(workdir / "pgdata"), index_type=index_type)


def make_pgvector_hnsw(dim, workdir):
    return make_pgvector(dim, workdir, index_type="hnsw")


STORES = {"faiss": make_faiss, "milvus": make_milvus, "pgvector": make_pgvector, "pgvector-hnsw": make_pgvector_hnsw}
PACKAGES = ("faiss-cpu", "pymilvus", "milvus-lite", "psycopg", "pgvector", "pgserver", "numpy")


def exact(vectors, meta_group, queries, k, group=None):
    scores = queries @ vectors.T
    if group is not None:
        scores[:, meta_group != group] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :k]
    return [{f"v{j}" for j in row if np.isfinite(scores[i, j])} for i, row in enumerate(top)]


def recall(results, truth):
    return float(np.mean([len({h.id for h in hits} & t) / max(1, len(t)) for hits, t in zip(results, truth)]))


def bench_one(name, factory, vectors, queries, k, batch, workdir):
    n, dim = vectors.shape
    ids = [f"v{i}" for i in range(n)]
    metas = [{"group": i % 10, "page": i} for i in range(n)]
    groups = np.array([m["group"] for m in metas])

    t0 = time.perf_counter()
    index = factory(dim, workdir)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        index.add(ids[start : start + batch], vectors[start : start + batch], metas[start : start + batch])
    insert_s = time.perf_counter() - t0
    assert len(index) == n, (name, len(index))

    out = {"store": name, "n": n, "dim": dim, "open_s": round(opened, 3), "insert_s": round(insert_s, 3),
           "insert_per_s": round(n / insert_s, 1)}
    for label, where, group in (("search", None, None), ("filter_10pct", {"group": 3}, 3), ("filter_range_1pct", {"page": {"gte": 0, "lte": n // 100 - 1}}, None)):
        index.search(queries[:2], k=k, where=where)  # warm up
        t0 = time.perf_counter()
        results = index.search(queries, k=k, where=where)
        seconds = time.perf_counter() - t0
        if label == "filter_range_1pct":
            scores = queries @ vectors.T
            scores[:, n // 100 :] = -np.inf
            truth = [{f"v{j}" for j in row} for row in np.argsort(-scores, axis=1)[:, :k]]
        else:
            truth = exact(vectors, groups, queries, k, group)
        out[f"{label}_qps"] = round(len(queries) / seconds, 1)
        out[f"{label}_ms_per_query"] = round(1000 * seconds / len(queries), 2)
        out[f"{label}_recall@{k}"] = round(recall(results, truth), 4)
    t0 = time.perf_counter()
    index.save(workdir / f"saved-{name}")
    out["save_s"] = round(time.perf_counter() - t0, 3)
    out["disk_bytes"] = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1000, help="vectors per add() call")
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=list(STORES))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_stores.json")
    args = parser.parse_args(argv)

    vectors = unit_vectors(args.n, args.dim, seed=0)
    queries = unit_vectors(args.queries, args.dim, seed=1)
    rows = []
    for name in args.stores:
        # outside pytest's 0700 temp tree: as root, the embedded PostgreSQL runs as another user
        workdir = Path(tempfile.mkdtemp(prefix=f"medrag-bench-{name}-"))
        workdir.chmod(0o755)
        try:
            row = bench_one(name, STORES[name], vectors, queries, args.k, args.batch, workdir)
        except ImportError as exc:
            row = {"store": name, "skipped": f"not installed: {exc}"}
        finally:
            if name.startswith("pgvector"):
                from medrag.index import pgvector_store

                for server in pgvector_store._servers.values():
                    server.cleanup()
                pgvector_store._servers.clear()
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(row), flush=True)
        rows.append(row)

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    result = {
        "benchmark": "tools/bench_stores.py",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": round(os.getloadavg()[0], 1), "platform": platform.platform(), "python": platform.python_version()},
        "versions": versions,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
