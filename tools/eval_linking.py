"""Evaluate entity linking on held-out ontology synonyms: precision and recall at 1, to a JSON file.

    .venv/bin/python tools/eval_linking.py --out results/eval_linking.json

For a seeded sample of terms (HPO and Disease Ontology) that have EXACT
synonyms, one synonym per term is held out: the linker's dictionary is built
WITHOUT it, and the synonym is the query; the gold answer is its term. A
synonym whose normalised words equal another surface form of the same term
(e.g. a layperson synonym identical to the name) is skipped as trivial.

P@1 = correct top links / queries that got any link; R@1 = correct top links / all queries.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kg"


def build_sample(kg, linker_key, per_source: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    by_source = defaultdict(list)
    for node_id, data in kg.graph.nodes(data=True):
        if data["source"] not in {"hp.obo", "HumanDO.obo"}:
            continue
        exact = [text for text, scope in data.get("synonyms", ()) if scope == "EXACT" and text not in data.get("abbreviations", ())]
        if exact:
            by_source[data["source"]].append((node_id, exact))
    sample = []
    for source in sorted(by_source):
        terms = sorted(by_source[source])
        rng.shuffle(terms)
        for node_id, exact in terms:
            if sum(1 for q in sample if q["source"] == source) >= per_source:
                break
            synonym = rng.choice(exact)
            data = kg.graph.nodes[node_id]
            others = [data["name"]] + [t for t, _ in data["synonyms"] if t != synonym] + list(data.get("abbreviations", ()))
            if linker_key(synonym) in {linker_key(t) for t in others}:
                continue  # the term keeps this exact wording under another form: not a test
            sample.append({"qid": f"{source}:{node_id}", "source": source, "node_id": node_id, "text": synonym})
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with hp.obo, HumanDO.obo, phenotype.hpoa.gz")
    parser.add_argument("--per-source", type=int, default=1000, help="held-out synonyms per ontology")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--embedder", default="", help="also evaluate with the embedding fallback (e.g. all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, default=Path("results/eval_linking.json"))
    args = parser.parse_args()

    from medrag.kg.build import SourceSpec, build_graph
    from medrag.kg.linking import EntityLinker

    kg = build_graph([
        SourceSpec("obo", args.data / "hp.obo"),
        SourceSpec("obo", args.data / "HumanDO.obo", title="Human Disease Ontology"),
        SourceSpec("hpoa", args.data / "phenotype.hpoa.gz"),
    ])
    keyer = EntityLinker.__new__(EntityLinker)  # only its normaliser, before the real dictionary exists
    keyer._stems = {}
    sample = build_sample(kg, keyer.key, args.per_source, args.seed)
    exclude = [(q["node_id"], q["text"]) for q in sample]
    runs = {"dictionary+fuzzy": None}
    if args.embedder:
        from medrag.embed.text import make_embedder

        runs[f"dictionary+fuzzy+embedding({args.embedder})"] = make_embedder(args.embedder, device="cpu")
    report = {
        "task": "held-out EXACT synonyms of HPO and DO terms -> term id (dictionary built without them)",
        "sources": {s["file"]: s["version"] for s in kg.manifest["sources"]},
        "queries": len(sample), "by_source": dict(Counter(q["source"] for q in sample)), "seed": args.seed,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "runs": {},
    }
    for label, embedder in runs.items():
        started = time.perf_counter()
        linker = EntityLinker(kg, exclude=exclude, embedder=embedder)
        build_s = time.perf_counter() - started
        answered = correct = equivalent = 0
        per_source = defaultdict(lambda: {"n": 0, "answered": 0, "correct": 0})
        methods, times, examples = Counter(), [], []
        for q in sample:
            t0 = time.perf_counter()
            links = linker.link(q["text"], per_span=1)
            times.append(time.perf_counter() - t0)
            stats = per_source[q["source"]]
            stats["n"] += 1
            if not links:
                continue
            top = links[0]
            answered += 1
            stats["answered"] += 1
            methods[top.method] += 1
            if top.node_id == q["node_id"]:
                correct += 1
                stats["correct"] += 1
            if top.node_id == q["node_id"] or kg.graph.has_edge(top.node_id, q["node_id"], key="same_as"):
                equivalent += 1
            elif len(examples) < 15:
                examples.append({"query": q["text"], "gold": f"{q['node_id']} {kg.graph.nodes[q['node_id']]['name']}", "got": f"{top.node_id} {top.name}", "method": top.method})
        n = len(sample)
        report["runs"][label] = {
            "precision_at_1": round(correct / answered, 4) if answered else 0.0,
            "recall_at_1": round(correct / n, 4),
            # A link to a node joined to the gold one by same_as (shared OMIM/ORPHA/UMLS/MeSH xref) names the same concept.
            "recall_at_1_same_as_equivalent": round(equivalent / n, 4),
            "answered": answered, "correct": correct,
            "per_source": {s: {**v, "precision_at_1": round(v["correct"] / v["answered"], 4) if v["answered"] else 0.0,
                               "recall_at_1": round(v["correct"] / v["n"], 4)} for s, v in sorted(per_source.items())},
            "top_link_method": dict(methods),
            "linker_build_s": round(build_s, 2),
            "ms_per_query_mean": round(1000 * statistics.mean(times), 3),
            "ms_per_query_p95": round(1000 * sorted(times)[int(0.95 * (n - 1))], 3),
            "errors_sample": examples,
        }
        print(label, json.dumps({k: v for k, v in report["runs"][label].items() if k not in {"errors_sample", "per_source"}}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
