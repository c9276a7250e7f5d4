"""IndexFolders: the named-index home shared by text and image indexes."""

from __future__ import annotations

import pytest

from medrag.errors import IndexNotFound, InputError
from medrag.index.folders import IndexFolders, validate_index_name
from medrag.index.image_index import ImageIndexStore
from medrag.index.text_index import IndexStore


class _Saved:
    """A minimal saved index: a folder with a manifest naming it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def save(self, path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "manifest.json").write_text(f'{{"name": "{self.name}"}}', encoding="utf-8")

    @classmethod
    def load(cls, path, embedder_info=None) -> "_Saved":
        return cls(path.name)


class _Folders(IndexFolders[_Saved]):
    index_class = _Saved
    what = "toy index"
    create_hint = "make-toy {name}"


def test_save_list_open_info_delete(tmp_path):
    folders = _Folders(tmp_path)
    assert folders.names() == []
    folders.save(_Saved("b"))
    folders.save(_Saved("a"))
    assert folders.names() == ["a", "b"]
    assert folders.open("a").name == "a"
    assert folders.info("b") == {"name": "b"}
    assert [m["name"] for m in folders.iter_manifests()] == ["a", "b"]
    folders.delete("a")
    assert folders.names() == ["b"]


def test_unknown_name_names_the_kind_the_known_ones_and_how_to_create_it(tmp_path):
    folders = _Folders(tmp_path)
    folders.save(_Saved("known"))
    with pytest.raises(IndexNotFound) as err:
        folders.open("missing")
    message = str(err.value)
    assert "unknown toy index 'missing'" in message and "known" in message and "make-toy missing" in message


def test_listing_restores_an_index_whose_save_was_killed_between_renames(tmp_path):
    folders = _Folders(tmp_path)
    folders.save(_Saved("kept"))
    # what atomic_folder leaves when killed after moving the old folder aside, before renaming the new one in
    (tmp_path / "kept").rename(tmp_path / ".kept.bak-123")
    assert folders.names() == ["kept"]
    assert (tmp_path / "kept" / "manifest.json").is_file()


@pytest.mark.parametrize("bad", ["", "../escape", ".hidden", "a/b", "x" * 101])
def test_invalid_names_are_refused_before_touching_the_disk(tmp_path, bad):
    with pytest.raises(InputError):
        validate_index_name(bad)
    with pytest.raises(InputError):
        _Folders(tmp_path).path(bad)


def test_text_and_image_homes_are_index_folders_with_their_own_hints(tmp_path):
    with pytest.raises(IndexNotFound, match="medrag ingest PATH --index notes"):
        IndexStore(tmp_path / "indexes").open("notes")
    with pytest.raises(IndexNotFound, match="unknown image index 'cases'.*--embedder dual-encoder"):
        ImageIndexStore(tmp_path / "image-indexes").open("cases")
