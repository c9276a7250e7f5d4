"""Index recipes and `medrag index build|add|compact|delete --source|search --where` end to end (hashing embedder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrag.errors import ConfigError
from medrag.index.recipes import load_recipe, source_files

REPO = Path(__file__).resolve().parents[2]

ROWS = [
    {"doc_id": f"d{i}", "text": text, "title": f"abstract {i}", "year": 2000 + i}
    for i, text in enumerate(
        [
            "Metformin lowers hepatic glucose production in type 2 diabetes.",
            "Salbutamol relaxes bronchial smooth muscle during an asthma attack.",
            "Warfarin inhibits vitamin K dependent clotting factors.",
            "Insulin resistance precedes type 2 diabetes by years.",
        ]
    )
]


def write_recipe(folder: Path, kind: str = "hnsw", extra: str = "") -> Path:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    (data / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[2:]))
    (data / "notes.txt.jsonl").write_text(json.dumps({"doc_id": "x", "text": "left out"}) + "\n")
    recipe = folder / "drugs" / "index.yaml"
    recipe.parent.mkdir(exist_ok=True)
    recipe.write_text(
        f"""
embedder: "hashing:64"
index: {{kind: {kind}}}
chunking: {{max_words: 50}}
sources:
  - path: ../data
    include: ["*.jsonl"]
    exclude: ["notes*"]
    id_field: doc_id
    text_fields: [text]
    title_field: title
{extra}"""
    )
    return recipe


def test_repository_recipes_are_valid():
    names = sorted(p.parent.name for p in (REPO / "indexes").glob("*/index.yaml"))
    assert {"textbook", "mirage", "reports"} <= set(names)
    for name in names:
        recipe = load_recipe(name, recipes_dir=REPO / "indexes")
        assert recipe.name == name and recipe.sources


@pytest.mark.data
def test_repository_recipes_find_the_shared_data(shared_data):
    recipe = load_recipe("textbook", recipes_dir=REPO / "indexes")
    files = source_files(recipe, recipe.sources[0])
    assert len(files) == 4 and not any(f.name.endswith("_SCANNED.pdf") for f in files)


def test_recipe_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no index recipe"):
        load_recipe(tmp_path / "nope")
    bad = tmp_path / "bad.yaml"
    for text in ("sources: []", "sources: [{path: x}]\nindex: {kind: annoy}", "sources: [{path: x}]\nindex: {params: {hnsw_mm: 1}}", "- a"):
        bad.write_text(text)
        with pytest.raises(ConfigError):
            load_recipe(bad)


@pytest.mark.slow
def test_build_add_compact_delete_search(cli, tmp_path):
    recipe = write_recipe(tmp_path)
    code, out, err = cli("index", "build", recipe, "--no-progress")
    assert code == 0, err
    assert "index 'drugs'" in out and "hnsw" in out

    code, out, _ = cli("index", "info", "drugs")
    manifest = json.loads(out)
    assert manifest["counts"] == {"sources": 2, "chunks": 4}
    assert manifest["vectors"]["structure"] == "hnsw" and manifest["vectors"]["count"] == 4
    assert manifest["settings"]["index"]["kind"] == "hnsw"
    assert manifest["settings"]["recipe"]["file"].endswith("index.yaml") and manifest["settings"]["recipe"]["sha256"]

    code, out, _ = cli("index", "build", recipe, "--no-progress")  # nothing changed: nothing embedded
    assert code == 0 and "0 added" in out and "2 unchanged" in out

    code, out, _ = cli("index", "search", "drugs", "diabetes glucose", "--k", "4", "--json", "--where", "year>=2002")
    hits = json.loads(out)["hits"]
    assert [h["id"] for h in hits] == ["d3", "d2"] or {h["id"] for h in hits} == {"d2", "d3"}

    code, out, _ = cli("index", "search", "drugs", "diabetes glucose", "--json", "--filter", "source=a.jsonl")
    assert {h["id"] for h in json.loads(out)["hits"]} <= {"d0", "d1"}

    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"doc_id": "d9", "text": "Heparin potentiates antithrombin."}) + "\n")
    code, out, err = cli("index", "add", "drugs", extra, "--id-field", "doc_id", "--text-field", "text", "--no-progress")
    assert code == 0, err and "1 added" in out

    code, out, _ = cli("index", "delete", "drugs", "--source", "a.jsonl")
    assert code == 0 and "removed 2 chunks" in out
    assert json.loads(cli("index", "info", "drugs")[1])["vectors"]["deleted"] == 2  # HNSW tombstones

    code, out, _ = cli("index", "compact", "drugs")
    assert code == 0 and "2 deleted rows dropped" in out
    info = json.loads(cli("index", "info", "drugs")[1])
    assert info["vectors"] | {"deleted": 0} == info["vectors"] and info["counts"]["chunks"] == 3

    code, out, _ = cli("index", "search", "drugs", "heparin", "--json")
    assert json.loads(out)["hits"][0]["id"] == "d9"


def test_recipe_kind_change_needs_rebuild(cli, tmp_path):
    recipe = write_recipe(tmp_path, kind="flat")
    assert cli("index", "build", recipe, "--no-progress")[0] == 0
    write_recipe(tmp_path, kind="hnsw")
    code, _, err = cli("index", "build", recipe, "--no-progress")
    assert code == 2 and "--rebuild" in err
    code, _, err = cli("index", "build", recipe, "--no-progress", "--rebuild")
    assert code == 0, err
    assert json.loads(cli("index", "info", "drugs")[1])["vectors"]["structure"] == "hnsw"


def test_bad_filter_is_a_clear_error(cli, tmp_path):
    assert cli("index", "build", write_recipe(tmp_path), "--no-progress")[0] == 0
    code, _, err = cli("index", "search", "drugs", "x", "--where", "page~3")
    assert code == 2 and "key=value" in err


def test_compact_unknown_index(cli):
    code, _, err = cli("index", "compact", "nope")
    assert code == 2 and "unknown index" in err


def test_recipe_store_and_engine_are_checked(tmp_path):
    from medrag.config import Settings
    from medrag.errors import RegistryError
    from medrag.index.recipes import build_recipe

    settings = Settings(home=tmp_path / "home", progress=False)
    with pytest.raises(ConfigError, match="unknown engine 'spark'"):
        build_recipe(load_recipe(write_recipe(tmp_path, "flat", "engine: spark")), settings)
    with pytest.raises(RegistryError, match="redis"):
        build_recipe(load_recipe(write_recipe(tmp_path, "flat", "store: redis")), settings)


def test_recipe_builds_into_milvus(cli, tmp_path):
    pytest.importorskip("pymilvus", reason="the milvus extra is not installed")
    recipe = write_recipe(tmp_path, "flat", "store: milvus")
    code, out, err = cli("index", "build", recipe, "--no-progress")
    assert code == 0, err
    manifest = json.loads(cli("index", "info", "drugs")[1])
    assert manifest["counts"] == {"sources": 2, "chunks": 4}
    code, out, _ = cli("index", "search", "drugs", "salbutamol asthma", "--json", "--k", "1")
    assert json.loads(out)["hits"][0]["id"] == "d1"
