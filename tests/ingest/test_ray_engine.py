"""The Ray Data engine gives the local engine's ids, chunks and vectors; bad files are reported, never fatal."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason='the Ray engine needs pip install "medrag[ray]"')
pytest.importorskip("ray.data", reason='the Ray engine needs pip install "medrag[ray]"')

from conftest import write_medical_pdf  # noqa: E402
from medrag.config import load_settings  # noqa: E402
from medrag.errors import InputError  # noqa: E402
from medrag.index.text_index import IndexStore  # noqa: E402
from medrag.ingest.pipeline import ingest  # noqa: E402
from medrag.ingest.ray_engine import ingest_ray  # noqa: E402
from medrag.testing.fakes import HashingEmbedder  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_env")]

DIM = 64
FACTORY = functools.partial(HashingEmbedder, dim=DIM)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session: on a loaded 2-core machine the first start is slow."""
    import os

    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(home=str(tmp_path / "home"), progress=False)


@pytest.fixture
def pdfs(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "books"
    folder.mkdir()
    return [
        write_medical_pdf(folder / "anatomy.pdf"),
        write_medical_pdf(folder / "marrow.pdf", pages=("marrow", "bone"), title="Marrow"),
        write_medical_pdf(folder / "heart.pdf", pages=("heart",), title="Heart"),
    ]


def run_ray(paths, settings, name, **options):
    return ingest_ray([str(p) for p in paths], index_name=name, embedder_factory=FACTORY, settings=settings, **options)


def test_ray_matches_local(ray_session, pdfs, settings):
    local = ingest([str(p) for p in pdfs], index_name="local", embedder=FACTORY(), settings=settings)
    report = run_ray(pdfs, settings, "distributed", batch_size=3)
    assert sorted(report.added) == sorted(local.added) and report.chunks_added == local.chunks_added > 0
    assert report.failed == []

    store = IndexStore(settings.indexes_dir)
    a, b = store.open("local"), store.open("distributed")
    assert list(a.chunks) != [] and set(a.chunks) == set(b.chunks)
    for cid, chunk in a.chunks.items():
        assert b.chunks[cid].to_record() == chunk.to_record()
        np.testing.assert_allclose(b.dense.reconstruct(cid), a.dense.reconstruct(cid), atol=1e-6)
    assert {d: r.to_dict() for d, r in a.sources.items()} == {d: r.to_dict() for d, r in b.sources.items()}


def test_bad_file_is_counted_and_the_rest_goes_in(ray_session, pdfs, tmp_path, settings):
    bad = tmp_path / "books" / "broken.pdf"
    bad.write_bytes(b"this is not a pdf")
    report = run_ray([*pdfs, bad], settings, "withbad", workers=1)
    assert [Path(p).name for p, _ in report.failed] == ["broken.pdf"]
    assert sorted(report.added) == ["anatomy.pdf", "heart.pdf", "marrow.pdf"]
    assert len(IndexStore(settings.indexes_dir).open("withbad")) == report.total_chunks > 0


def test_resumes_where_it_stopped(ray_session, pdfs, settings):
    """A second run skips what the first saved; with checkpoints, a re-run after a kill redoes only the rest."""
    first = run_ray(pdfs[:2], settings, "resume", checkpoint_every=1)
    again = run_ray(pdfs, settings, "resume", checkpoint_every=1)
    assert sorted(again.unchanged) == ["anatomy.pdf", "marrow.pdf"] and again.added == ["heart.pdf"]
    full = ingest([str(p) for p in pdfs], index_name="full", embedder=FACTORY(), settings=settings)
    assert again.total_chunks == full.total_chunks == first.total_chunks + again.chunks_added
    index = IndexStore(settings.indexes_dir).open("resume")
    assert len(index.dense) == len(index.chunks) == full.total_chunks  # no duplicated, no lost chunks


def test_cli_ray_engine_into_milvus_then_search(ray_session, cli, home, tmp_path):
    """The acceptance contract: ingest JSONL records through Ray into milvus-lite, then search as for FAISS."""
    import json

    pytest.importorskip("pymilvus", reason='needs pip install "medrag[milvus]"')
    pytest.importorskip("milvus_lite", reason='needs pip install "medrag[milvus]"')
    records = tmp_path / "reports.jsonl"
    rows = [
        {"doc_id": "r1", "text": "Chest radiograph shows a right lower lobe consolidation consistent with pneumonia."},
        {"doc_id": "r2", "text": "Head CT without contrast shows no acute intracranial hemorrhage."},
        {"doc_id": "r3", "text": "Knee MRI demonstrates a tear of the medial meniscus."},
    ]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = cli(
        "ingest", records, "--index", "reports", "--id-field", "doc_id", "--text-field", "text",
        "--store", "milvus", "--engine", "ray", "--embedder", f"hashing:{DIM}", "--no-progress",
    )
    assert code == 0, err
    assert "1 added" in out
    assert (home / "milvus" / "medrag.db").exists()
    index = IndexStore(home / "indexes").open("reports")
    assert type(index.dense).__name__ == "MilvusStore" and len(index.dense) == 3
    hits = index.dense.search(FACTORY().embed_texts(["meniscus tear"]), k=3, where={"record_id": ["r2", "r3"]})[0]
    assert hits and {h.metadata["record_id"] for h in hits} <= {"r2", "r3"}
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"qid": "q1", "text": "meniscus tear on knee MRI"}) + "\n")
    for mode in ("dense", "bm25", "hybrid"):
        code, out, err = cli("index", "search", "reports", "--queries", queries, "--k", "2", "--mode", mode, "--json")
        assert code == 0, err
        answer = json.loads(out.splitlines()[0])
        assert answer["qid"] == "q1" and answer["hits"][0]["id"] == "r3", (mode, answer)


