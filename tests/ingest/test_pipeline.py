"""The ingest pipeline: files -> documents -> chunks -> vectors -> a saved named index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pymupdf
import pytest

from conftest import CountingEmbedder, tree_digest, write_medical_pdf
from medrag.config import load_settings
from medrag.errors import InputError, MedragError, SourceFileError
from medrag.index.text_index import IndexStore
from medrag.ingest.pipeline import collect_files, ingest
from medrag.testing.fakes import HashingEmbedder

pytestmark = pytest.mark.usefixtures("clean_env")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(home=str(tmp_path / "home"), progress=False)


@pytest.fixture
def embedder() -> CountingEmbedder:
    return CountingEmbedder(HashingEmbedder(dim=128))


@pytest.fixture
def store(settings) -> IndexStore:
    return IndexStore(settings.indexes_dir)


def run(paths, settings, embedder, *, index_name="notes", skip_bad=False):
    return ingest([str(p) for p in paths], index_name=index_name, embedder=embedder, settings=settings, skip_bad=skip_bad)


def test_ingest_creates_index_and_page_thumbnails(tmp_path: Path, settings, embedder, store) -> None:
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf")
    report = run([pdf], settings, embedder)

    assert report.index == "notes"
    assert report.added == ["anatomy.pdf"]
    assert report.replaced == report.unchanged == report.failed == []
    assert report.chunks_added == report.total_chunks == 4  # each page: its text (under 180 words) + a caption
    assert embedder.texts_embedded == 4
    assert report.seconds >= 0
    assert "1 added" in report.summary() and "+4 chunks (4 in all)" in report.summary()

    assert store.names() == ["notes"]
    index = store.open("notes", embedder.info())
    assert len(index) == 4
    (record,) = index.sources.values()
    assert record.source == "anatomy.pdf" and record.pages == 2 and record.kind == "pdf"
    assert record.title == "Notes on Anatomy"
    assert record.path == str(pdf.resolve())
    assert {c.page for c in index.chunks.values()} == {1, 2}
    assert index.settings["chunking"] == {"max_words": 180, "overlap_sentences": 0}

    thumbs_dir = settings.home / "assets" / "pages"
    thumbs = sorted(thumbs_dir.glob("*.jpg"))
    assert [t.name for t in thumbs] == [f"{record.doc_id}_p0001.jpg", f"{record.doc_id}_p0002.jpg"]
    for thumb in thumbs:
        assert thumb.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
        assert pymupdf.Pixmap(str(thumb)).width == 300
    for chunk in index.chunks.values():
        assert chunk.metadata["thumbnail"] == str(thumbs_dir / f"{record.doc_id}_p{chunk.page:04d}.jpg")


def test_reingesting_the_same_file_is_unchanged_and_embeds_nothing(tmp_path: Path, settings, embedder, store) -> None:
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf")
    run([pdf], settings, embedder)
    before = tree_digest(store.path("notes"))
    embedder.calls = embedder.texts_embedded = 0

    report = run([pdf], settings, embedder)
    assert report.unchanged == ["anatomy.pdf"]
    assert report.added == report.replaced == []
    assert report.chunks_added == 0 and report.total_chunks == 4
    assert embedder.calls == 0 and embedder.texts_embedded == 0
    assert tree_digest(store.path("notes")) == before

    # A byte-identical copy under another name is the same content: also skipped.
    copy = tmp_path / "copy.pdf"
    copy.write_bytes(pdf.read_bytes())
    report = run([copy], settings, embedder)
    assert report.unchanged == ["copy.pdf"] and embedder.texts_embedded == 0


def test_changed_file_replaces_its_earlier_version(tmp_path: Path, settings, embedder, store) -> None:
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf")
    other = write_medical_pdf(tmp_path / "marrow.pdf", ("marrow",))
    run([pdf, other], settings, embedder)
    old_index = store.open("notes", embedder.info())
    old_ids = {cid for cid, c in old_index.chunks.items() if c.source == "anatomy.pdf"}
    marrow_ids = {cid for cid, c in old_index.chunks.items() if c.source == "marrow.pdf"}
    assert old_ids and marrow_ids

    write_medical_pdf(pdf, extra="Chondrocytes in the epiphyseal plate divide and lengthen the bone during childhood.")
    embedder.texts_embedded = 0
    report = run([pdf, other], settings, embedder)
    assert report.replaced == ["anatomy.pdf"]
    assert report.unchanged == ["marrow.pdf"]
    assert report.added == []
    assert embedder.texts_embedded == report.chunks_added > 0

    index = store.open("notes", embedder.info())
    assert not old_ids & set(index.chunks)
    assert marrow_ids <= set(index.chunks)
    assert len(index) == len(index.dense) == len(index.lexical) == report.total_chunks
    assert sorted(r.source for r in index.sources.values()) == ["anatomy.pdf", "marrow.pdf"]
    new_ids = {cid for cid, c in index.chunks.items() if c.source == "anatomy.pdf"}
    assert any("Chondrocytes" in index.chunks[cid].text for cid in new_ids)
    hits = index.lexical.search("chondrocytes epiphyseal", 3)
    assert hits and hits[0].id in new_ids
    assert all(h.id not in old_ids for h in index.lexical.search("osteoclasts resorption", 10))


def test_folder_input_expands_to_the_pdfs_in_it(tmp_path: Path, settings, embedder, store) -> None:
    folder = tmp_path / "books"
    (folder / "more").mkdir(parents=True)
    write_medical_pdf(folder / "anatomy.pdf")
    write_medical_pdf(folder / "more" / "marrow.PDF", ("marrow",))
    (folder / "readme.md").write_text("not a book")  # .txt would be read as a plain-text report
    (folder / "image.png").write_bytes(PNG_MAGIC)

    files = collect_files([folder])
    assert [f.name for f in files] == ["anatomy.pdf", "marrow.PDF"]
    # The same file named twice (folder and file) is ingested once.
    assert collect_files([folder, folder / "anatomy.pdf"]) == files

    report = run([folder], settings, embedder)
    assert sorted(report.added) == ["anatomy.pdf", "marrow.PDF"]
    assert report.failed == []
    index = store.open("notes", embedder.info())
    assert sorted(r.source for r in index.sources.values()) == ["anatomy.pdf", "marrow.PDF"]


def test_folder_without_supported_files_is_an_error(tmp_path: Path, settings, embedder, store) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.docx").write_text("hello")  # .txt is a supported type (plain-text reports)
    with pytest.raises(SourceFileError, match="no supported files"):
        run([folder], settings, embedder)
    assert store.names() == []


# -- bad input ----------------------------------------------------------------


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "does_not_exist.pdf"


def _text_renamed(tmp_path: Path) -> Path:
    path = tmp_path / "notes.pdf"
    path.write_text("Bone is a living tissue. This is a plain text file, not a PDF.\n")
    return path


def _corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    return path


def _truncated(tmp_path: Path) -> Path:
    good = write_medical_pdf(tmp_path / "good_source.pdf")
    path = tmp_path / "truncated.pdf"
    path.write_bytes(good.read_bytes()[:200])
    good.unlink()
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    return path


def _encrypted(tmp_path: Path) -> Path:
    source = write_medical_pdf(tmp_path / "plain.pdf")
    path = tmp_path / "locked.pdf"
    doc = pymupdf.open(source)
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    doc.close()
    source.unlink()
    return path


def _unsupported(tmp_path: Path) -> Path:
    path = tmp_path / "chapter.docx"
    path.write_bytes(b"PK\x03\x04 not really a docx")
    return path


BAD = {
    "missing": (_missing, "file not found"),
    "text-renamed-pdf": (_text_renamed, "not a PDF file"),
    "corrupt": (_corrupt, "corrupt or unreadable PDF"),
    "truncated": (_truncated, "corrupt or unreadable PDF"),
    "empty": (_empty, "not a PDF file"),
    "encrypted": (_encrypted, "encrypted"),
    "unsupported-suffix": (_unsupported, "unsupported file type '.docx'"),
}


@pytest.mark.parametrize("kind", list(BAD), ids=list(BAD))
def test_bad_input_raises_and_leaves_the_index_untouched(tmp_path: Path, settings, embedder, store, kind: str) -> None:
    run([write_medical_pdf(tmp_path / "anatomy.pdf")], settings, embedder)
    before = tree_digest(store.path("notes"))
    assert before

    make, reason = BAD[kind]
    bad = make(tmp_path)
    good_new = write_medical_pdf(tmp_path / "marrow.pdf", ("marrow",))
    embedder.texts_embedded = 0
    with pytest.raises(SourceFileError) as caught:
        run([good_new, bad], settings, embedder)  # a good file first: it must not go in either
    error = caught.value
    assert isinstance(error, InputError) and isinstance(error, MedragError)
    assert error.exit_code != 0
    assert reason in str(error)
    assert error.path.endswith(bad.name)
    assert embedder.texts_embedded == 0

    assert tree_digest(store.path("notes")) == before
    assert store.names() == ["notes"]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]  # no half-written leftovers


@pytest.mark.parametrize("kind", list(BAD), ids=list(BAD))
def test_bad_input_on_a_new_index_creates_nothing(tmp_path: Path, settings, embedder, store, kind: str) -> None:
    make, _ = BAD[kind]
    with pytest.raises(SourceFileError):
        run([make(tmp_path)], settings, embedder)
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_skip_bad_ingests_the_good_files_and_reports_the_bad(tmp_path: Path, settings, embedder, store) -> None:
    good = [write_medical_pdf(tmp_path / "anatomy.pdf"), write_medical_pdf(tmp_path / "marrow.pdf", ("marrow",))]
    bad = [_text_renamed(tmp_path), _corrupt(tmp_path), _encrypted(tmp_path), _unsupported(tmp_path)]

    report = run([good[0], *bad, good[1]], settings, embedder, skip_bad=True)
    assert sorted(report.added) == ["anatomy.pdf", "marrow.pdf"]
    failed = dict(report.failed)
    assert sorted(Path(p).name for p in failed) == sorted(p.name for p in bad)
    assert "not a PDF file" in failed[str(bad[0].resolve())]
    assert "encrypted" in failed[str(bad[2].resolve())]
    assert "1 failed" not in report.summary() and "4 failed" in report.summary()

    index = store.open("notes", embedder.info())
    assert sorted(r.source for r in index.sources.values()) == ["anatomy.pdf", "marrow.pdf"]
    assert len(index) == report.total_chunks == 5


def test_skip_bad_does_not_skip_a_missing_path(tmp_path: Path, settings, embedder, store) -> None:
    # Paths are collected before reading: a path that does not exist is a usage error even with skip_bad.
    with pytest.raises(SourceFileError, match="file not found"):
        run([write_medical_pdf(tmp_path / "anatomy.pdf"), _missing(tmp_path)], settings, embedder, skip_bad=True)
    assert store.names() == []


def test_all_bad_with_skip_bad_on_a_new_index_raises_and_creates_no_index(tmp_path: Path, settings, embedder, store) -> None:
    bad = [_text_renamed(tmp_path), _corrupt(tmp_path)]
    with pytest.raises(InputError, match="index 'notes' was not created") as caught:
        run(bad, settings, embedder, skip_bad=True)
    assert "corrupt.pdf" in str(caught.value) and "notes.pdf" in str(caught.value)
    assert not store.exists("notes")
    assert not (store.root / "notes").exists()
    assert embedder.texts_embedded == 0


def test_all_bad_with_skip_bad_on_an_existing_index_keeps_it(tmp_path: Path, settings, embedder, store) -> None:
    run([write_medical_pdf(tmp_path / "anatomy.pdf")], settings, embedder)
    before = tree_digest(store.path("notes"))
    report = run([_corrupt(tmp_path)], settings, embedder, skip_bad=True)
    assert report.added == [] and [Path(p).name for p, _ in report.failed] == ["corrupt.pdf"]
    assert report.total_chunks == 4
    assert tree_digest(store.path("notes")) == before


def test_existing_index_with_another_embedder_is_refused(tmp_path: Path, settings, embedder, store) -> None:
    from medrag.errors import IndexMismatch

    pdf = write_medical_pdf(tmp_path / "anatomy.pdf")
    run([pdf], settings, embedder)
    before = tree_digest(store.path("notes"))
    with pytest.raises(IndexMismatch):
        run([write_medical_pdf(tmp_path / "marrow.pdf", ("marrow",))], settings, HashingEmbedder(dim=64))
    assert tree_digest(store.path("notes")) == before


def test_invalid_index_name_is_refused_before_reading(tmp_path: Path, settings, embedder, store) -> None:
    with pytest.raises(InputError, match="invalid index name"):
        run([write_medical_pdf(tmp_path / "anatomy.pdf")], settings, embedder, index_name="../escape")
    assert not (settings.home / "escape").exists()
    assert not store.root.exists() or list(store.root.iterdir()) == []


class _RecordingEmbedder(HashingEmbedder):
    """Remembers the texts of each embed call."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.batches: list[list[str]] = []

    def embed_texts(self, texts):
        self.batches.append(list(texts))
        return super().embed_texts(texts)


