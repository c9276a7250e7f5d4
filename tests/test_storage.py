"""Atomic folder writes and JSON helpers."""

from __future__ import annotations

import json

import pytest

from medrag.errors import InputError
from medrag.storage import atomic_folder, fsync_file, json_object, read_json, read_jsonl, utc_now, write_json, write_jsonl


def entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_creates_new_folder(tmp_path):
    target = tmp_path / "deep" / "out"
    with atomic_folder(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.tmp-")
        write_json(tmp / "manifest.json", {"a": 1})
        assert not target.exists()  # nothing visible before commit
    assert read_json(target / "manifest.json") == {"a": 1}
    assert entries(target.parent) == ["out"]


def test_replaces_existing_folder(tmp_path):
    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        write_json(tmp / "manifest.json", {"v": 1})
        (tmp / "old-only.txt").write_text("x")
    with atomic_folder(target) as tmp:
        write_json(tmp / "manifest.json", {"v": 2})
    assert entries(target) == ["manifest.json"]  # replaced, not merged
    assert read_json(target / "manifest.json") == {"v": 2}
    assert entries(tmp_path) == ["out"]  # no temp or backup left


def test_failure_leaves_previous_folder_untouched(tmp_path):
    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        write_json(tmp / "manifest.json", {"v": 1})
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(target) as tmp:
            write_json(tmp / "manifest.json", {"v": 2})
            raise RuntimeError("boom")
    assert read_json(target / "manifest.json") == {"v": 1}
    assert entries(tmp_path) == ["out"]


def test_failure_on_new_folder_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(tmp_path / "out"):
            raise KeyboardInterrupt
    assert entries(tmp_path) == []


def test_failed_rename_restores_previous(tmp_path, monkeypatch):
    import medrag.storage as storage

    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        write_json(tmp / "manifest.json", {"v": 1})

    real_replace = storage.os.replace

    def flaky_replace(src, dst):
        if ".tmp-" in str(src):  # moving the new folder in fails; moving the old one aside works
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="rename failed"):
        with atomic_folder(target) as tmp:
            write_json(tmp / "manifest.json", {"v": 2})
    monkeypatch.undo()
    assert read_json(target / "manifest.json") == {"v": 1}
    assert entries(tmp_path) == ["out"]


def test_refuses_to_replace_foreign_folder_or_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="manifest.json"):
        with atomic_folder(tmp_path / "docs"):
            pass
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        with atomic_folder(tmp_path / "file"):
            pass
    assert entries(tmp_path) == ["docs", "file"]


def test_empty_folder_or_no_marker_check_can_be_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as tmp:
        (tmp / "manifest.json").write_text("{}")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with atomic_folder(tmp_path / "other", marker=None) as tmp:
        (tmp / "y").write_text("y")
    assert entries(tmp_path / "other") == ["y"]


def test_write_json_is_strict_and_readable(tmp_path):
    write_json(tmp_path / "a.json", {"é": [1, 2.5, None]})
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {"é": [1, 2.5, None]}
    with pytest.raises(ValueError):
        write_json(tmp_path / "b.json", {"x": float("nan")})
    fsync_file(tmp_path / "a.json")


def test_jsonl_round_trip(tmp_path):
    rows = [{"id": "a"}, {"id": "b", "n": 2}]
    assert write_jsonl(tmp_path / "r.jsonl", iter(rows)) == 2
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    (tmp_path / "bad.jsonl").write_text('{"ok": 1}\n\n{bad\n')
    with pytest.raises(ValueError, match="line 3"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_json_object_copies_and_validates():
    original = {"tags": ("a", "b"), "nested": {"x": [1]}}
    copy = json_object(original)
    assert copy == {"tags": ["a", "b"], "nested": {"x": [1]}}
    copy["nested"]["x"].append(2)
    assert original["nested"]["x"] == [1]
    assert json_object(None) == {}
    for bad in ([1, 2], {"x": object()}, {"x": float("nan")}, {1: "int key"}):
        with pytest.raises(InputError):
            json_object(bad)


def test_utc_now_format():
    stamp = utc_now()
    assert stamp.endswith("Z") and "T" in stamp and len(stamp) == 20