def test_cli_unknown_store_and_engine_are_refused(cli, medical_pdf):
    code, _, err = cli("ingest", medical_pdf, "--index", "x", "--store", "chroma", "--embedder", f"hashing:{DIM}")
    assert code == 2 and "known: faiss, milvus, pgvector" in err and "vector store" in err
    code, _, err = cli("ingest", medical_pdf, "--index", "x", "--engine", "spark", "--embedder", f"hashing:{DIM}")
    assert code == 2 and "known: local, ray" in err


class DyingOnceEmbedder:
    """Kills its own worker process the first time it embeds (a marker file makes it once per test)."""

    def __init__(self, marker: str) -> None:
        self.inner = HashingEmbedder(dim=DIM)
        self.name, self.dim, self.marker = self.inner.name, DIM, marker

    def embed_texts(self, texts):
        import os

        if not os.path.exists(self.marker):
            Path(self.marker).write_text("killed")
            os._exit(1)  # as if the node ran out of memory or was preempted
        return self.inner.embed_texts(texts)

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def info(self):
        return self.inner.info()


def test_worker_killed_mid_ingest_loses_and_duplicates_nothing(ray_session, pdfs, tmp_path, settings):
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test module
    marker = tmp_path / "killed-once"
    factory = functools.partial(DyingOnceEmbedder, str(marker))
    reference = ingest([str(p) for p in pdfs], index_name="reference", embedder=FACTORY(), settings=settings)
    report = ingest_ray([str(p) for p in pdfs], index_name="survivor", embedder_factory=factory, settings=settings, batch_size=2)
    assert marker.exists(), "the worker was never killed"
    assert report.failed == [] and report.total_chunks == reference.total_chunks
    index = IndexStore(settings.indexes_dir).open("survivor")
    assert sorted(index.chunks) == sorted(IndexStore(settings.indexes_dir).open("reference").chunks)
    assert len(index.dense) == len(index.chunks)


def test_embedding_actors_leave_one_cpu_for_parsing():
    """Actors reserving every CPU would starve the parse tasks and hang the run (2 workers on 2 CPUs)."""
    from medrag.ingest.ray_engine import _actor_cpus

    assert _actor_cpus(2, 1.0, 2.0) == pytest.approx(0.5)
    assert _actor_cpus(1, 1.0, 2.0) == 1.0
    assert _actor_cpus(2, 1.0, 8.0) == 1.0
    assert _actor_cpus(20, 1.0, 2.0) == pytest.approx(0.1)
    assert _actor_cpus(2, 1.0, 0.0) == 1.0  # unknown cluster size: as asked
