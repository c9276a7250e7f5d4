"""Dataset loaders for the formats people already have. Errors name the file and line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrag.errors import InputError, SourceFileError
from medrag.storage import iter_json_lines


@dataclass
class EvalItem:
    qid: str
    question: str
    relevant: set[str] = field(default_factory=set)  # doc ids, or "file.pdf#page"
    options: dict[str, str] | None = None  # multiple choice
    answer: str | None = None  # a letter for multiple choice, else text
    meta: dict[str, Any] = field(default_factory=dict)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise SourceFileError(path, "file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceFileError(path, f"cannot read as UTF-8 text: {exc}") from exc


def _require(row: Any, keys: tuple[str, ...], where: str) -> dict:
    if not isinstance(row, dict):
        raise SourceFileError(where, "expected a JSON object")
    missing = [k for k in keys if k not in row]
    if missing:
        raise SourceFileError(where, f"missing field(s) {', '.join(missing)}")
    return row


def load_mirage(folder: str | Path, datasets: tuple[str, ...] = ("pubmedqa", "bioasq"), limit: int | None = None) -> list[EvalItem]:
    """MIRAGE benchmark.json (+ corpus.jsonl with ``question_ids`` for retrieval gold, when present)."""
    folder = Path(folder)
    bench_path = next((p for p in (folder / "benchmark_dev.json", folder / "benchmark.json") if p.is_file()), None)
    if bench_path is None:
        raise SourceFileError(folder, "no benchmark_dev.json or benchmark.json")
    try:
        bench = json.loads(bench_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SourceFileError(bench_path, f"invalid JSON: {exc}") from exc
    gold: dict[str, set[str]] = {}
    corpus = folder / "corpus.jsonl"
    if corpus.is_file():
        for line_no, doc in iter_json_lines(_read_lines(corpus), corpus):
            doc = _require(doc, ("doc_id", "question_ids"), f"{corpus}:{line_no}")
            for qid in doc["question_ids"]:
                gold.setdefault(str(qid), set()).add(str(doc["doc_id"]))
    items = []
    for name in datasets:
        if name not in bench:
            raise SourceFileError(bench_path, f"no dataset '{name}' (has: {', '.join(bench)})")
        for qid, q in bench[name].items():
            q = _require(q, ("question", "options", "answer"), f"{bench_path}: {name}/{qid}")
            items.append(
                EvalItem(str(qid), q["question"], gold.get(str(qid), set()), dict(q["options"]), str(q["answer"]), {"dataset": name})
            )
    if not items:
        raise InputError(f"{bench_path}: the selected datasets are empty")
    return items[:limit] if limit else items


def load_textbook_questions(path: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Textbook questions JSONL: question, gold_pdf, gold_pages[, also_supported_pages, answer]."""
    path = Path(path)
    items = []
    for line_no, row in iter_json_lines(_read_lines(path), path):
        row = _require(row, ("question", "gold_pdf", "gold_pages"), f"{path}:{line_no}")
        pages = list(row["gold_pages"]) + list(row.get("also_supported_pages", []))
        items.append(
            EvalItem(
                str(row.get("qid", line_no)),
                row["question"],
                {f"{row['gold_pdf']}#{p}" for p in pages},
                answer=row.get("answer"),
                meta={"gold_pdf": row["gold_pdf"], "gold_figure": row.get("gold_figure")},
            )
        )
    if not items:
        raise InputError(f"{path} holds no questions")
    return items[:limit] if limit else items


def load_vqa(path: str | Path, limit: int | None = None) -> list[EvalItem]:
    """VQA-RAD-style JSONL: question, answer, answer_type (CLOSED/OPEN), image_file (relative to the data folder)."""
    path = Path(path)
    items = []
    for line_no, row in iter_json_lines(_read_lines(path), path):
        row = _require(row, ("question", "answer", "image_file"), f"{path}:{line_no}")
        image = (path.parent.parent / row["image_file"]).resolve()
        if not image.is_file():
            raise SourceFileError(f"{path}:{line_no}", f"image not found: {image}")
        items.append(
            EvalItem(str(row.get("qid", line_no)), row["question"], answer=str(row["answer"]),
                     meta={"image": str(image), "answer_type": row.get("answer_type") or _answer_type(str(row["answer"])),
                           "image_id": row.get("image_id"), "case_id": row.get("case_id"), "dataset": row.get("source")})
        )
    if not items:
        raise InputError(f"{path} holds no questions")
    return items[:limit] if limit else items


def load_image_descriptions(path: str | Path) -> dict[str, str]:
    """MedPix-style images.jsonl -> {image_id: "CT - noncontrast, Axial plane. <caption>"}.

    The text a text-only model gets in place of the pixels. The caption was written by
    the case author, who knew the diagnosis: it is an oracle description, not a reading.
    """
    path = Path(path)
    out = {}
    for line_no, row in iter_json_lines(_read_lines(path), path):
        row = _require(row, ("image_id",), f"{path}:{line_no}")
        head = ", ".join(str(row[k]) for k in ("modality", "plane") if row.get(k))
        text = " ".join(part for part in (f"{head} image." if head else "", str(row.get("caption") or "").strip()) if part)
        out[str(row["image_id"])] = " ".join(text.split())
    return out


def _answer_type(answer: str) -> str:
    """Rows without a type (VQA-Med): yes/no answers are closed questions, others open."""
    return "CLOSED" if answer.strip().lower() in {"yes", "no"} else "OPEN"


def load_qrels(path: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Retrieval qrels JSONL: one {"qid", "text", "relevant": [doc ids]} per line."""
    path = Path(path)
    items = []
    for line_no, row in iter_json_lines(_read_lines(path), path):
        row = _require(row, ("qid", "text", "relevant"), f"{path}:{line_no}")
        items.append(EvalItem(str(row["qid"]), row["text"], {str(r) for r in row["relevant"]}))
    if not items:
        raise InputError(f"{path} holds no queries")
    return items[:limit] if limit else items
