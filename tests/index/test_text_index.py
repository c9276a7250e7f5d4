"""TextIndex (chunks + FAISS + BM25 under one manifest) and IndexStore (the named indexes of a home)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import build_text_index, tree_digest, write_medical_pdf
from medrag.errors import IndexCorrupt, IndexMismatch, IndexNotFound, IndexStoreError, InputError
from medrag.index.text_index import IndexStore, SourceRecord, TextIndex, validate_index_name
from medrag.testing.fakes import HashingEmbedder
from medrag.types import Chunk


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    return IndexStore(tmp_path / "indexes")


@pytest.fixture
def anatomy(tmp_path: Path, hashing_embedder) -> TextIndex:
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf", ("bone", "heart", "marrow"))
    return build_text_index("anatomy", [pdf], hashing_embedder)


def make_chunks(doc_id: str, source: str, texts: list[str]) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=f"{doc_id}:p0001:c{i:03d}",
            doc_id=doc_id,
            text=text,
            source=source,
            title="Notes",
            page=1,
            bbox=(72.0, 100.0 + 20 * i, 540.0, 115.0 + 20 * i),
            metadata={"section": "Bone", "kind": "text"},
        )
        for i, text in enumerate(texts)
    ]


def add(index: TextIndex, embedder, doc_id: str, source: str, texts: list[str]) -> list[Chunk]:
    chunks = make_chunks(doc_id, source, texts)
    record = SourceRecord(source, doc_id, f"hash-{doc_id}", "Notes", "pdf", 1)
    index.add_document_chunks(record, chunks, embedder.embed_texts([c.text for c in chunks]))
    return chunks


# -- IndexStore ---------------------------------------------------------------


def test_store_names_exists_open_info_delete(store: IndexStore, anatomy: TextIndex, hashing_embedder) -> None:
    assert store.names() == []  # the root does not exist yet
    assert not store.exists("anatomy")

    path = store.save(anatomy)
    assert path == store.root / "anatomy"
    other = TextIndex("b-notes", hashing_embedder.info())
    add(other, hashing_embedder, "d1", "b.pdf", ["Osteocytes live in lacunae within the bone matrix."])
    store.save(other)
    # Folders without a manifest and hidden leftovers of interrupted saves are not indexes.
    (store.root / "stray").mkdir()
    (store.root / ".anatomy.tmp-123").mkdir()
    (store.root / ".anatomy.tmp-123" / "manifest.json").write_text("{}")

    assert store.names() == ["anatomy", "b-notes"]
    assert store.exists("anatomy") and store.exists("b-notes") and not store.exists("stray")

    opened = store.open("anatomy", hashing_embedder.info())
    assert isinstance(opened, TextIndex)
    assert len(opened) == len(anatomy) == 6

    info = store.info("anatomy")
    assert info["format"] == "medrag.text-index" and info["format_version"] == 1
    assert info["name"] == "anatomy"
    assert info["embedder"] == hashing_embedder.info().to_dict()
    assert info["counts"] == {"sources": 1, "chunks": 6}
    assert [s["source"] for s in info["sources"]] == ["anatomy.pdf"]
    assert sorted(info["sources"][0]["chunk_ids"]) == sorted(anatomy.chunks)
    assert [m["name"] for m in store.iter_manifests()] == ["anatomy", "b-notes"]

    store.delete("anatomy")
    assert not (store.root / "anatomy").exists()
    assert store.names() == ["b-notes"]
    with pytest.raises(IndexNotFound):
        store.delete("anatomy")
    with pytest.raises(IndexNotFound):
        store.info("anatomy")


def test_unknown_index_message_names_known_indexes_and_ingest_command(store: IndexStore, anatomy: TextIndex) -> None:
    with pytest.raises(IndexNotFound, match="none yet"):
        store.open("textbook")
    store.save(anatomy)
    with pytest.raises(IndexNotFound) as caught:
        store.open("textbook")
    message = str(caught.value)
    assert "'textbook'" in message
    assert "known: anatomy" in message
    assert "medrag ingest PATH --index textbook" in message
    assert caught.value.exit_code != 0


@pytest.mark.parametrize("name", ["../x", "", "a b", "x/y", ".hidden", "-dash", "a" * 101])
def test_invalid_index_names_are_input_errors(store: IndexStore, hashing_embedder, name: str) -> None:
    with pytest.raises(InputError, match="invalid index name"):
        validate_index_name(name)
    for call in (store.path, store.exists, store.open, store.info, store.delete):
        with pytest.raises(InputError):
            call(name)
    with pytest.raises(InputError):
        TextIndex(name, hashing_embedder.info())
    assert not (store.root.parent / "x").exists()


@pytest.mark.parametrize("name", ["notes", "Book_2", "a.b-c", "9", "a" * 100])
def test_valid_index_names(name: str) -> None:
    assert validate_index_name(name) == name


# -- TextIndex persistence ----------------------------------------------------


def test_save_load_round_trip(tmp_path: Path, anatomy: TextIndex, hashing_embedder) -> None:
    anatomy.save(tmp_path / "anatomy")
    assert sorted(p.name for p in (tmp_path / "anatomy").iterdir()) == ["chunks.jsonl", "dense", "lexical", "manifest.json"]
    loaded = TextIndex.load(tmp_path / "anatomy", hashing_embedder.info())

    assert loaded.name == "anatomy"
    assert loaded.embedder_info == hashing_embedder.info()
    assert loaded.chunks == anatomy.chunks  # text, page, bbox (back to a tuple), metadata
    assert all(isinstance(c.bbox, tuple) for c in loaded.chunks.values())
    assert loaded.sources == anatomy.sources
    (record,) = loaded.sources.values()
    assert record.source == "anatomy.pdf" and record.pages == 3 and len(record.content_hash) == 64
    assert sorted(record.chunk_ids) == sorted(loaded.chunks)
    assert len(loaded.dense) == len(loaded.lexical) == len(loaded.chunks) == 6
    assert loaded.created == anatomy.created and loaded.updated == anatomy.updated
    captions = [c for c in loaded.chunks.values() if c.metadata.get("kind") == "caption"]
    assert sorted(c.metadata["figure"] for c in captions) == ["Figure 1.1", "Figure 1.2"]

    # Searches give the same hits after the round trip.
    query = hashing_embedder.embed_queries(["sinoatrial node pacemaker"])
    before = [(h.id, round(h.score, 5)) for h in anatomy.dense.search(query, 3)[0]]
    after = [(h.id, round(h.score, 5)) for h in loaded.dense.search(query, 3)[0]]
    assert before == after
    assert [h.id for h in loaded.lexical.search("triglycerides", 2)] == [h.id for h in anatomy.lexical.search("triglycerides", 2)]
    assert loaded.lexical.search("triglycerides", 1)[0].id.endswith(":p0003:c000")

    # Filter metadata went into both indexes.
    where = {"page": 2}
    assert {h.id for h in loaded.lexical.search("heart bone marrow", 10, where=where)} <= {
        cid for cid, c in loaded.chunks.items() if c.page == 2
    }

    # Saving the loaded index again gives identical chunk and manifest files.
    loaded.save(tmp_path / "again")
    assert (tmp_path / "again" / "chunks.jsonl").read_bytes() == (tmp_path / "anatomy" / "chunks.jsonl").read_bytes()
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest == json.loads((tmp_path / "anatomy" / "manifest.json").read_text())


def test_load_without_embedder_info_uses_the_stored_one(tmp_path: Path, anatomy: TextIndex, hashing_embedder) -> None:
    anatomy.save(tmp_path / "anatomy")
    loaded = TextIndex.load(tmp_path / "anatomy")
    assert loaded.embedder_info == hashing_embedder.info()
    loaded.check_embedder(hashing_embedder)  # no error


def test_empty_index_round_trip(tmp_path: Path, hashing_embedder) -> None:
    index = TextIndex("empty", hashing_embedder.info())
    index.save(tmp_path / "empty")
    loaded = TextIndex.load(tmp_path / "empty")
    assert len(loaded) == 0 and loaded.sources == {}


@pytest.mark.parametrize(
    "other",
    [HashingEmbedder(dim=64), HashingEmbedder(dim=128), HashingEmbedder(dim=256, name="other-model")],
    ids=["dim64", "dim128", "other-name"],
)
def test_opening_with_another_embedder_is_a_mismatch(store: IndexStore, anatomy: TextIndex, hashing_embedder, other) -> None:
    store.save(anatomy)
    with pytest.raises(IndexMismatch) as caught:
        store.open("anatomy", other.info())
    message = str(caught.value)
    assert hashing_embedder.name in message and other.name in message
    assert "re-ingest" in message
    with pytest.raises(IndexMismatch):
        TextIndex.load(store.path("anatomy"), other.info())
    with pytest.raises(IndexMismatch):
        store.open("anatomy").check_embedder(other)


def test_adding_a_document_again_replaces_its_chunks(hashing_embedder) -> None:
    index = TextIndex("notes", hashing_embedder.info())
    old = add(index, hashing_embedder, "docv1", "bones.pdf", [
        "Compact bone forms the hard outer layer of bones.",
        "Osteoclasts resorb old bone matrix.",
    ])
    keep = add(index, hashing_embedder, "heart1", "heart.pdf", ["The mitral valve separates the left atrium and ventricle."])
    assert len(index) == 3

    # Same file name, new content (new doc id): the earlier version's chunks disappear everywhere.
    new = add(index, hashing_embedder, "docv2", "bones.pdf", ["Spongy bone contains trabeculae and red marrow."])
    assert set(index.chunks) == {new[0].chunk_id, keep[0].chunk_id}
    for chunk in old:
        assert chunk.chunk_id not in index.dense and chunk.chunk_id not in index.lexical
    assert len(index.dense) == len(index.lexical) == 2
    assert set(index.sources) == {"docv2", "heart1"}
    assert index.sources["docv2"].chunk_ids == [new[0].chunk_id]
    assert index.lexical.search("osteoclasts", 5) == []
    hits = index.dense.search(hashing_embedder.embed_queries(["spongy bone trabeculae"]), 1)[0]
    assert hits[0].id == new[0].chunk_id

    # Same doc id again (identical chunk ids): replaced in place, not duplicated.
    again = add(index, hashing_embedder, "docv2", "bones.pdf", ["Spongy bone is also called cancellous bone."])
    assert len(index) == len(index.dense) == len(index.lexical) == 2
    assert index.chunks[again[0].chunk_id].text == "Spongy bone is also called cancellous bone."

    assert index.remove_source("bones.pdf") == 1
    assert set(index.chunks) == {keep[0].chunk_id} and set(index.sources) == {"heart1"}
    assert index.remove_doc("nope") == 0


def test_chunks_and_vectors_must_agree(hashing_embedder) -> None:
    index = TextIndex("notes", hashing_embedder.info())
    chunks = make_chunks("d", "a.pdf", ["one two three four", "five six seven eight"])
    with pytest.raises(InputError, match="2 chunks but 1 vectors"):
        index.add_document_chunks(SourceRecord("a.pdf", "d", "h", "t", "pdf", 1), chunks, np.zeros((1, 256), np.float32))
    assert len(index) == 0 and index.sources == {}


def test_has_content(anatomy: TextIndex) -> None:
    (record,) = anatomy.sources.values()
    assert anatomy.has_content(record.content_hash)
    assert not anatomy.has_content("0" * 64)


# -- corrupted folders --------------------------------------------------------


def _drop_first_line(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[1:]), encoding="utf-8")


def _rename_a_chunk(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(lines[0])
    record["chunk_id"] += "-renamed"
    lines[0] = json.dumps(record) + "\n"
    path.write_text("".join(lines), encoding="utf-8")


def _patch_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


CORRUPTIONS = {
    "chunks-file-deleted": lambda f: (f / "chunks.jsonl").unlink(),
    "chunk-line-deleted": lambda f: _drop_first_line(f / "chunks.jsonl"),
    "chunk-line-garbage": lambda f: (f / "chunks.jsonl").write_text("{not json\n" + (f / "chunks.jsonl").read_text()),
    "chunk-record-wrong-fields": lambda f: (f / "chunks.jsonl").write_text(
        (f / "chunks.jsonl").read_text().replace('"doc_id"', '"document"', 1)
    ),
    "chunk-id-unknown-to-vectors": lambda f: _rename_a_chunk(f / "chunks.jsonl"),
    "manifest-garbage": lambda f: (f / "manifest.json").write_text("{oops"),
    "manifest-no-embedder": lambda f: (f / "manifest.json").write_text(json.dumps({"format": "medrag.text-index"})),
    "manifest-wrong-format": lambda f: _patch_manifest(f, format="something-else"),
    "manifest-future-version": lambda f: _patch_manifest(f, format_version=99),
    "manifest-bad-source-record": lambda f: _patch_manifest(f, sources=[{"source": "a.pdf"}]),
    "dense-folder-deleted": lambda f: shutil.rmtree(f / "dense"),
    "lexical-folder-deleted": lambda f: shutil.rmtree(f / "lexical"),
    "faiss-file-deleted": lambda f: (f / "dense" / "index.faiss").unlink(),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_corrupted_folder_is_index_corrupt(store: IndexStore, anatomy: TextIndex, hashing_embedder, corrupt: str) -> None:
    store.save(anatomy)
    CORRUPTIONS[corrupt](store.path("anatomy"))
    with pytest.raises(IndexCorrupt) as caught:
        store.open("anatomy", hashing_embedder.info())
    assert isinstance(caught.value, IndexStoreError)
    assert str(store.path("anatomy")) in str(caught.value) or "anatomy" in str(caught.value)


def test_missing_manifest_is_not_found(tmp_path: Path, anatomy: TextIndex) -> None:
    anatomy.save(tmp_path / "anatomy")
    (tmp_path / "anatomy" / "manifest.json").unlink()
    with pytest.raises(IndexNotFound):
        TextIndex.load(tmp_path / "anatomy")


def test_failed_save_leaves_previous_folder_intact(tmp_path: Path, anatomy: TextIndex, hashing_embedder, monkeypatch) -> None:
    target = tmp_path / "anatomy"
    anatomy.save(target)
    before = tree_digest(target)

    add(anatomy, hashing_embedder, "extra", "extra.pdf", ["Chondrocytes maintain cartilage."])

    def boom(path):
        raise OSError("disk full")

    monkeypatch.setattr(anatomy.lexical, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        anatomy.save(target)
    assert tree_digest(target) == before
    assert len(TextIndex.load(target)) == 6


def test_source_and_hash_lookups_follow_adds_replacements_and_removals(tmp_path) -> None:
    """has_content / remove_source use lookups kept beside ``sources``; they must agree with it after every change."""
    from medrag.index.text_index import SourceRecord, TextIndex
    from medrag.testing.fakes import HashingEmbedder
    from medrag.types import Chunk

    embedder = HashingEmbedder(dim=32)
    index = TextIndex("lookups", embedder.info())

    def add(doc_id: str, source: str, content_hash: str) -> None:
        chunks = [Chunk(chunk_id=f"{doc_id}:0", doc_id=doc_id, text=f"text of {doc_id}", source=source, title=source)]
        record = SourceRecord(source=source, doc_id=doc_id, content_hash=content_hash, title=source, kind="txt", pages=1)
        index.add_document_chunks(record, chunks, embedder.embed_texts([c.text for c in chunks]))

    add("d1", "a.txt", "h1")
    add("d2", "b.txt", "h2")
    assert index.has_content("h1") and index.has_content("h2")
    add("d3", "a.txt", "h3")  # a.txt changed: its old version goes
    assert sorted(index.sources) == ["d2", "d3"] and not index.has_content("h1") and index.has_content("h3")
    assert index.remove_source("b.txt") == 1 and not index.has_content("h2")
    index.save(tmp_path / "lookups")
    reloaded = TextIndex.load(tmp_path / "lookups")
    assert reloaded.has_content("h3") and not reloaded.has_content("h2")
    assert reloaded.remove_source("a.txt") == 1 and reloaded.sources == {}
