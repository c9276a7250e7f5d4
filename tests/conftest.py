"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Assertions in the shared conformance mixins get pytest's detailed failure output.
pytest.register_assert_rewrite("medrag.testing.conformance")

# ../shared/data next to the repository root, unless MEDRAG_SHARED_DATA says otherwise.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory; tests using it are skipped when it is absent."""
    path = Path(os.environ.get("MEDRAG_SHARED_DATA") or DEFAULT_SHARED_DATA)
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set MEDRAG_SHARED_DATA to its location)")
    return path


# --- small medical PDFs and a fast embedder, shared by index/ingest/agent/CLI tests ---

BONE_TITLE = "Bone Tissue and the Skeletal System"
BONE_PARAGRAPHS = [
    "Bone tissue, or osseous tissue, is a hard, dense connective tissue that forms most of the adult "
    "skeleton. Compact bone is the denser, stronger of the two types of bone tissue. It is found under "
    "the periosteum and in the diaphyses of long bones, where it provides support and protection.",
    "Spongy bone, also called cancellous bone, contains osteocytes housed in lacunae arranged in a "
    "lattice-like network of matrix spikes called trabeculae. The spaces between the trabeculae hold "
    "red marrow, where hematopoiesis produces blood cells. In flat bones of the skull, a layer of spongy "
    "bone called the diploe lies between two thin layers of compact bone.",
    "Osteoblasts are the bone cells responsible for forming new bone; they synthesize and secrete the "
    "collagen matrix and calcium salts. Osteoclasts break down old bone in a process called resorption.",
]
BONE_CAPTION = "Figure 1.1 Cross section of a long bone. The micrograph shows osteons of compact bone around a central canal."

HEART_TITLE = "The Heart"
HEART_PARAGRAPHS = [
    "The human heart is a muscular pump with four chambers: two upper atria and two lower ventricles. "
    "The right ventricle pumps deoxygenated blood into the pulmonary circuit, and the left ventricle pumps "
    "oxygenated blood into the systemic circuit.",
    "The sinoatrial node in the wall of the right atrium is the pacemaker of the heart. It initiates each "
    "cardiac cycle by generating electrical impulses that spread through the atria. The mitral valve "
    "prevents backflow of blood from the left ventricle into the left atrium.",
]
HEART_CAPTION = "Figure 1.2 Conduction system of the heart showing the sinoatrial node and the atrioventricular node."

MARROW_TITLE = "Bone Marrow"
MARROW_PARAGRAPHS = [
    "Yellow marrow contains adipose tissue, and the triglycerides stored in its adipocytes serve as an "
    "energy reserve. In adults, red marrow persists mainly in the flat bones and the epiphyses of long bones.",
]


def _write_page(doc, title: str, paragraphs: list[str], caption: str | None) -> None:
    import pymupdf

    page = doc.new_page(width=612, height=792)
    page.insert_text((72, 90), title, fontsize=18, fontname="hebo")
    y = 110.0
    for paragraph in paragraphs:
        rect = pymupdf.Rect(72, y, 540, y + 120)
        left = page.insert_textbox(rect, paragraph, fontsize=10)
        assert left >= 0, "paragraph does not fit its box"
        y += 120 - left + 12
    if caption:
        page.insert_textbox(pymupdf.Rect(72, y + 10, 540, y + 60), caption, fontsize=9)


def write_medical_pdf(
    path: Path,
    pages: tuple[str, ...] = ("bone", "heart"),
    *,
    title: str = "Notes on Anatomy",
    extra: str | None = None,
) -> Path:
    """A small textbook-like PDF: one page per topic with a heading, paragraphs and a figure caption.

    ``extra`` appends a paragraph to the first page, so the same file name can get new content.
    """
    import pymupdf

    topics = {
        "bone": (BONE_TITLE, BONE_PARAGRAPHS, BONE_CAPTION),
        "heart": (HEART_TITLE, HEART_PARAGRAPHS, HEART_CAPTION),
        "marrow": (MARROW_TITLE, MARROW_PARAGRAPHS, None),
    }
    doc = pymupdf.open()
    for i, name in enumerate(pages):
        heading, paragraphs, caption = topics[name]
        if i == 0 and extra:
            paragraphs = [*paragraphs, extra]
        _write_page(doc, heading, paragraphs, caption)
    doc.set_metadata({"title": title})
    doc.save(path)
    doc.close()
    return path


@pytest.fixture
def medical_pdf(tmp_path: Path) -> Path:
    """A two-page PDF (bone tissue, the heart), each page with a heading and a figure caption."""
    return write_medical_pdf(tmp_path / "anatomy.pdf")


@pytest.fixture
def hashing_embedder():
    from medrag.testing.fakes import HashingEmbedder

    return HashingEmbedder(dim=256)


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path: equal digests mean byte-for-byte equal."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def build_text_index(name: str, pdfs, embedder, *, max_words: int = 120):
    """An in-memory TextIndex of PDFs (no thumbnails, nothing written), as ingest would build it."""
    from medrag.index.text_index import SourceRecord, TextIndex
    from medrag.ingest import chunk_document, read_pdf
    from medrag.ingest.pipeline import add_chunks

    index = TextIndex(name, embedder.info())
    for pdf in pdfs:
        doc = read_pdf(pdf)
        chunks = chunk_document(doc, max_words=max_words)
        record = SourceRecord(doc.source, doc.doc_id, doc.content_hash, doc.title, doc.kind, len(doc.pages))
        add_chunks(index, record, chunks, embedder)
    return index


@pytest.fixture
def anatomy_index(tmp_path: Path, hashing_embedder):
    """A TextIndex over a three-page anatomy PDF (bone, heart, marrow) built with HashingEmbedder(256)."""
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf", ("bone", "heart", "marrow"))
    return build_text_index("anatomy", [pdf], hashing_embedder)


SETTINGS_ENV = (
    "MEDRAG_HOME", "MEDRAG_CONFIG", "MEDRAG_EMBEDDER", "MEDRAG_DEVICE",
    "MEDRAG_PROGRESS", "MEDRAG_TOP_K", "MEDRAG_ABSTAIN_BELOW",
)


@pytest.fixture
def clean_env(monkeypatch):
    """No MEDRAG_* settings from the developer's shell leak into a test."""
    for var in SETTINGS_ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


class CountingEmbedder:
    """Wraps an embedder and counts the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.texts_embedded = 0
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_texts(self, texts):
        self.calls += 1
        self.texts_embedded += len(texts)
        return self.inner.embed_texts(texts)

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def info(self):
        return self.inner.info()


@pytest.fixture
def home(tmp_path: Path, clean_env) -> Path:
    """A fresh MEDRAG_HOME for one test."""
    import medrag.cli

    home = tmp_path / "home"
    clean_env.setenv("MEDRAG_HOME", str(home))
    # Silencing transformers' loggers imports transformers (~1 s); CLI tests load no model.
    clean_env.setattr(medrag.cli, "_quiet_libraries", lambda: None)
    return home


@pytest.fixture
def cli(capsys, home):
    """Run `medrag ARGS...` in-process: returns (exit code, stdout, stderr)."""
    from medrag.cli import main

    def run(*args) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With MEDRAG_FAIL_ON_SKIP set (the extras environment in CI), a skipped test is a failure:
    there every optional dependency must be present, so a skip means the environment is broken."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("MEDRAG_FAIL_ON_SKIP") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but MEDRAG_FAIL_ON_SKIP is set: {report.longrepr}"
