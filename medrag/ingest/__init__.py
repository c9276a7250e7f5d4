"""Turn source files into Documents and Documents into Chunks."""

from medrag.ingest.chunking import chunk_document, split_sentences
from medrag.ingest.pdf import read_pdf

__all__ = ["chunk_document", "read_pdf", "split_sentences"]
