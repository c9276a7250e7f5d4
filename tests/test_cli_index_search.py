"""`medrag ingest` of JSONL records with a field mapping, and `medrag index search --queries`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


ROWS = [
    {"doc_id": "d1", "text": "Metformin lowers hepatic glucose production in type 2 diabetes."},
    {"doc_id": "d2", "text": "Salbutamol relaxes bronchial smooth muscle during an asthma attack."},
    {"doc_id": "d3", "text": "Warfarin inhibits vitamin K dependent clotting factors."},
]


@pytest.fixture
def corpus(cli, tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    code, out, err = cli("ingest", path, "--index", "drugs", "--embedder", "hashing:256", "--no-progress",
                         "--id-field", "doc_id", "--text-field", "text")
    assert code == 0, err
    assert "+3 chunks" in out
    return path


def test_queries_file_gives_one_json_line_per_query_with_record_ids(cli, corpus, tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": "a", "text": "asthma bronchial smooth muscle"}\n{"qid": "b", "text": "vitamin K clotting"}\n')
    for mode in ("hybrid", "dense", "bm25"):
        code, out, err = cli("index", "search", "drugs", "--queries", queries, "--k", "2", "--mode", mode, "--json")
        assert code == 0, err
        lines = [json.loads(line) for line in out.strip().splitlines()]
        assert [line["qid"] for line in lines] == ["a", "b"]
        assert lines[0]["hits"][0]["id"] == "d2" and lines[1]["hits"][0]["id"] == "d3"
        assert all(len(line["hits"]) <= 2 for line in lines)
        assert set(lines[0]["hits"][0]) == {"id", "score", "metadata"}


@pytest.mark.parametrize(
    "content, needle",
    [("not json\n", "q.jsonl:1"), ('{"qid": "a"}\n', "non-empty"), ("\n", "holds no queries")],
)
def test_bad_queries_file(cli, corpus, tmp_path: Path, content: str, needle: str) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(content)
    code, out, err = cli("index", "search", "drugs", "--queries", queries, "--json")
    assert code != 0
    assert err.startswith("error: ") and needle in err


def test_unknown_index_and_mode(cli, corpus) -> None:
    code, _, err = cli("index", "search", "nope", "asthma")
    assert code != 0 and "unknown index 'nope'" in err
    code, _, err = cli("index", "search", "drugs", "asthma", "--mode", "fuzzy")
    assert code != 0 and "unknown search mode" in err
