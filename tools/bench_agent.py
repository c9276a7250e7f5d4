"""Benchmark the agent graph: orchestration overhead per step, and end-to-end latency of the embedded default.

    .venv/bin/python tools/bench_agent.py --out results/bench_agent.json

1. Overhead: an agent whose tools answer instantly (a keyword search over a
   few passages, no embedder) — the time of a question minus the time spent
   inside tools, divided by the steps it ran. Target: <= 10 ms per step.
2. End to end: the default agent (MiniLM embedder, hybrid search, extractive
   composer, support verifier, weight-free image tools) over the demo index
   (HPO terms, built by `medrag demo` if missing), on CPU. p50 and p95 over the
   questions, after one warm-up question that loads the model. Target: p50 <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OVERHEAD_PASSAGES = [
    ("genetics.pdf", 12, "Marfan syndrome is a disorder of connective tissue caused by mutations in the FBN1 gene."),
    ("genetics.pdf", 13, "Marfan syndrome is inherited in an autosomal dominant pattern."),
    ("heart.pdf", 4, "The sinoatrial node is the pacemaker of the heart."),
    ("bone.pdf", 9, "Osteoclasts break down old bone in a process called resorption."),
]
OVERHEAD_QUESTIONS = [
    "What is the pacemaker of the heart?",
    "Which cells break down old bone?",
    "What is Marfan syndrome and how is it inherited?",
    "What is the capital of France?",  # thin evidence: runs every round
]
E2E_QUESTIONS = [
    "What is the term for an abnormally slow heart rate?",
    "What is a fast heart rate called?",
    "What is the medical term for shortness of breath?",
    "What does cyanosis mean?",
    "What is a heart murmur?",
    "What is the term for coughing up blood?",
    "What is an irregular heart rhythm called?",
    "What is wheezing?",
    "What is the term for high blood pressure in the lungs?",
    "What is pleural effusion?",
    "What is the term for an enlarged heart?",
    "What is chest pain caused by reduced blood flow to the heart called?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_overhead(repeats: int) -> dict:
    from medrag.agent.compose import ExtractiveComposer
    from medrag.agent.graph import Agent
    from medrag.agent.verify import SupportVerifier
    from medrag.config import AgentSettings, Settings
    from medrag.testing import KeywordSearchTool

    settings = Settings(home=tempfile.mkdtemp(), progress=False, agent=AgentSettings(abstain_below=0.2))
    agent = Agent(KeywordSearchTool(OVERHEAD_PASSAGES), ExtractiveComposer(None), SupportVerifier(None), settings)
    agent.ask(OVERHEAD_QUESTIONS[0])  # warm-up: imports, thread pool
    per_step, per_question = [], []
    for _ in range(repeats):
        for question in OVERHEAD_QUESTIONS:
            started = time.perf_counter()
            answer = agent.ask(question)
            total = time.perf_counter() - started
            in_tools = sum(t.duration_s for t in answer.trace if t.node == "act")
            per_step.append(1000 * (total - in_tools) / len(answer.trace))
            per_question.append(1000 * total)
    return {
        "questions": len(per_step),
        "overhead_ms_per_step_p50": round(statistics.median(per_step), 3),
        "overhead_ms_per_step_p95": round(percentile(per_step, 0.95), 3),
        "question_ms_p50": round(statistics.median(per_question), 3),
        "target_ms_per_step": 10,
    }


def bench_end_to_end(home: Path) -> dict:
    from medrag.agent.graph import Agent
    from medrag.config import load_settings
    from medrag.demo import DEMO_INDEX, build_demo_index
    from medrag.embed.text import make_embedder

    os.environ["MEDRAG_HOME"] = str(home)
    settings = load_settings()
    settings.progress = False
    embedder = make_embedder(settings.embedder, device=settings.device)
    build_demo_index(settings, embedder, progress=False)
    started = time.perf_counter()
    agent = Agent.from_index(DEMO_INDEX, settings=settings, embedder=embedder)
    agent.ask(E2E_QUESTIONS[0])
    warm = time.perf_counter() - started
    latencies, rounds, answered = [], [], 0
    for question in E2E_QUESTIONS:
        started = time.perf_counter()
        answer = agent.ask(question)
        latencies.append(time.perf_counter() - started)
        rounds.append(answer.rounds)
        answered += not answer.abstained
    return {
        "index": DEMO_INDEX,
        "embedder": settings.embedder,
        "questions": len(E2E_QUESTIONS),
        "first_question_s_including_model_load": round(warm, 3),
        "latency_s_p50": round(statistics.median(latencies), 3),
        "latency_s_p95": round(percentile(latencies, 0.95), 3),
        "mean_rounds": round(statistics.mean(rounds), 2),
        "answered": answered,
        "target_p50_s": 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_agent.json")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--home", type=Path, default=None, help="MEDRAG_HOME with (or for) the demo index")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "overhead": bench_overhead(args.repeats),
        "end_to_end": bench_end_to_end(args.home or Path(tempfile.mkdtemp(prefix="medrag-bench-"))),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
