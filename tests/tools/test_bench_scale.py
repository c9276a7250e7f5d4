"""tools/bench_scale.py runs end to end at tiny sizes and writes the JSON shape the README and docs/scale.md quote."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "bench_scale.py"
DATA = ROOT.parent / "shared" / "data"
CASE_KEYS = {"store", "n", "status", "index", "insert_s", "build_s", "latency", "recall@10", "disk_bytes",
             "rss_growth_bytes", "bytes_per_vector_disk", "bytes_per_vector_memory", "qps_single_stream"}


def run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def check_case(row: dict, store: str, n: int) -> None:
    assert row["status"] == "ok", row
    assert CASE_KEYS <= set(row), CASE_KEYS - set(row)
    assert row["store"] == store and row["n"] == n
    assert 0 < row["latency"]["p50_ms"] <= row["latency"]["p99_ms"]
    assert 0.5 <= row["recall@10"] <= 1.0  # 2,000 clustered vectors: every store is (near) exact
    assert row["disk_bytes"] > 0 and row["insert_s"] > 0


def test_faiss_tiny_run_writes_the_json_shape(tmp_path):
    report = run(tmp_path, "--sizes", "2000", "--stores", "faiss", "--skip-ingest", "--latency-queries", "50")
    assert report["benchmark"] == "tools/bench_scale.py"
    assert {"cpus", "platform", "python"} <= set(report["machine"])
    assert "faiss-cpu" in report["versions"] and report["params"]["sizes"] == [2000]
    assert report["data"]["dim"] == 384 and report["ingest"] is None
    (row,) = report["stores"]
    check_case(row, "faiss", 2000)
    assert row["index"]["kind"] == "auto" and row["index"]["structure"] == "flat"  # auto below 20k vectors
    assert row["recall@10"] == 1.0 and row["queries_timed"] == 50


def test_missing_store_package_is_reported_not_fatal(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_missing", lambda store: "pymilvus")
    row = module.run_case_in_child("milvus", 10, tmp_path, tmp_path, None, "flat", 0.0)
    assert row["status"] == "skipped" and "medrag[milvus]" in row["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("store", ["milvus", "pgvector"])
def test_external_store_tiny_run(tmp_path, store):
    needs = {"milvus": ("pymilvus", "milvus_lite"), "pgvector": ("psycopg", "pgvector", "pgserver")}[store]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: pip install \"medrag[{store}]\"")
    report = run(tmp_path, "--sizes", "2000", "--stores", store, "--skip-ingest", "--latency-queries", "30")
    (row,) = report["stores"]
    check_case(row, store, 2000)
    if store == "pgvector":
        assert row["index"]["type"] == "hnsw-after-load" and row["create_index_s"] > 0
        assert row["server_pss_bytes"] > 0 and row["table_bytes"] > 0


@pytest.mark.slow
@pytest.mark.data
def test_tiny_ingest_local_and_ray_write_the_same_chunks(tmp_path):
    if not (DATA / "reports" / "reports.jsonl").exists() or not (DATA / "medpix" / "cases.jsonl").exists():
        pytest.skip(f"needs ../shared/data (reports, medpix) at {DATA}")
    if importlib.util.find_spec("ray") is None:
        pytest.skip('ray not installed: pip install "medrag[ray]"')
    report = run(tmp_path, "--skip-stores", "--pdfs", "--reports", "4", "--medpix-cases", "2", "--ray-workers", "1")
    ingest = report["ingest"]
    assert [r["engine"] for r in ingest["runs"]] == ["local", "ray-1"]
    assert all(r["chunks"] > 0 and r["chunks_per_s"] > 0 and r["files_failed"] == 0 for r in ingest["runs"])
    assert ingest["same_chunk_count"] and ingest["same_chunk_ids"]
    assert ingest["slice"]["textbook_pdfs"] == [] and report["stores"] == []