def test_embed_in_batches_sends_longest_first_and_returns_input_order() -> None:
    from medrag.ingest.pipeline import embed_in_batches

    embedder = _RecordingEmbedder()
    texts = ["bb", "a", "dddd", "ccc", "eeeee"]
    vectors = embed_in_batches(embedder, texts, batch_size=2)

    assert embedder.batches == [["eeeee", "dddd"], ["ccc", "bb"], ["a"]]
    assert np.allclose(vectors, HashingEmbedder(dim=64).embed_texts(texts))
    assert embed_in_batches(embedder, [], batch_size=2).shape == (0, 64)


def test_chunks_of_all_files_are_embedded_together_and_stored_with_their_own_vectors(tmp_path: Path, settings, store) -> None:
    from medrag.index.text_index import embedding_text

    embedder = _RecordingEmbedder()
    first = write_medical_pdf(tmp_path / "a.pdf")
    second = write_medical_pdf(tmp_path / "b.pdf", ("heart",), title="Heart")
    report = run([first, second], settings, embedder)

    assert report.added == ["a.pdf", "b.pdf"] and report.chunks_added == 6
    assert len(embedder.batches) == 1 and len(embedder.batches[0]) == 6  # one call for both files
    index = store.open("notes", embedder.info())
    for chunk in index.chunks.values():  # each chunk's stored vector is the one of its own text
        (hit, *_), = index.dense.search(HashingEmbedder(dim=64).embed_texts([embedding_text(chunk)]), 1)
        # (the two files share the heart page, so the best hit may be the other file's identical chunk)
        assert embedding_text(index.chunks[hit.id]) == embedding_text(chunk) and hit.score == pytest.approx(1.0, abs=1e-5)


