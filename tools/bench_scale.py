"""Scale-out figures on this machine: ingest chunks/s (local vs Ray) and FAISS / Milvus / pgvector at 100k-1M vectors.

    python tools/bench_scale.py --out results/bench_scale.json                   # everything (~45 min on 2 cores)
    python tools/bench_scale.py --sizes 2000 --stores faiss --skip-ingest --out /tmp/s.json   # seconds

Ingest (``--skip-ingest`` to leave out): the same fixed slice of ../shared/data is ingested by
``run_engine("local")``, ``run_engine("ray", workers=1)`` and ``run_engine("ray", workers=2)``
(Ray started once with ``num_cpus=2``; every engine into a fresh MEDRAG_HOME, FAISS store,
default embedder). The slice, by default:

- textbook: ``openstax_ap2e_ch06_bone_tissue_and_the_skeletal_system.pdf`` (the text PDF, not the
  scanned copy: OCR would dominate);
- reports: the first ``--reports`` (60) IU reports of reports/reports.jsonl, in two JSONL files;
- MedPix: the first ``--medpix-cases`` (30) cases of medpix/cases.jsonl (id, title, history +
  findings + discussion) and the captions of those cases' images (medpix/images.jsonl), one JSONL
  file each.

Each engine's time is the whole ``run_engine`` call (model load in the driver / actors, parse,
chunk, embed, save); chunks/s = chunks written / that time. All engines must write the same chunk ids.

Stores: for each size in ``--sizes`` the same seeded clustered 384-d unit vectors as
tools/bench_index.py (``clustered_vectors``) with ``{"group": i % 10}`` metadata; queries from
the same distribution (seed + 1); ground truth = exact inner-product top 10 (faiss IndexFlatIP).
Each (store, size) runs in a child process with a time limit, so its memory is its own and a
case that runs out of time still reports what it measured (``status: "timeout"`` and the last
phase reached). Per case: insert/build time, the first search, single-query latency p50/p99
(k = 10), recall@10 of those queries, bytes on disk, RSS growth of the process (milvus-lite 3
runs inside it) and, for PostgreSQL, the proportional set size (PSS) of its server processes.
Index choices (stated in the JSON):

- faiss: ``FaissIndex(kind="auto")`` with default AnnParams, all vectors in one ``add`` (so the
  structure is the one ``auto`` picks for the final size: HNSW at 100k, IVF at 1M, with the
  codec AnnParams names (RaBitQ 5 bit when this file was measured));
- milvus: milvus-lite (in process), ``--milvus-index`` (HNSW: M 16, efConstruction 200, ef 64,
  the milvus-lite defaults; milvus-lite 3 also has FLAT, IVF_FLAT, IVF_SQ8, HNSW_SQ, no IVF_PQ/DiskANN);
- pgvector: embedded PostgreSQL (pgserver), rows written by medrag's PgvectorStore (binary COPY);
  ``--pg-index`` up to ``--pg-hnsw-max`` vectors, ``--pg-index-large`` above: ``hnsw-after-load``
  (COPY into an unindexed table, then one CREATE INDEX USING hnsw, m 16, ef_construction 64: the
  bulk-load pattern; growing the graph row by row inside COPY ran at under 100 rows/s here),
  ``hnsw`` (the store's own, row by row) or ``flat`` (exact scan; the default above 200k, where
  an HNSW build does not fit this run's time).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_index import (  # same synthetic data as bench_index
    clustered_vectors,
    rss_bytes,
)

DIM, K = 384, 10
STORES = ("faiss", "milvus", "pgvector")
PACKAGES = ("faiss-cpu", "pymilvus", "milvus-lite", "psycopg", "pgvector", "pgserver", "ray", "sentence-transformers", "torch", "numpy")
TEXTBOOK_PDF = "openstax_ap2e_ch06_bone_tissue_and_the_skeletal_system.pdf"


# -- ingest ------------------------------------------------------------------------------------


def ingest_slice(data: Path, out: Path, *, pdfs: list[str], reports: int, medpix_cases: int) -> tuple[list[Path], dict]:
    """Write the fixed slice of ../shared/data the engines ingest; returns the paths and a description."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [data / "textbook" / name for name in pdfs]
    rows = [json.loads(line) for line in (data / "reports" / "reports.jsonl").open(encoding="utf-8") if line.strip()][:reports]
    half = (len(rows) + 1) // 2
    for i, part in enumerate((rows[:half], rows[half:])):
        if part:
            path = out / f"iu_reports_{i}.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
            paths.append(path)
    cases = [json.loads(line) for line in (data / "medpix" / "cases.jsonl").open(encoding="utf-8") if line.strip()][:medpix_cases]
    wanted = {c["case_id"]: c for c in cases}
    case_rows = []
    for c in cases:
        text = "\n\n".join(str(c[f]) for f in ("history", "findings", "case_discussion", "topic_disease_discussion") if c.get(f) and c[f] != "N/A")
        case_rows.append({"id": c["case_id"], "title": c.get("title") or c["case_id"], "text": text})
    captions = []
    for line in (data / "medpix" / "images.jsonl").open(encoding="utf-8"):
        if line.strip():
            img = json.loads(line)
            if img.get("case_id") in wanted and img.get("caption"):
                captions.append({"id": img["image_id"], "title": wanted[img["case_id"]].get("title") or img["case_id"], "text": img["caption"]})
    for name, part in (("medpix_cases.jsonl", case_rows), ("medpix_captions.jsonl", captions)):
        path = out / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        paths.append(path)
    described = {
        "textbook_pdfs": pdfs,
        "iu_reports": f"first {len(rows)} records of reports/reports.jsonl (2 JSONL files)",
        "medpix_cases": f"first {len(cases)} records of medpix/cases.jsonl (history, findings, discussion)",
        "medpix_captions": f"{len(captions)} captions of those cases' images (medpix/images.jsonl)",
        "files": len(paths),
    }
    return paths, described


