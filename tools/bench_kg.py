"""Benchmark the knowledge graph on the full HPO + Disease Ontology + HPO annotations: to a JSON file.

    .venv/bin/python tools/bench_kg.py --out results/bench_kg.json

Measures: build time, saved folder size, load time (median of --loads), first
disease query (builds the annotation index), entity-linker build time, linking
ms/query on a mixed query set (names, synonyms, typos, phrase lists, prose),
disease ranking ms/query, and the rank of Marfan syndrome (OMIM:154700) for
"tall stature, arachnodactyly, ectopia lentis".
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kg"
MARFAN_QUERY = "tall stature, arachnodactyly, ectopia lentis"
PROSE = [
    "tall, long fingers, lens dislocation",
    "A 12-year-old boy with tall stature, arachnodactyly and ectopia lentis; his father had aortic root dilatation.",
    "short stature, intellectual disability, seizures and microcephaly",
    "the patient presents with bradycardia, syncope and a prolonged QT interval",
    "hepatosplenomegaly, anemia, bone pain",
]


def typo(text: str, rng: random.Random) -> str:
    if len(text) < 6:
        return text
    i = rng.randrange(1, len(text) - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def query_set(kg, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    nodes = sorted(kg.graph.nodes)
    queries = []
    for node_id in rng.sample(nodes, n):
        data = kg.graph.nodes[node_id]
        forms = [data["name"]] + [s for s, _ in data.get("synonyms", ())]
        form = rng.choice(forms)
        queries.append(form if rng.random() < 0.7 else typo(form, rng))
    phrase_lists = [", ".join(kg.graph.nodes[x]["name"] for x in rng.sample(nodes, 3)) for _ in range(n // 10)]
    return queries + phrase_lists + PROSE


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with hp.obo, HumanDO.obo, phenotype.hpoa.gz")
    parser.add_argument("--queries", type=int, default=1000, help="sampled linking queries (plus phrase lists and prose)")
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("results/bench_kg.json"))
    args = parser.parse_args()

    from medrag.kg.build import SourceSpec, build_graph
    from medrag.kg.graph import KnowledgeGraph
    from medrag.kg.linking import EntityLinker

    sources = [
        SourceSpec("obo", args.data / "hp.obo"),
        SourceSpec("obo", args.data / "HumanDO.obo", title="Human Disease Ontology"),
        SourceSpec("hpoa", args.data / "phenotype.hpoa.gz"),
    ]
    kg, build_s = timed(build_graph, sources)
    tmp = Path(tempfile.mkdtemp(prefix="bench_kg-"))
    try:
        _, save_s = timed(kg.save, tmp / "hpo_do")
        folder_mb = sum(p.stat().st_size for p in (tmp / "hpo_do").iterdir()) / 1e6
        load_times = []
        for _ in range(args.loads):
            kg, seconds = timed(KnowledgeGraph.load, tmp / "hpo_do")
            load_times.append(seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    linker, linker_s = timed(EntityLinker, kg)
    phenotype_linker, phenotype_linker_s = timed(EntityLinker, kg, kinds={"phenotype"})
    queries = query_set(kg, args.queries, args.seed)
    for q in queries[:20]:  # warm the stem cache as a long-lived process would have it
        linker.link(q)
    link_ms = []
    for q in queries:
        link_ms.append(timed(linker.link, q)[1] * 1000)

    phenotypes = phenotype_linker.best_nodes(MARFAN_QUERY)
    first, first_s = timed(kg.rank_diseases, phenotypes, k=10)
    ids = [m.disease_id for m in kg.rank_diseases(phenotypes, k=50)]
    rng = random.Random(args.seed)
    annotated = [n for n, d in kg.graph.nodes(data=True) if d["kind"] == "phenotype"]
    rank_ms = [timed(kg.rank_diseases, rng.sample(annotated, 4), k=10)[1] * 1000 for _ in range(50)]

    def summary(values):
        values = sorted(values)
        return {"mean": round(statistics.mean(values), 3), "p50": round(values[len(values) // 2], 3),
                "p95": round(values[int(0.95 * (len(values) - 1))], 3), "max": round(values[-1], 3)}

    report = {
        "sources": {s["file"]: s["version"] for s in kg.manifest["sources"]},
        "counts": kg.manifest["counts"],
        "problems": {k: v["count"] for k, v in kg.manifest["problems"].items()},
        "build_s": round(build_s, 2),
        "save_s": round(save_s, 2),
        "folder_mb": round(folder_mb, 1),
        "load_s": {"median": round(statistics.median(load_times), 2), "all": [round(t, 2) for t in load_times]},
        "first_disease_query_s": round(first_s, 2),
        "linker_build_s": {"all_nodes": round(linker_s, 2), "phenotypes_only": round(phenotype_linker_s, 2)},
        "linking_ms_per_query": {"queries": len(queries), **summary(link_ms)},
        "rank_diseases_ms_per_query": {"queries": len(rank_ms), "phenotypes_per_query": 4, **summary(rank_ms)},
        "marfan": {"query": MARFAN_QUERY, "phenotypes": phenotypes, "rank_of_OMIM:154700": ids.index("OMIM:154700") + 1 if "OMIM:154700" in ids else None,
                   "top5": [(m.disease_id, m.name, m.score) for m in first[:5]]},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "note": "shared 2-core machine; other jobs were running, so times are upper bounds"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in {"counts", "sources"}}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
