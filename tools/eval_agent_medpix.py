"""The agent end to end on MedPix cases: image + history -> similar cases and a differential, with citations.

    python tools/eval_agent_medpix.py --data ../shared/data/medpix --cases 40 --out results/agent_medpix.json
    python tools/eval_agent_medpix.py --image-embedder dual-encoder:DIR ...   # reuse a trained encoder (trained on
                                                                                # the index part only, or the figures leak)

What it does:
1. splits the MedPix cases by case (a hash of seed and case id, as ``medrag.embed.medpix.split_by_group``) into an
   index part and a held-out part; every image of a case stays on its case's side;
2. ingests the index part's case text as records (id ``case_id``; history, findings, differential_diagnosis,
   case_diagnosis, topic_disease_discussion; title) into a text index, and its images into an image index
   embedded by our dual encoder, trained here on the index part's image-caption pairs only (cached by the
   split and the options, so a second run reuses it);
3. asks the agent, for N held-out cases that have an image and a history,
   ``f"{history} What is the most likely diagnosis and what is the differential?"`` with one of the case's images
   (its modality stated, as a DICOM tag would), once with the image index ("text+image") and once without it
   ("text only"; the image is still given to the image tools);
4. scores each answer against the held-out case's ``case_diagnosis``: is a cited case's diagnosis the same
   (normalised string equal: "exact"; or one's content words contained in the other's: "token")? A random-case
   baseline draws as many distinct index cases as the agent cited (exact expectation, no sampling), and the
   ceiling is the share of held-out cases whose diagnosis any index case has at all.

Also reported: answered rate, citations and cited cases per answer, rounds, latency p50/p95, whether the
similar-image search (before composing) found a same-diagnosis case, whether the answer text names the
diagnosis, and every image-tool call whose tool does not declare the image's modality (must be none).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TEXT_FIELDS = ("history", "findings", "differential_diagnosis", "case_diagnosis", "topic_disease_discussion")
QUESTION = "{history} What is the most likely diagnosis and what is the differential?"
TEXT_INDEX = "medpix-cases"
IMAGE_INDEX = "medpix-images"
# Words that do not tell one diagnosis from another ("Meningioma, WHO grade I" ~ "meningioma").
GENERIC = frozenset(
    ["a", "an", "the", "of", "and", "or", "with", "without", "in", "on", "to", "for", "from", "by", "at", "as", "is", "are", "was", "be", "likely", "probable", "possible", "probably", "suspected", "consistent", "compatible", "left", "right", "bilateral", "who", "grade", "type", "case", "diagnosis", "s", "p", "vs", "versus", "due", "secondary", "i", "ii", "iii", "iv", "1", "2", "3", "4", "disease", "syndrome"]
)


# -- data ---------------------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def is_heldout(case_id: str, fraction: float, seed: int) -> bool:
    """The same rule as medrag.embed.medpix.split_by_group: a hash of seed and case id, so a case keeps its side."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_cases(cases: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    index = [c for c in cases if not is_heldout(str(c["case_id"]), fraction, seed)]
    heldout = [c for c in cases if is_heldout(str(c["case_id"]), fraction, seed)]
    return index, heldout


def present_images(folder: Path, images: list[dict]) -> dict[str, list[dict]]:
    """case_id -> its image rows whose file is present, in images.jsonl order."""
    by_case: dict[str, list[dict]] = {}
    for row in images:
        if row.get("file") and (folder / row["file"]).is_file():
            by_case.setdefault(str(row["case_id"]), []).append(row)
    return by_case


def has_history(case: dict) -> bool:
    history = (case.get("history") or "").strip()
    return bool(history) and history.upper() != "N/A"


def pick_heldout(heldout: list[dict], by_case: dict[str, list[dict]], n: int, seed: int) -> list[dict]:
    """N held-out cases with a history and an image file, in an order fixed by a hash of seed and case id."""
    eligible = [c for c in heldout if has_history(c) and by_case.get(str(c["case_id"]))]
    eligible.sort(key=lambda c: hashlib.sha256(f"pick:{seed}:{c['case_id']}".encode()).hexdigest())
    return eligible[:n]