def bench_ingest(args, workdir: Path) -> dict:
    from medrag.config import Settings
    from medrag.index.text_index import IndexStore
    from medrag.ingest.ray_engine import _actor_cpus, init_ray, run_engine

    paths, described = ingest_slice(args.data, workdir / "slice", pdfs=args.pdfs, reports=args.reports, medpix_cases=args.medpix_cases)
    runs, chunk_ids = [], {}
    ray_started = None
    for engine, workers in [("local", 1)] + [("ray", w) for w in args.ray_workers]:
        label = engine if engine == "local" else f"ray-{workers}"
        if engine == "ray" and ray_started is None:
            os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")  # a loaded machine starts raylets slowly
            t0 = time.perf_counter()
            init_ray(num_cpus=2)
            ray_started = time.perf_counter() - t0
        home = workdir / f"home-{label}"
        settings = Settings(home=home, progress=False, device="cpu", embedder=args.embedder)
        gc.collect()
        t0 = time.perf_counter()
        report = run_engine(engine, paths, embedder_spec=args.embedder, settings=settings, index_name="scale", workers=workers, progress=False)
        seconds = time.perf_counter() - t0
        index = IndexStore(settings.indexes_dir).open("scale")
        chunk_ids[label] = sorted(index.chunks)
        row = {
            "engine": label, "workers": workers if engine == "ray" else None, "files": len(paths),
            "files_failed": len(report.failed), "chunks": report.chunks_added, "seconds": round(seconds, 2),
            "chunks_per_s": round(report.chunks_added / seconds, 2),
        }
        print(json.dumps(row), flush=True)
        runs.append(row)
        shutil.rmtree(home, ignore_errors=True)
    if ray_started is not None:
        import ray

        ray.shutdown()
    counts = {r["engine"]: r["chunks"] for r in runs}
    known = list(chunk_ids.values())
    return {
        "slice": described,
        "embedder": args.embedder,
        "ray": {"num_cpus": 2, "init_s": round(ray_started, 2) if ray_started is not None else None,
                "actor_cpus": {f"ray-{w}": _actor_cpus(w, 1.0, 2.0) for w in args.ray_workers},
                "note": "init once, not in the engines' times; parse tasks take 1 CPU, each embedding actor the CPUs above "
                "(one torch thread) and loads the model inside the time"},
        "local_note": "local = this process, torch with its default threads (2 here); model load inside the time",
        "runs": runs,
        "same_chunk_count": len(set(counts.values())) == 1,
        "same_chunk_ids": bool(known) and all(ids == known[0] for ids in known),
    }


# -- stores: one case (store, size) per child process ----------------------------------------


def _pg_server_pss(pgdata: Path) -> int:
    """Proportional set size of the PostgreSQL processes serving ``pgdata`` (0 when not readable)."""
    import psutil

    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        main = psutil.Process(pid)
        total = 0
        for proc in [main, *main.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.Error, AttributeError):
                total += proc.memory_info().rss
        return int(total)
    except Exception:  # noqa: BLE001 - whatever fails (permissions, a stopped server): not measured
        return 0


