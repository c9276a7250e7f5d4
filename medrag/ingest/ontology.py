"""Ontologies as text sources: one chunk per term (name, definition, synonyms).

Citations point at the ontology file, its version and the term id, e.g.
``hp.obo (hp/releases/2025-01-16) HP:0001662``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from medrag.config import Settings
from medrag.kg.obo import read_obo
from medrag.registry import sources
from medrag.types import Chunk, Document


def read_ontology(path: str | Path, *, roots: Iterable[str] | None = None, require_definition: bool = False) -> Document:
    """Read an OBO file into a Document whose ``metadata['terms']`` lists the live terms.

    ``roots`` keeps only terms under these ids (is-a descendants, roots included).
    """
    path = Path(path)
    roots = list(roots or [])  # read twice below: a generator would be empty the second time
    ontology = read_obo(path)
    keep: set[str] | None = None
    if roots:
        keep = set()
        for root in roots:
            keep |= ontology.descendants(root)
    terms = []
    for term in ontology.live_terms():
        if keep is not None and term.id not in keep:
            continue
        if require_definition and not term.definition:
            continue
        terms.append(
            {
                "id": term.id,
                "name": term.name,
                "definition": term.definition,
                "synonyms": [s for s, _ in term.synonyms],
                "xrefs": term.xrefs,
            }
        )
    content_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    subset = ",".join(sorted(roots)) if roots else ""
    doc_hash = hashlib.sha256(f"{content_hash}|{subset}|{require_definition}".encode()).hexdigest()
    return Document(
        doc_id=doc_hash[:16],
        source=path.name,
        title=ontology.header.get("title") or ontology.header.get("ontology", path.stem),
        kind="ontology",
        content_hash=doc_hash if roots or require_definition else content_hash,
        metadata={"path": str(path.resolve()), "version": ontology.version, "terms": terms, "roots": sorted(roots or [])},
    )


def term_text(term: dict) -> str:
    text = f"{term['name']}: {term['definition']}" if term["definition"] else f"{term['name']}."
    synonyms = [s for s in term["synonyms"] if s.lower() != term["name"].lower()]
    if synonyms:
        text += " Also called: " + "; ".join(synonyms[:8]) + "."
    return text


def chunk_ontology(doc: Document) -> list[Chunk]:
    version = doc.metadata.get("version", "")
    return [
        Chunk(
            chunk_id=f"{doc.doc_id}:{term['id']}",
            doc_id=doc.doc_id,
            text=term_text(term),
            source=doc.source,
            title=doc.title,
            page=None,
            bbox=None,
            metadata={"kind": "term", "node_id": term["id"], "section": term["name"], "version": version},
        )
        for term in doc.metadata["terms"]
    ]


@sources.register(".obo")
def _read_obo_source(path: Path, settings: Settings, **_options) -> Document:
    return read_ontology(path)