def write_index_part(data: Path, work: Path, index_cases: list[dict], images: list[dict]) -> tuple[Path, Path]:
    """(records file, image folder) of the index part: case records, and images.jsonl + cases.jsonl + copied PNGs.

    The PNGs are copied, not linked: image ingestion refuses files that resolve outside the folder it is given.
    """
    keep = {str(c["case_id"]) for c in index_cases}
    records = work / "records" / "medpix_cases.jsonl"
    records.parent.mkdir(parents=True, exist_ok=True)
    with records.open("w", encoding="utf-8") as out:
        for case in index_cases:
            row = {"case_id": case["case_id"], "title": case.get("title") or ""}
            row.update({f: case[f] for f in TEXT_FIELDS if isinstance(case.get(f), str) and case[f].strip() and case[f].strip().upper() != "N/A"})
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    folder = work / "medpix-index"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = [r for r in images if str(r["case_id"]) in keep and r.get("file") and (data / r["file"]).is_file()]
    for row in rows:
        target = folder / row["file"]
        if not target.is_file():
            shutil.copyfile(data / row["file"], target)
    (folder / "images.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (folder / "cases.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in index_cases), encoding="utf-8")
    return records, folder


# -- diagnosis matching -------------------------------------------------------------------------------------------
def normalise(text: str | None) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", (text or "").lower()))


def content_words(text: str | None) -> frozenset[str]:
    words = set()
    for w in normalise(text).split():
        if w in GENERIC:
            continue
        words.add(w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith("ss") else w)  # plural -> singular
    return frozenset(words)


def same_diagnosis(a: str | None, b: str | None) -> dict[str, bool]:
    """exact: equal once lower-cased with punctuation dropped; token: one's content words all in the other's."""
    na, nb = normalise(a), normalise(b)
    wa, wb = content_words(a), content_words(b)
    exact = bool(na) and na == nb
    token = exact or (bool(wa) and bool(wb) and (wa <= wb or wb <= wa))
    return {"exact": exact, "token": token}


def names_diagnosis(answer_text: str, diagnosis: str | None) -> bool:
    """The answer text holds every content word of the diagnosis."""
    words = content_words(diagnosis)
    return bool(words) and words <= content_words(answer_text)


def p_random_hit(n_cases: int, n_matching: int, m: int) -> float:
    """P(at least one of m distinct index cases drawn at random has the diagnosis), n_matching of n_cases have it."""
    if m <= 0 or n_matching <= 0:
        return 0.0
    m = min(m, n_cases)
    if n_cases - n_matching < m:
        return 1.0
    return 1.0 - math.comb(n_cases - n_matching, m) / math.comb(n_cases, m)


# -- building -----------------------------------------------------------------------------------------------------
def pairs_of(folder: Path):
    from medrag.embed.medpix import load_medpix_pairs

    return load_medpix_pairs(folder)


def train_image_embedder(folder: Path, cache: Path, *, epochs: int, seed: int, image_size: int, threads: int | None) -> tuple[str, dict]:
    """A dual encoder trained on the index part's image-caption pairs (cached by their bytes and the options)."""
    listing = (folder / "images.jsonl").read_bytes()
    key = hashlib.sha256(listing + f"{epochs}/{seed}/{image_size}/v1".encode()).hexdigest()[:16]
    target = cache / f"dual-encoder-{key}"
    if (target / "config.json").is_file() and (target / "train_metrics.json").is_file():
        return f"dual-encoder:{target}", {**json.loads((target / "train_metrics.json").read_text()), "cached": True}
    from medrag.embed.train import train_dual_encoder

    if threads:
        import torch

        torch.set_num_threads(threads)
    started = time.perf_counter()
    metrics = train_dual_encoder(pairs_of(folder), target, epochs=epochs, seed=seed, image_size=image_size, progress=False)
    summary = {"pairs": len(pairs_of(folder)), "epochs": epochs, "seconds": round(time.perf_counter() - started, 1),
               "final_loss": (metrics.get("loss") or [None])[-1]}
    (target / "train_metrics.json").write_text(json.dumps(summary))
    return f"dual-encoder:{target}", {**summary, "cached": False}