PG_INDEXES = {
    "hnsw": "medrag's store index_type='hnsw': m 16, ef_construction 64 (pgvector defaults), grown row by row during COPY; search ef_search --pg-ef-search (40)",
    "hnsw-after-load": "rows COPYed into medrag's store without an index, then CREATE INDEX USING hnsw (vector_ip_ops) WITH (m 16, "
    "ef_construction 64), maintenance_work_mem max(1 GB, 3 KB per row) so the graph is built in memory, 1 parallel maintenance "
    "worker; searched through the store with ef_search --pg-ef-search (40)",
    "flat": "no ANN index: exact sequential scan (medrag's store index_type='flat')",
}


def _pg_create_hnsw(index) -> None:
    """Bulk-load pattern: build the HNSW graph once over the loaded table (pgvector builds it in memory), then search it."""
    conn = index._conn
    rows = conn.execute(f"SELECT count(*) FROM {index.table}").fetchone()[0]
    # pgvector builds in memory while the graph fits maintenance_work_mem and crawls on disk after
    # (about 1.9 KB a row at 384-d, m 16); 3 KB a row keeps a 1M build in memory.
    memory_mb = max(1024, -(-rows * 3 // 1024))
    conn.execute(f"SET maintenance_work_mem = '{memory_mb}MB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute(f"CREATE INDEX ON {index.table} USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)")
    conn.execute(f"ANALYZE {index.table}")
    index.index_type = "hnsw"  # the store's search path for an HNSW table (ef_search, exact fallback for filters)


def _milvus_wait_indexed(index) -> str:
    """Drain milvus-lite's background compaction + index-build queue (in process; not a pymilvus API)."""
    try:
        from milvus_lite.server_manager import server_manager_instance

        _, db, _ = server_manager_instance._servers[os.path.abspath(index.uri)]
        collection = db.get_collection(index.collection)
        for _ in range(3):  # a compaction can schedule another round
            collection._wait_for_bg(timeout=None)
        return "drained milvus-lite's background queue"
    except Exception as exc:  # noqa: BLE001 - another milvus-lite version: measure without waiting, and say so
        return f"not drained ({type(exc).__name__}: {exc})"


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _percentiles(samples: list[float]) -> dict:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def run_case(store: str, n: int, workdir: Path, opts: dict) -> None:
    """Child process: build one store over the saved vectors, measure, write ``result.json`` after every phase."""
    result_path = workdir / "result.json"
    out: dict = {"store": store, "n": n, "status": "running", "phase": "load data"}

    def checkpoint(phase: str) -> None:
        out["phase"] = phase
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(result_path)

    data = Path(opts["data_dir"])
    x = np.load(data / "vectors.npy")
    queries = np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy")
    ids = [f"v{i}" for i in range(n)]
    metas = [{"group": i % 10} for i in range(n)]
    import faiss

    faiss.omp_set_num_threads(opts["threads"])
    gc.collect()
    rss0 = rss_bytes()
    store_dir = workdir / "store"
    store_dir.mkdir()
    batch = opts["batch"]
    pgdata = store_dir / "pgdata"

    checkpoint("open")
    t0 = time.perf_counter()
    if store == "faiss":
        from medrag.index.faiss_index import AnnParams, FaissIndex

        index = FaissIndex(DIM, kind="auto", use_gpu=False)
        out["index"] = {"kind": "auto", "params": AnnParams().to_dict(), "added": "one add() of all vectors"}
    elif store == "milvus":
        from medrag.index.milvus_store import MilvusStore

        index = MilvusStore(DIM, uri=str(store_dir / "milvus.db"), index_type=opts["milvus_index"])
        out["index"] = {"type": opts["milvus_index"], "engine": "milvus-lite (in process)", "batch": batch,
                        "params": "milvus-lite defaults: HNSW M 16, efConstruction 200, search ef 64; IVF_FLAT nlist 128, nprobe 10; per segment of <= 100k rows"}
    else:
        from medrag.index.pgvector_store import EMBEDDED, PgvectorStore

        kind = opts["pg_index"]
        index = PgvectorStore(DIM, uri=EMBEDDED + str(pgdata), index_type="hnsw" if kind == "hnsw" else "flat", ef_search=opts["pg_ef_search"])
        out["index"] = {"type": kind, "engine": "embedded PostgreSQL (pgserver) + pgvector", "batch": batch, "params": PG_INDEXES[kind],
                        "ef_search": opts["pg_ef_search"] if kind != "flat" else None}
    out["open_s"] = round(time.perf_counter() - t0, 3)
    rss_open = rss_bytes()  # after the engine started (milvus-lite's server threads, PostgreSQL's connection)
    out["rss_engine_bytes"] = int(rss_open - rss0)
    pss_open = _pg_server_pss(pgdata) if store == "pgvector" else 0
    disk_open = _disk_bytes(store_dir)

    checkpoint("insert")
    t0 = time.perf_counter()
    if store == "faiss":
        index.add(ids, x, metas)
        out["inserted"] = n
    else:
        for start in range(0, n, batch):
            index.add(ids[start : start + batch], x[start : start + batch], metas[start : start + batch])
            out["inserted"] = min(n, start + batch)
            out["insert_s_so_far"] = round(time.perf_counter() - t0, 2)
            if (start // batch) % 10 == 0:
                checkpoint("insert")
    out["insert_s"] = round(time.perf_counter() - t0, 2)
    out["insert_per_s"] = round(n / out["insert_s"], 1)
    if store == "pgvector" and opts["pg_index"] == "hnsw-after-load":
        checkpoint("create index")
        t0 = time.perf_counter()
        out["create_index_s"] = None
        _pg_create_hnsw(index)
        out["create_index_s"] = round(time.perf_counter() - t0, 2)

    checkpoint("save")
    t0 = time.perf_counter()
    index.save(store_dir / "saved")  # FAISS: write the files; Milvus: flush (seals segments); PostgreSQL: manifest only
    out["save_s"] = round(time.perf_counter() - t0, 2)
    if store == "faiss":
        stats = index.stats()
        out["index"]["structure"] = index.structure
        out["index"]["built"] = {k: stats[k] for k in ("nlist", "nprobe", "pq_m", "code_bytes", "hnsw_m", "ef_search") if k in stats}

    if store == "milvus":
        # milvus-lite builds segment indexes (and compacts) on a background thread after a flush;
        # searches meanwhile scan unindexed segments while that thread holds the GIL. Wait for it,
        # so latency is that of the built index, and count the wait in build_s.
        checkpoint("index build (background)")
        t0 = time.perf_counter()
        out["index_wait"] = _milvus_wait_indexed(index)
        out["index_wait_s"] = round(time.perf_counter() - t0, 2)

    checkpoint("first search")
    t0 = time.perf_counter()
    index.search(queries[:1], k=K)  # Milvus builds/loads segment indexes lazily: the first search pays for it
    out["first_search_s"] = round(time.perf_counter() - t0, 2)
    # build_s: from the first add() until the store answers searches through its index
    out["build_s"] = round(out["insert_s"] + out.get("create_index_s", 0) + out["save_s"] + out.get("index_wait_s", 0) + out["first_search_s"], 2)
    if store == "faiss":
        faiss.omp_set_num_threads(1)  # single queries: OpenMP threads only add noise on a shared machine
    for q in queries[1:4]:  # warm up
        index.search(q[None, :], k=K)

    checkpoint("search")
    latencies, recalls = [], []
    started = time.perf_counter()
    for i, q in enumerate(queries[: opts["latency_queries"]]):
        t0 = time.perf_counter()
        hits = index.search(q[None, :], k=K)[0]
        latencies.append(time.perf_counter() - t0)
        recalls.append(len({h.id for h in hits} & {f"v{j}" for j in truth[i]}) / K)
        if time.perf_counter() - started > opts["search_budget_s"] and len(latencies) >= 20:
            break
    out["queries_timed"] = len(latencies)
    out["latency"] = _percentiles(latencies)
    out["qps_single_stream"] = round(len(latencies) / sum(latencies), 1)
    out["recall@10"] = round(float(np.mean(recalls)), 4)

    checkpoint("measure")
    rss_end = rss_bytes()
    out["rss_growth_bytes"] = int(rss_end - rss0)
    per_vector_memory = rss_end - rss_open
    if store == "pgvector":
        out["server_pss_bytes"] = pss = _pg_server_pss(pgdata)
        out["server_pss_empty_bytes"] = pss_open
        per_vector_memory += pss - pss_open
        out["table_bytes"] = int(index.stats()["memory_bytes"])  # pg_total_relation_size: heap + TOAST + indexes
    out["disk_bytes"] = _disk_bytes(store_dir)
    out["disk_empty_bytes"] = disk_open
    out["bytes_per_vector_disk"] = round((out["disk_bytes"] - disk_open) / n, 1)
    # memory per vector: process RSS (+ PostgreSQL PSS) after the searches minus the same with the empty store open
    out["bytes_per_vector_memory"] = round(per_vector_memory / n, 1)
    out["status"] = "ok"
    checkpoint("done")


def make_data(n: int, queries: int, seed: int, folder: Path) -> None:
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    x = clustered_vectors(n, DIM, seed=seed)
    q = clustered_vectors(queries, DIM, seed=seed + 1)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    truth = exact.search(q, K)[1]
    np.save(folder / "vectors.npy", x)
    np.save(folder / "queries.npy", q)
    np.save(folder / "truth.npy", truth)


def bench_stores(args, workdir: Path, deadline: float) -> list[dict]:
    rows = []
    for n in args.sizes:
        data_dir = workdir / f"data-{n}"
        t0 = time.perf_counter()
        make_data(n, args.queries, args.seed, data_dir)
        print(f"data n={n}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        for store in args.stores:
            pg_index = args.pg_index_large if n > args.pg_hnsw_max else args.pg_index
            row = run_case_in_child(store, n, workdir, data_dir, args, pg_index, deadline)
            print(json.dumps({k: v for k, v in row.items() if k not in ("index",)}), flush=True)
            rows.append(row)
            args.partial(rows)
        shutil.rmtree(data_dir, ignore_errors=True)
    return rows


def run_case_in_child(store: str, n: int, workdir: Path, data_dir: Path, args, pg_index: str, deadline: float) -> dict:
    if store in ("milvus", "pgvector"):
        missing = _missing(store)
        if missing:
            return {"store": store, "n": n, "status": "skipped", "reason": f"not installed: {missing} (pip install \"medrag[{store}]\")"}
    if deadline - time.time() < 30:
        return {"store": store, "n": n, "status": "not run", "reason": "the run's time budget (--budget-min / --deadline-utc) was used up"}
    case_dir = Path(tempfile.mkdtemp(prefix=f"medrag-scale-{store}-{n}-"))
    case_dir.chmod(0o755)  # as root, the embedded PostgreSQL runs as another user who must enter it
    opts = {"data_dir": str(data_dir), "threads": args.threads, "batch": args.batch, "latency_queries": args.latency_queries,
            "search_budget_s": args.search_budget_s, "milvus_index": args.milvus_index, "pg_index": pg_index,
            "pg_ef_search": args.pg_ef_search}
    limit = max(30.0, min(args.case_timeout_s, deadline - time.time()))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_case", store, str(n), str(case_dir), json.dumps(opts)]
    started = time.time()
    with open(case_dir / "stderr.log", "w") as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
            status = None if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            _kill_case(proc, case_dir)
            status = "timeout"
    try:
        row = json.loads((case_dir / "result.json").read_text())
    except (OSError, ValueError):
        row = {"store": store, "n": n}
    row["wall_s"] = round(time.time() - started, 1)
    if status == "timeout":
        row["status"] = "timeout"
        row["reason"] = f"stopped after {limit:.0f}s (time limit of this run) during phase '{row.get('phase')}'"
    elif status and row.get("status") == "ok":
        row["exit"] = f"{status} after writing its results"
    elif status:
        row["status"] = status
        row["reason"] = (case_dir / "stderr.log").read_text()[-800:]
    _stop_postgres(case_dir / "store" / "pgdata")
    shutil.rmtree(case_dir, ignore_errors=True)
    return row


def _kill_case(proc: subprocess.Popen, case_dir: Path) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the child's own session (start_new_session): this case only
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _stop_postgres(pgdata: Path) -> None:
    """A killed child leaves its embedded PostgreSQL running: stop the one serving this case's folder."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    import signal

    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast shutdown"
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    except (OSError, ValueError, IndexError):
        pass


def _missing(store: str) -> str:
    import importlib.util

    needs = {"milvus": ("pymilvus", "milvus_lite"), "pgvector": ("psycopg", "pgvector", "pgserver")}[store]
    return ", ".join(m for m in needs if importlib.util.find_spec(m) is None)


# -- main -------------------------------------------------------------------------------------


def versions() -> dict:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def machine() -> dict:
    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 1)}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return info


def merged(previous: dict, now: dict, why: str) -> dict:
    """``previous`` with the ingest part and the (store, n) cases of ``now`` replacing theirs; the rerun is recorded."""
    out = dict(previous)
    if now.get("ingest") is not None:
        out["ingest"] = now["ingest"]
    fresh = {(r["store"], r["n"]): dict(r, rerun=why) for r in now["stores"]}
    out["stores"] = [fresh.pop((r["store"], r["n"]), r) for r in previous.get("stores", [])] + list(fresh.values())
    out["reruns"] = [r for r in previous.get("reruns", []) if r.get("started_utc") != now["started_utc"]] + [
        {"why": why, "command": now["command"], "started_utc": now["started_utc"], "finished_utc": now.get("finished_utc"),
         "elapsed_s": now.get("elapsed_s"), "load_average_1m": [now["machine"].get("load_average_1m_at_start"),
                                                                  now["machine"].get("load_average_1m_at_end")],
         "cases": sorted(f"{r['store']}@{r['n']}" for r in now["stores"])}]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_case"]:  # child process of one (store, size) case
        run_case(argv[1], int(argv[2]), Path(argv[3]), json.loads(argv[4]))
        # Measured and written: leave now. milvus-lite's background threads (compaction, index
        # builds) otherwise keep the interpreter alive for minutes; the parent stops PostgreSQL.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_scale.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=STORES)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-stores", action="store_true")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pdfs", nargs="*", default=[TEXTBOOK_PDF], help="textbook PDFs (names under data/textbook)")
    parser.add_argument("--reports", type=int, default=60)
    parser.add_argument("--medpix-cases", type=int, default=30)
    parser.add_argument("--ray-workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--queries", type=int, default=200, help="queries made (ground truth for each)")
    parser.add_argument("--latency-queries", type=int, default=200, help="single queries timed (recall over the same)")
    parser.add_argument("--search-budget-s", type=float, default=60.0, help="stop timing queries after this long (at least 20)")
    parser.add_argument("--batch", type=int, default=10_000, help="vectors per add() for Milvus and pgvector")
    parser.add_argument("--threads", type=int, default=2, help="faiss OpenMP threads while building (search: 1)")
    parser.add_argument("--milvus-index", default="HNSW")
    parser.add_argument("--pg-index", default="hnsw-after-load", choices=list(PG_INDEXES), help="pgvector index up to --pg-hnsw-max vectors")
    parser.add_argument("--pg-hnsw-max", type=int, default=200_000)
    parser.add_argument("--pg-index-large", default="flat", choices=list(PG_INDEXES), help="pgvector index above --pg-hnsw-max")
    parser.add_argument("--pg-ef-search", type=int, default=40, help="pgvector HNSW: hnsw.ef_search of the searches (pgvector's default 40)")
    parser.add_argument("--case-timeout-s", type=float, default=900.0, help="time limit of one (store, size) case")
    parser.add_argument("--budget-min", type=float, default=45.0, help="the whole run stops starting/continuing cases after this")
    parser.add_argument("--deadline-utc", help="HH:MM (UTC): also stop by then (a run queued behind a lock keeps its end time)")
    parser.add_argument("--update", metavar="WHY", help="keep the other results already in --out; replace only the cases run now (noted with WHY)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.time()
    deadline = started + 60 * args.budget_min
    if args.deadline_utc:
        hours, minutes = (int(v) for v in args.deadline_utc.split(":"))
        day = time.gmtime(started)
        until = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, hours, minutes, 0, 0, 0, 0)) - time.timezone
        deadline = min(deadline, until if until > started else until + 86400)

    report = {
        "benchmark": "tools/bench_scale.py",
        "deadline_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline)),
        "command": "python tools/bench_scale.py " + " ".join(argv),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": machine(),
        "versions": versions(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"vectors": "clustered synthetic unit vectors, tools/bench_index.clustered_vectors (2,000 centres, noise 0.8)",
                 "dim": DIM, "k": K, "metadata": '{"group": i % 10}', "ground_truth": "exact inner product (faiss IndexFlatIP)"},
        "ingest": None,
        "stores": [],
    }

    previous = json.loads(args.out.read_text()) if args.update and args.out.exists() else None

    def write() -> None:
        report["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        report["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 1)
        report["elapsed_s"] = round(time.time() - started, 1)
        final = report if previous is None else merged(previous, report, args.update)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(final, indent=2) + "\n", encoding="utf-8")
        tmp.replace(args.out)

    def partial(rows: list[dict]) -> None:
        report["stores"] = rows
        write()  # partial results survive a kill

    args.partial = partial
    workdir = Path(tempfile.mkdtemp(prefix="medrag-scale-"))
    workdir.chmod(0o755)
    try:
        if not args.skip_ingest:
            report["ingest"] = bench_ingest(args, workdir)
            write()
        if not args.skip_stores:
            report["stores"] = bench_stores(args, workdir, deadline)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write()
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