def test_duplicate_id_in_one_batch_names_the_file_that_has_it(tmp_path: Path, settings, embedder) -> None:
    rows = '{"report_id": "R1", "findings": "clear lungs"}\n'
    (tmp_path / "a.jsonl").write_text(rows, encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(rows.replace("clear", "hazy"), encoding="utf-8")
    with pytest.raises(SourceFileError, match="duplicate id 'R1': a.jsonl in this batch has it too"):
        run([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], settings, embedder)


class _FailsOnCall(HashingEmbedder):
    """Embeds normally until its ``fail_on``-th call, which raises: a crash midway through a run."""

    def __init__(self, fail_on: int) -> None:
        super().__init__(dim=64)
        self.calls = 0
        self.fail_on = fail_on

    def embed_texts(self, texts):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("killed mid-run")
        return super().embed_texts(texts)


def test_a_crash_midway_keeps_the_groups_checkpointed_before_it_and_a_rerun_does_only_the_rest(
    tmp_path: Path, settings, store, monkeypatch
) -> None:
    import medrag.ingest.pipeline as pipeline

    monkeypatch.setattr(pipeline, "EMBED_GROUP_CHUNKS", 1)  # one file per group
    monkeypatch.setattr(pipeline, "EMBED_GROUP", 1000)  # one embedder call per group
    pdfs = [write_medical_pdf(tmp_path / f"{name}.pdf", ("heart",), title=name) for name in ("a", "b", "c")]
    with pytest.raises(RuntimeError, match="killed mid-run"):
        ingest([str(p) for p in pdfs], index_name="notes", embedder=_FailsOnCall(fail_on=3), settings=settings,
               checkpoint_seconds=0)
    saved = store.open("notes")
    assert sorted(r.source for r in saved.sources.values()) == ["a.pdf", "b.pdf"]  # the third file was in progress
    assert len(saved.dense) == len(saved.chunks)

    again = ingest([str(p) for p in pdfs], index_name="notes", embedder=HashingEmbedder(dim=64), settings=settings)
    assert sorted(again.unchanged) == ["a.pdf", "b.pdf"] and again.added == ["c.pdf"]
    index = store.open("notes")
    assert len(index.dense) == len(index.chunks) == again.total_chunks


def test_without_checkpoints_a_crash_leaves_no_index(tmp_path: Path, settings, store, monkeypatch) -> None:
    import medrag.ingest.pipeline as pipeline

    monkeypatch.setattr(pipeline, "EMBED_GROUP_CHUNKS", 1)
    pdfs = [write_medical_pdf(tmp_path / f"{name}.pdf", ("heart",), title=name) for name in ("a", "b")]
    with pytest.raises(RuntimeError):
        ingest([str(p) for p in pdfs], index_name="notes", embedder=_FailsOnCall(fail_on=2), settings=settings,
               checkpoint_seconds=None)
    assert store.names() == []
