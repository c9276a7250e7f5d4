"""Load test of `medrag serve`: concurrent asks against a local server, latency, throughput, thread isolation.

    .venv/bin/python tools/bench_server.py --out results/bench_server.json [--concurrency 50] [--embedders hashing:256,all-MiniLM-L6-v2]

For each embedder (``hashing:256``: near-instant retrieval, so the figures are the
server's and agent's own overhead; ``all-MiniLM-L6-v2``: the embedded default) it
builds a small index in a temporary MEDRAG_HOME, starts uvicorn on 127.0.0.1,
sends ``--concurrency`` questions at once, each in its own conversation thread
(half about bone, half about the heart), and reports p50/p99 latency, throughput,
errors, and whether any answer or thread history holds another thread's evidence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = {
    "bone": ("What is compact bone?", "Which cells form new bone?", "What is spongy bone?"),
    "heart": ("What does the sinoatrial node do?", "What does the mitral valve prevent?", "How many chambers does the heart have?"),
}
TOPIC_PAGE = {"bone": 1, "heart": 2}


def write_pdf(path: Path) -> Path:
    import pymupdf

    pages = [
        ("Bone Tissue", "Compact bone is the denser, stronger of the two types of bone tissue. Spongy bone, also called "
         "cancellous bone, contains trabeculae. Osteoblasts are the bone cells that form new bone; osteoclasts resorb it."),
        ("The Heart", "The human heart has four chambers: two atria and two ventricles. The sinoatrial node is the "
         "pacemaker of the heart and starts each cardiac cycle. The mitral valve prevents backflow of blood into the left atrium."),
    ]
    doc = pymupdf.open()
    for heading, text in pages:
        page = doc.new_page(width=612, height=792)
        page.insert_text((72, 90), heading, fontsize=18, fontname="hebo")
        page.insert_textbox(pymupdf.Rect(72, 110, 540, 400), text, fontsize=11)
    doc.save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, embedder_spec: str, max_concurrent: int):
    import uvicorn

    from medrag.config import load_settings
    from medrag.embed.text import make_embedder
    from medrag.ingest.pipeline import ingest
    from medrag.server.app import create_app
    from medrag.server.service import MedragService, ServerConfig

    os.environ["MEDRAG_HOME"] = str(home)
    settings = load_settings(embedder=embedder_spec, progress=False)
    ingest([write_pdf(home / "anatomy.pdf")], index_name="anatomy", embedder=make_embedder(embedder_spec), settings=settings, progress=False)
    config = ServerConfig(index="anatomy", port=free_port(), max_concurrent=max_concurrent, timeout_s=600)
    server = uvicorn.Server(uvicorn.Config(create_app(config, MedragService(config, settings)), host="127.0.0.1",
                                           port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{config.port}"


async def one(client, base: str, n: int) -> dict:
    topic = "bone" if n % 2 == 0 else "heart"
    question = QUESTIONS[topic][n % len(QUESTIONS[topic])]
    thread_id = f"bench-{n}"
    started = time.perf_counter()
    response = await client.post(base + "/v1/ask", json={"question": question, "thread_id": thread_id})
    latency = time.perf_counter() - started
    row = {"n": n, "topic": topic, "status": response.status_code, "latency_s": latency, "thread_id": thread_id}
    if response.status_code == 200:
        body = response.json()
        row["answer_thread"] = body.get("thread_id")
        row["question_back"] = body.get("question")
        row["pages"] = sorted({c.get("page") for c in body.get("citations", [])})
        row["abstained"] = body.get("abstained")
    return row


async def run_load(base: str, concurrency: int) -> dict:
    import httpx

    async with httpx.AsyncClient(timeout=600) as client:
        await client.post(base + "/v1/ask", json={"question": "What is compact bone?"})  # warm up: agent and model load
        started = time.perf_counter()
        rows = await asyncio.gather(*(one(client, base, n) for n in range(concurrency)))
        wall = time.perf_counter() - started
        histories = {}
        for row in rows:
            r = await client.get(f"{base}/v1/threads/{row['thread_id']}")
            histories[row["thread_id"]] = r.json().get("turns", []) if r.status_code == 200 else None
    ok = [r for r in rows if r["status"] == 200]
    latencies = sorted(r["latency_s"] for r in ok)
    leaks = []
    for row in ok:
        if row["answer_thread"] != row["thread_id"]:
            leaks.append(f"{row['thread_id']}: answer labelled {row['answer_thread']}")
        own = QUESTIONS[row["topic"]][row["n"] % len(QUESTIONS[row["topic"]])]
        if row["question_back"] != own:
            leaks.append(f"{row['thread_id']}: answered another question: {row['question_back']!r}")
        foreign = [p for p in row.get("pages", []) if p != TOPIC_PAGE[row["topic"]]]
        if foreign and not row.get("abstained"):
            leaks.append(f"{row['thread_id']} ({row['topic']}) cites page(s) {foreign}")
        turns = histories.get(row["thread_id"]) or []
        if [t["question"] for t in turns] != [own]:
            leaks.append(f"{row['thread_id']}: thread history {[t['question'] for t in turns]}")

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3) if latencies else float("nan")

    return {
        "concurrency": concurrency,
        "ok": len(ok),
        "errors": {str(r["status"]): sum(1 for x in rows if x["status"] == r["status"]) for r in rows if r["status"] != 200},
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": pct(0.99),
        "wall_s": round(wall, 3),
        "throughput_per_s": round(len(ok) / wall, 2) if wall else None,
        "isolation_violations": leaks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--embedders", default="hashing:256,all-MiniLM-L6-v2")
    parser.add_argument("--max-concurrent", type=int, default=2, help="the server's questions-at-once limit")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_server.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    results = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "runs": {}}
    for spec in [s.strip() for s in args.embedders.split(",") if s.strip()]:
        with tempfile.TemporaryDirectory(prefix="medrag-bench-") as tmp:
            server, thread, base = start_server(Path(tmp), spec, args.max_concurrent)
            try:
                result = asyncio.run(run_load(base, args.concurrency))
            finally:
                server.should_exit = True
                thread.join(timeout=10)
        results["runs"][spec] = result
        print(f"{spec}: {result['ok']}/{args.concurrency} ok, p50 {result['latency_p50_s']} s, p99 {result['latency_p99_s']} s, "
              f"{result['throughput_per_s']}/s, isolation violations: {len(result['isolation_violations'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(not r["isolation_violations"] and not r["errors"] for r in results["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
