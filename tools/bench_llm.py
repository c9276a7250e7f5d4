"""Measure a local LLM on CPU: load time and generation speed, written to a JSON file.

    .venv/bin/python tools/bench_llm.py --llm gguf:SmolLM2-135M-Instruct --out results/bench_llm.json

Greedy decoding, the same prompt as ../shared/MODELS.md, a fixed number of new
tokens; tokens/s counts generated tokens only (the prompt's prefill included in the time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

PROMPT = "What are the common symptoms of type 2 diabetes?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default="gguf:SmolLM2-135M-Instruct", help="LLM spec, as medrag ask --llm takes")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (MODELS.md figures use 2)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_llm.json"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from medrag.vlm import make_llm

    llm = make_llm(args.llm)
    messages = [{"role": "user", "content": PROMPT}]
    started = time.perf_counter()
    llm.setup()
    load_s = time.perf_counter() - started

    runs = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        gen = llm.generate(messages, max_new_tokens=args.tokens)
        seconds = time.perf_counter() - t0
        runs.append({"seconds": round(seconds, 3), "completion_tokens": gen.completion_tokens, "prompt_tokens": gen.prompt_tokens,
                     "tokens_per_s": round(gen.completion_tokens / seconds, 2)})
    result = {
        "llm": args.llm,
        "model": llm.name,
        "load_s": round(load_s, 2),
        "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in runs),
        "runs": runs,
        "sample": gen.text[:300],
        "threads": args.threads,
        "torch": torch.__version__,
        # The load average says whether other work shared the CPU: figures on a busy machine are lower.
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]},  # before, after
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("llm", "load_s", "tokens_per_s_median")}))


if __name__ == "__main__":
    main()
