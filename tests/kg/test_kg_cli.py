"""`medrag kg ...` run in-process through medrag.cli.main with MEDRAG_HOME in tmp_path."""

from __future__ import annotations

import json

import pytest

from kg_samples import write_recipe


@pytest.fixture
def built(cli, tmp_path) -> str:
    code, out, err = cli("kg", "build", write_recipe(tmp_path / "r"))
    assert code == 0, err
    return "tiny"


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_build_reports_counts_and_problems(cli, tmp_path, home):
    code, out, err = cli("kg", "build", write_recipe(tmp_path / "r"), "--name", "mine")
    assert code == 0
    assert out.startswith("built graph 'mine' in ") and "nodes" in out and str(home / "graphs" / "mine") in out
    assert "malformed_stanzas: 2" in err
    assert (home / "graphs" / "mine" / "manifest.json").is_file()


def test_list_and_info(cli, built):
    code, out, _ = cli("kg", "list")
    assert code == 0 and out.startswith("tiny\t") and "hp.obo" in out
    code, out, _ = cli("kg", "info", "tiny")
    assert code == 0 and json.loads(out)["name"] == "tiny"


def test_list_when_empty(cli):
    code, out, _ = cli("kg", "list")
    assert code == 0 and out.startswith("no knowledge graphs in ")


def test_link_text(cli, built):
    code, out, _ = cli("kg", "link", "tall stature, lens dislocation", "--graph", "tiny")
    assert code == 0
    assert out.splitlines() == [
        "0-12\t'tall stature'\tHP:0000098\tTall stature\t1.000\texact",
        "14-30\t'lens dislocation'\tHP:0001083\tEctopia lentis\t0.950\texact",
    ]


def test_link_json(cli, built):
    code, out, _ = cli("kg", "link", "ASD", "--graph", "tiny", "--json")
    data = json.loads(out)
    assert code == 0 and data["links"][0]["node_id"] == "HP:0001631" and data["links"][0]["span"]["end"] == 3


def test_link_queries_file(cli, built, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": "a", "text": "spider fingers"}\n\n{"qid": 2, "text": "qqq"}\n')
    code, out, _ = cli("kg", "link", "--queries", queries, "--graph", "tiny")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [
        {"qid": "a", "links": [{"span": {"start": 0, "end": 14, "text": "spider fingers"}, "node_id": "HP:0001166", "name": "Arachnodactyly", "score": 0.95}]},
        {"qid": 2, "links": []},
    ]


def test_diseases(cli, built):
    code, out, _ = cli("kg", "diseases", "tall stature, arachnodactyly, ectopia lentis", "--graph", "tiny", "-k", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "phenotypes: Tall stature (HP:0000098), Arachnodactyly (HP:0001166), Ectopia lentis (HP:0001083)"
    assert lines[1].startswith(" 1. Marfan syndrome (OMIM:154700)  score ")
    assert "      Tall stature (HP:0000098) as Disproportionate tall stature (HP:0001519)" in lines


def test_diseases_json_cites_phenotypes(cli, built):
    code, out, _ = cli("kg", "diseases", "arachnodactyly; bradycardia", "--graph", "tiny", "--json")
    data = json.loads(out)
    assert code == 0
    assert [p["node_id"] for p in data["phenotypes"]] == ["HP:0001166", "HP:0001662"]
    top = data["diseases"][0]
    assert (top["rank"], top["id"]) == (1, "OMIM:236200")
    assert {e["citation"]["chunk_id"] for e in top["evidence"][1:]} == {"OMIM:236200|has_phenotype|HP:0001166", "OMIM:236200|has_phenotype|HP:0001662"}


@pytest.mark.parametrize(
    "args, needle, code",
    [
        (("kg", "link", "ASD", "--graph", "nope"), "no knowledge graph 'nope'", 2),
        (("kg", "info", "nope"), "no knowledge graph 'nope'", 2),
        (("kg", "link", "ASD"), "--graph NAME", 2),
        (("kg", "link", "--graph", "tiny"), "give TEXT or --queries", 2),
        (("kg", "diseases", "Marfan syndrome", "--graph", "tiny"), "no phenotype found", 2),
        (("kg", "link", "   ", "--graph", "tiny"), "needs some text", 2),
    ],
)
def test_errors_are_one_line(cli, built, args, needle, code):
    got, _, err = cli(*args)
    assert got == code
    assert needle in one_line_error(err)


def test_bad_recipe_is_one_line_error(cli, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("sources:\n  - format: obo\n    path: missing.obo\n")
    code, _, err = cli("kg", "build", recipe)
    assert code == 2 and "missing.obo" in one_line_error(err)
    code, _, err = cli("kg", "build", tmp_path / "absent.yaml")
    assert code == 2 and "recipe not found" in one_line_error(err)


def test_bad_queries_file(cli, built, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"qid": 1}\n')
    code, _, err = cli("kg", "link", "--queries", queries, "--graph", "tiny")
    assert code == 2 and "q.jsonl:1" in one_line_error(err)