def index_part_fingerprint(folder: Path) -> str:
    """The data fingerprint train_dual_encoder records for the index part's pairs (image bytes, captions, cases)."""
    from medrag.embed.train import load_pair_images

    return load_pair_images(pairs_of(folder), 16)[2]


def check_trained_on_index_part(spec: str, folder: Path) -> dict[str, Any]:
    """Whether a given dual encoder was trained on exactly the index part (else held-out images may have leaked in)."""
    if not spec.startswith("dual-encoder:"):
        return {"trained_on_index_part": None, "note": "not a dual encoder: no training data to check"}
    config = json.loads((Path(spec.split(":", 1)[1]).expanduser() / "config.json").read_text())
    trained = (config.get("data") or {}).get("fingerprint")
    mine = index_part_fingerprint(folder)
    return {"trained_on_index_part": trained == mine, "model_data_fingerprint": trained, "index_part_fingerprint": mine,
            "pairs": (config.get("data") or {}).get("pairs"), "epochs": (config.get("training") or {}).get("epochs")}


def make_image_embedder(spec: str):
    if spec.startswith("fake-image-text"):
        import medrag.testing.image_fakes  # noqa: F401  registers the weight-free thumbnail baseline
    from medrag.embed.image_text import make_image_embedder as make

    return make(spec)


def build_indexes(records: Path, folder: Path, settings, text_embedder, image_embedder) -> dict[str, Any]:
    from medrag.ingest.images import ingest_images
    from medrag.ingest.pipeline import ingest
    from medrag.ingest.records import RecordMapping

    started = time.perf_counter()
    text = ingest([records], index_name=TEXT_INDEX, embedder=text_embedder, settings=settings, progress=False,
                  mapping=RecordMapping("case_id", TEXT_FIELDS, "title"))
    text_s = time.perf_counter() - started
    started = time.perf_counter()
    image = ingest_images([folder], index_name=IMAGE_INDEX, embedder=image_embedder, settings=settings, progress=False)
    return {"text_chunks": text.total_chunks, "text_seconds": round(text_s, 1), "images": image.total_chunks,
            "image_seconds": round(time.perf_counter() - started, 1)}


# -- asking -------------------------------------------------------------------------------------------------------
def cited_cases(answer, image_case: dict[str, str]) -> list[str]:
    """Case ids the answer cites, in citation order (a text record's id, or an image's case)."""
    out: list[str] = []
    for c in answer.citations:
        loc = c.locator or {}
        case = loc.get("record_id") or loc.get("case_id") or image_case.get(c.chunk_id) or c.chunk_id.split("#")[0]
        if case and case not in out:
            out.append(str(case))
    return out


def image_search_cases(answer, image_case: dict[str, str]) -> list[str]:
    """Cases the search_images calls found (retrieved, whether cited or not), best first."""
    out: list[str] = []
    for step in answer.trace:
        if step.node == "act" and step.tool == "search_images":
            for eid in step.details.get("evidence", []):
                case = image_case.get(eid.removeprefix("image:"))
                if case and case not in out:
                    out.append(case)
    return out


def routing_violations(agent, answer, stated: str) -> list[str]:
    """Image-tool calls whose tool does not declare the image's modality (the agent must never make one)."""
    bad = []
    image_tools = {n: t for n, t in agent.tools.items() if "image" in t.inputs}
    for step in answer.trace:
        if step.node == "act" and step.tool in image_tools and "image" in step.inputs and stated not in image_tools[step.tool].modalities:
            bad.append(f"{step.tool} got a {stated} image")
    return bad


