"""A save killed at any moment (SIGKILL, no cleanup) never leaves an unreadable index."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medrag.index.text_index import IndexStore
from medrag.storage import atomic_folder, recover_folder
from medrag.testing import HashingEmbedder

# A child process that saves index "notes" again and again, one chunk more each time.
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from medrag.index.text_index import IndexStore, SourceRecord, TextIndex
    from medrag.testing import HashingEmbedder
    from medrag.types import Chunk

    store = IndexStore(sys.argv[1])
    embedder = HashingEmbedder(64)
    index = store.open("notes")
    n = len(index)
    print("ready", flush=True)
    while True:
        n += 1
        chunks = [Chunk(f"c{i}", "d", f"passage {i} about bone", "notes.txt", "Notes") for i in range(n)]
        record = SourceRecord("notes.txt", "d", f"hash{n}", "Notes", "text", 1)
        index.add_document_chunks(record, chunks, embedder.embed_texts([c.text for c in chunks]))
        store.save(index)
    """
)


@pytest.fixture
def store(tmp_path: Path) -> IndexStore:
    from medrag.index.text_index import SourceRecord, TextIndex
    from medrag.types import Chunk

    store = IndexStore(tmp_path / "indexes")
    embedder = HashingEmbedder(64)
    index = TextIndex("notes", embedder.info())
    chunks = [Chunk("c0", "d", "passage 0 about bone", "notes.txt", "Notes")]
    index.add_document_chunks(SourceRecord("notes.txt", "d", "hash0", "Notes", "text", 1), chunks, embedder.embed_texts(["passage 0 about bone"]))
    store.save(index)
    return store


@pytest.mark.slow
def test_sigkill_mid_save_leaves_a_loadable_index(store: IndexStore) -> None:
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    sizes = []
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(store.root)], stdout=subprocess.PIPE, env=env)
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.6))  # somewhere inside one of many saves
        child.send_signal(signal.SIGKILL)
        child.wait()
        index = store.open("notes", HashingEmbedder(64).info())  # must load, consistent
        assert len(index) == len(index.dense) == len(index.lexical) >= 1
        assert set(index.chunks) == {f"c{i}" for i in range(len(index))}
        sizes.append(len(index))
    assert sizes == sorted(sizes) and sizes[-1] > 1  # saves did happen and none went backwards


def test_kill_between_renames_is_recovered(tmp_path: Path) -> None:
    """Simulate the one window atomic_folder cannot close: old folder moved aside, new not yet in."""
    target = tmp_path / "idx"
    with atomic_folder(target) as tmp:
        (tmp / "manifest.json").write_text("{}")
    os.replace(target, tmp_path / ".idx.bak-123456")
    assert not target.exists()
    assert recover_folder(target)
    assert (target / "manifest.json").read_text() == "{}"


def test_store_recovers_on_open(store: IndexStore) -> None:
    path = store.path("notes")
    os.replace(path, path.parent / ".notes.bak-abcdef")
    assert store.names() == ["notes"]
    assert len(store.open("notes")) == 1