def ask_one(agent, case: dict, image_row: dict, data: Path, diagnoses: dict[str, str], image_case: dict[str, str],
            state_modality: bool) -> dict[str, Any]:
    from medrag.ingest.images import normalise_modality

    modality = normalise_modality(image_row.get("modality_type") or image_row.get("modality")) or "unknown"
    path = str(data / image_row["file"])
    image = {"path": path, "modality": modality} if state_modality else path
    question = QUESTION.format(history=" ".join(case["history"].split()))
    started = time.perf_counter()
    answer = agent.ask(question, images=[image])
    seconds = time.perf_counter() - started
    truth = case.get("case_diagnosis")
    cases = cited_cases(answer, image_case)
    matches = [same_diagnosis(truth, diagnoses.get(c)) for c in cases]
    found = image_search_cases(answer, image_case)
    found_matches = [same_diagnosis(truth, diagnoses.get(c)) for c in found]
    return {
        "case_id": case["case_id"],
        "diagnosis": truth,
        "image": image_row["image_id"],
        "modality": modality,
        "answered": not answer.abstained,
        "confidence": round(float(answer.confidence), 4),
        "citations": len(answer.citations),
        "image_citations": sum(1 for c in answer.citations if (c.locator or {}).get("image")),
        "cited_cases": cases,
        "cited_diagnoses": [diagnoses.get(c) for c in cases],
        "hit_exact": any(m["exact"] for m in matches),
        "hit_token": any(m["token"] for m in matches),
        "first_hit_token": bool(matches) and matches[0]["token"],
        "image_search_cases": found,
        "image_search_hit_token": any(m["token"] for m in found_matches),
        "names_diagnosis": names_diagnosis(answer.text, truth),
        "rounds": answer.rounds,
        "sub_questions": len(answer.sub_questions),
        "seconds": round(seconds, 3),
        "intake_modality": next((i.get("modality") for s in answer.trace if s.node == "intake" for i in s.details.get("images", [])), None),
        "image_tools": sorted({s.tool for s in answer.trace if s.node == "act" and s.tool and "image" in s.inputs}),
        "routing_violations": routing_violations(agent, answer, modality),
        "answer": answer.text[:600],
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(rows: list[dict], index_diagnoses: dict[str, str]) -> dict[str, Any]:
    n = len(rows)
    if not n:
        return {"questions": 0}
    mean = lambda key: round(sum(float(r[key]) for r in rows) / n, 4)
    n_index = len(index_diagnoses)
    random_exact, random_token = [], []
    for r in rows:
        m = len(r["cited_cases"])
        matching = [same_diagnosis(r["diagnosis"], d) for d in index_diagnoses.values()]
        random_exact.append(p_random_hit(n_index, sum(x["exact"] for x in matching), m))
        random_token.append(p_random_hit(n_index, sum(x["token"] for x in matching), m))
    random_search = []
    for r in rows:  # the same for the similar-image search: as many random index cases as it found
        matching = sum(same_diagnosis(r["diagnosis"], d)["token"] for d in index_diagnoses.values())
        random_search.append(p_random_hit(n_index, matching, len(r.get("image_search_cases") or [])))
    latency = [r["seconds"] for r in rows]
    return {
        "questions": n,
        "answered_rate": mean("answered"),
        "cited_case_same_diagnosis_exact": mean("hit_exact"),
        "cited_case_same_diagnosis_token": mean("hit_token"),
        "first_cited_case_same_diagnosis_token": mean("first_hit_token"),
        "random_cases_same_diagnosis_exact": round(sum(random_exact) / n, 4),
        "random_cases_same_diagnosis_token": round(sum(random_token) / n, 4),
        "image_search_found_same_diagnosis_token": mean("image_search_hit_token"),
        "random_cases_as_many_as_image_search_found_token": round(sum(random_search) / n, 4),
        "answer_names_diagnosis": mean("names_diagnosis"),
        "citations_mean": mean("citations"),
        "image_citations_mean": mean("image_citations"),
        "cited_cases_mean": round(sum(len(r["cited_cases"]) for r in rows) / n, 2),
        "rounds_mean": mean("rounds"),
        "latency_p50_s": round(statistics.median(latency), 3),
        "latency_p95_s": round(percentile(latency, 0.95), 3),
        "routing_violations": sum(len(r["routing_violations"]) for r in rows),
    }


def run_agent(config: dict, settings, text_embedder, picked, by_case, data, diagnoses, image_case, state_modality, label) -> list[dict]:
    from medrag.agent.graph import Agent

    agent = Agent.from_config(config, settings=settings, embedder=text_embedder)
    rows = []
    try:
        for i, case in enumerate(picked, 1):
            row = ask_one(agent, case, by_case[str(case["case_id"])][0], data, diagnoses, image_case, state_modality)
            rows.append(row)
            print(f"  [{label} {i}/{len(picked)}] {case['case_id']} {row['modality']} answered={row['answered']} "
                  f"cites={row['cited_cases'][:4]} hit={row['hit_token']} {row['seconds']:.1f}s", file=sys.stderr, flush=True)
    finally:
        agent.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(repo.parent / "shared" / "data" / "medpix"), help="MedPix folder (cases.jsonl, images.jsonl)")
    parser.add_argument("--cases", type=int, default=40, help="held-out cases to ask about")
    parser.add_argument("--out", default=str(repo / "results" / "agent_medpix.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout-fraction", type=float, default=0.2, help="share of cases held out of the indexes")
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2", help="text embedder spec")
    parser.add_argument("--image-embedder", default=None,
                        help="image-text embedder spec; default: train a dual encoder on the index part (cached)")
    parser.add_argument("--epochs", type=int, default=10, help="dual-encoder training epochs")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--allow-leak", action="store_true", help="use --image-embedder even if not trained on the index part")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for training")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "medrag-eval-agent-medpix"),
                        help="where trained encoders are kept between runs")
    parser.add_argument("--work", default=None, help="working folder (MEDRAG_HOME, index part); default: a temporary one")
    parser.add_argument("--guess-modality", action="store_true", help="give the agent image paths only (intake guesses the modality)")
    parser.add_argument("--max-rounds", type=int, default=None)
    parser.add_argument("--no-text-only", action="store_true", help="skip the run without the image index")
    parser.add_argument("--resummarise", action="store_true", help="recompute the summary of --out from its per-question rows")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data = Path(args.data).expanduser().resolve()
    if not (data / "cases.jsonl").is_file() or not (data / "images.jsonl").is_file():
        print(f"no MedPix cases.jsonl/images.jsonl in {data}", file=sys.stderr)
        return 2
    from medrag.config import load_settings
    from medrag.embed.text import make_embedder

    cases = read_jsonl(data / "cases.jsonl")
    images = read_jsonl(data / "images.jsonl")
    index_cases, heldout = split_cases(cases, args.heldout_fraction, args.seed)
    if args.resummarise:
        result = json.loads(Path(args.out).read_text(encoding="utf-8"))
        diagnoses = {str(c["case_id"]): c.get("case_diagnosis") or "" for c in index_cases}
        result["summary"] = {name: summarise(rows, diagnoses) for name, rows in result["questions"].items()}
        Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print_table(result)
        return 0
    by_case = present_images(data, images)
    picked = pick_heldout(heldout, by_case, args.cases, args.seed)
    if not picked:
        print("no held-out case with a history and an image file", file=sys.stderr)
        return 2
    diagnoses = {str(c["case_id"]): c.get("case_diagnosis") or "" for c in index_cases}
    image_case = {str(r["image_id"]): str(r["case_id"]) for r in images}

    tmp = None
    if args.work:
        work = Path(args.work).expanduser().resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="medrag-medpix-")
        work = Path(tmp.name)
    try:
        settings = load_settings(home=str(work / "home"), progress=False)
        records, folder = write_index_part(data, work, index_cases, images)
        training: dict[str, Any] = {}
        spec = args.image_embedder
        if spec is not None:
            training = check_trained_on_index_part(spec, folder)
            if training["trained_on_index_part"] is False and not args.allow_leak:
                print(f"{spec} was not trained on this index part (data fingerprint {training['model_data_fingerprint']} != "
                      f"{training['index_part_fingerprint']}): held-out images may have been trained on; pass --allow-leak "
                      "to run anyway", file=sys.stderr)
                return 2
        else:
            print(f"training a dual encoder on the index part ({args.epochs} epochs) ...", file=sys.stderr, flush=True)
            spec, training = train_image_embedder(folder, Path(args.cache), epochs=args.epochs, seed=args.seed,
                                                  image_size=args.image_size, threads=args.threads)
        text_embedder = make_embedder(args.embedder)
        image_embedder = make_image_embedder(spec)
        built = build_indexes(records, folder, settings, text_embedder, image_embedder)
        print(f"indexed {len(index_cases)} cases ({built['text_chunks']} chunks), {built['images']} images", file=sys.stderr)

        tools = ["segment_lungs_xray", "segment_ct_tissues", "zoom_region"]
        rounds = {"max_rounds": args.max_rounds} if args.max_rounds else {}
        state = not args.guess_modality
        runs = {"text+image": run_agent({"indexes": [TEXT_INDEX], "image_index": IMAGE_INDEX, "tools": tools, **rounds}, settings,
                                        text_embedder, picked, by_case, data, diagnoses, image_case, state, "text+image")}
        if not args.no_text_only:
            runs["text only"] = run_agent({"indexes": [TEXT_INDEX], "tools": tools, **rounds}, settings, text_embedder, picked,
                                          by_case, data, diagnoses, image_case, state, "text only")
    finally:
        if tmp is not None:
            tmp.cleanup()

    ceiling = [any(same_diagnosis(c.get("case_diagnosis"), d)["token"] for d in diagnoses.values()) for c in picked]
    ceiling_exact = [any(same_diagnosis(c.get("case_diagnosis"), d)["exact"] for d in diagnoses.values()) for c in picked]
    summary = {name: summarise(rows, diagnoses) for name, rows in runs.items()}
    result = {
        "data": {"folder": str(data), "cases": len(cases), "index_cases": len(index_cases), "heldout_cases": len(heldout),
                 "asked": len(picked), "split": f"by case, hash of seed {args.seed}, held-out fraction {args.heldout_fraction}",
                 "index_images": built["images"], "text_chunks": built["text_chunks"],
                 "modalities_asked": {m: sum(1 for c in picked if normalise_modality_of(by_case[str(c['case_id'])][0]) == m) for m in ("ct", "mr")}},
        "setup": {"text_embedder": args.embedder, "image_embedder": spec.replace(str(Path(args.cache)), "$CACHE"),
                  "image_training": training, "tools": tools, "modality_stated": state,
                  "question": QUESTION, "max_rounds": args.max_rounds or settings.agent.max_rounds, "build_seconds": built},
        "ceiling_same_diagnosis_token": round(sum(ceiling) / len(picked), 4),
        "ceiling_same_diagnosis_exact": round(sum(ceiling_exact) / len(picked), 4),
        "summary": summary,
        "questions": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print_table(result)
    print(f"-> {out}")
    return 0


def normalise_modality_of(row: dict) -> str | None:
    from medrag.ingest.images import normalise_modality

    return normalise_modality(row.get("modality_type") or row.get("modality"))


def print_table(result: dict) -> None:
    rows = [
        ("answered", "answered_rate"),
        ("cited case same dx (exact)", "cited_case_same_diagnosis_exact"),
        ("cited case same dx (token)", "cited_case_same_diagnosis_token"),
        ("  random cases, same count (token)", "random_cases_same_diagnosis_token"),
        ("first cited case same dx (token)", "first_cited_case_same_diagnosis_token"),
        ("image search found same dx (token)", "image_search_found_same_diagnosis_token"),
        ("  random cases, as many (token)", "random_cases_as_many_as_image_search_found_token"),
        ("answer names the diagnosis", "answer_names_diagnosis"),
        ("citations / answer", "citations_mean"),
        ("image citations / answer", "image_citations_mean"),
        ("cited cases / answer", "cited_cases_mean"),
        ("rounds", "rounds_mean"),
        ("latency p50 (s)", "latency_p50_s"),
        ("routing violations", "routing_violations"),
    ]
    names = list(result["summary"])
    n = result["data"]["asked"]
    print(f"MedPix agent, {n} held-out cases (ceiling: same dx in the index for {result['ceiling_same_diagnosis_token']:.2f} token,"
          f" {result['ceiling_same_diagnosis_exact']:.2f} exact)")
    print(f"{'':38s}" + "".join(f"{name:>14s}" for name in names))
    for label, key in rows:
        print(f"{label:38s}" + "".join(f"{result['summary'][name].get(key, 0):>14}" for name in names))


if __name__ == "__main__":
    sys.exit(main())
