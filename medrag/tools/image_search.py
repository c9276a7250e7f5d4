"""Similar-case and text-to-image search over an image index, with modality routing, as an agent tool.

``ImageSearcher`` embeds a query image (or text) with the embedder that built the index and
searches it. Image queries are routed to the images of their own modality (domain-aware
retrieval, as in MMed-RAG): the modality comes from the caller, the DICOM tag, a trained
``ModalityClassifier`` (when given and confident), or the built-in heuristic guess; when the
index holds no image of that modality the whole index is searched and the result says so.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image

from medrag.errors import InputError, ToolError
from medrag.index.image_index import ImageHit, ImageIndex, ImageIndexStore
from medrag.registry import tools
from medrag.tools.base import BaseTool
from medrag.types import ToolResult

ROUTE_MIN_CONFIDENCE = 0.6


class ImageSearcher:
    """Image -> image and text -> image search over one ImageIndex."""

    def __init__(self, index: ImageIndex, embedder, classifier=None) -> None:
        if not hasattr(embedder, "embed_images"):
            raise InputError(f"'{getattr(embedder, 'name', embedder)}' cannot embed images; open the index with its image-text embedder")
        index.check_embedder(embedder.info())
        self.index = index
        self.embedder = embedder
        self.classifier = classifier

    @classmethod
    def open(cls, name: str, settings, *, embedder_spec: str | None = None, classifier_dir: str | Path | None = None) -> "ImageSearcher":
        """Open a named image index with the embedder its manifest names (or ``embedder_spec``)
        and the modality classifier in ``classifier_dir`` (default: ``$MEDRAG_HOME/models/modality`` if present)."""
        from medrag.embed.image_text import make_image_embedder
        from medrag.vision.modality import ModalityClassifier

        store = ImageIndexStore.for_settings(settings)
        spec = embedder_spec or store.info(name)["embedder"]["name"]
        embedder = make_image_embedder(spec, device=getattr(settings, "device", "auto"))
        default = Path(settings.home) / "models" / "modality"
        folder = Path(classifier_dir) if classifier_dir else (default if (default / "config.json").is_file() else None)
        return cls(store.open(name, embedder.info()), embedder, ModalityClassifier(folder, embedder=embedder) if folder else None)

    # -- routing -------------------------------------------------------------
    def route(self, image, modality: str | None = "auto") -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(filter, how it was decided) for a loaded MedicalImage."""
        held = self.index.modalities
        if modality in (None, "any", "all"):
            return None, {"modality": None, "by": "none", "note": "all modalities searched"}
        if modality != "auto":
            return {"modality": modality}, {"modality": modality, "by": "argument"}
        source = image.metadata.get("modality_source", "")
        if source in ("dicom", "argument") and image.modality != "unknown":
            chosen, by, confidence = image.modality, source, None
        elif self.classifier is not None and not (image.modality == "photo" and "photo" not in self.classifier.modalities):
            prediction = self.classifier.predict(image)
            chosen, by, confidence = prediction.modality, "classifier", prediction.confidence
            if confidence < ROUTE_MIN_CONFIDENCE:
                return None, {"modality": chosen, "by": by, "confidence": confidence,
                              "note": f"classifier unsure ({confidence:.2f}): all modalities searched"}
        else:
            chosen, by, confidence = image.modality, "heuristic", None
        info = {"modality": chosen, "by": by}
        if confidence is not None:
            info["confidence"] = confidence
        if chosen not in held or chosen == "unknown":
            info["note"] = f"the index holds no '{chosen}' images ({', '.join(f'{m} {n}' for m, n in held.items())}): all searched"
            return None, info
        return {"modality": chosen}, info

    # -- search --------------------------------------------------------------
    def search_image(self, image, k: int = 5, *, modality: str | None = "auto", where: dict[str, Any] | None = None,
                     exclude_same_file: bool = True) -> tuple[list[ImageHit], dict[str, Any]]:
        """Most similar indexed images to ``image`` (path, bytes, MedicalImage or PIL image)."""
        from medrag.vision.image import MedicalImage, load_image

        if isinstance(image, MedicalImage):
            loaded = image
        elif isinstance(image, Image.Image):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            loaded = load_image(buffer.getvalue())
        else:
            loaded = load_image(image)
        route_filter, route = self.route(loaded, modality)
        combined = {**(where or {}), **(route_filter or {})}
        exclude: list[str] = []
        if exclude_same_file and not loaded.source.startswith("bytes:") and Path(loaded.source).is_file():
            digest = hashlib.sha256(Path(loaded.source).read_bytes()).hexdigest()
            exclude = [i for i, r in self.index.records.items() if r.content_hash == digest]
        vector = self.embedder.embed_images([loaded.display])
        hits = self.index.search_by_image(vector, k, where=combined or None, exclude=exclude)
        return hits, {"route": route, "excluded": exclude, "query_modality": loaded.modality}

    def search_text(self, query: str, k: int = 5, *, where: dict[str, Any] | None = None) -> list[ImageHit]:
        if not query or not query.strip():
            raise InputError("the text query is empty")
        return self.index.search_by_text(self.embedder.embed_queries([query]), k, where=where)


@tools.register("search_images")
class ImageSearchTool(BaseTool):
    """The agent's "find similar cases" and "show images of ..." tool."""

    name = "search_images"
    description = (
        "Find indexed images (prior cases, figures) similar to a query image, or matching a text description. "
        "An image query is routed to cases of its own modality (CT, MR, X-ray ...). Returns cited cases: case id, "
        "image file, caption, diagnosis and similarity. Similar-looking cases are hints, not a diagnosis."
    )
    inputs = {
        "image": {"type": "string", "description": "path to a PNG/JPEG/DICOM query image (or a loaded MedicalImage)"},
        "query": {"type": "string", "description": "a text description to find images for (instead of an image)"},
        "k": {"type": "integer", "description": "how many images (default 5)"},
        "modality": {"type": "string", "description": "route to this modality (ct, mr, xray, photo), 'auto' (default) or 'any'"},
        "where": {"type": "object", "description": "metadata filter, e.g. {\"case_id\": \"MPX1009\"} or {\"plane\": \"Axial\"}"},
    }

    def __init__(self, searcher: ImageSearcher | None = None, *, index: str | None = None, settings=None,
                 classifier_dir: str | Path | None = None) -> None:
        """Either a ready ``searcher``, or an index name opened lazily in ``setup()`` (the registry path:
        ``tools.create("search_images", index=NAME, settings=...)``); an unknown name fails here, at once."""
        super().__init__()
        if searcher is None and not index:
            raise ToolError(f"{self.name} needs an image index: pass index=NAME (made by medrag ingest IMAGE_FOLDER)")
        self.searcher = searcher
        self.index_name = searcher.index.name if searcher is not None else index
        self.settings = settings
        self.classifier_dir = classifier_dir
        if searcher is not None:
            held = searcher.index.modalities
        else:
            if self.settings is None:
                from medrag.config import load_settings

                self.settings = load_settings()
            held = ImageIndexStore.for_settings(self.settings).info(index).get("modalities", {})
        served = frozenset(m for m in held if m != "unknown")
        # An index of unlabelled images serves any image; otherwise the modalities it holds, and images
        # whose modality intake could not tell (the tool routes those itself, with its classifier).
        self.modalities = (served | {"unknown"}) if served else frozenset({"xray", "ct", "mr", "photo", "unknown"})

    def setup(self) -> None:
        if self.searcher is None:
            self.searcher = ImageSearcher.open(self.index_name, self.settings, classifier_dir=self.classifier_dir)
        self._ready = True

    def run(self, image=None, query: str | None = None, k: int | None = None, modality: str | None = "auto",
            where: dict[str, Any] | None = None) -> ToolResult:
        if (image is None) == (query is None):
            raise ToolError(f"{self.name}: give either an image or a text query")
        k = int(k or 5)
        if image is not None:
            hits, details = self.searcher.search_image(image, k, modality=modality or "auto", where=where)
            output = {"query": "image", **details}
        else:
            hits = self.searcher.search_text(query, k, where=where)
            output = {"query": query}
        evidence = [hit.evidence(self.searcher.index.name) for hit in hits]
        output.update({"hits": len(evidence), "index": self.searcher.index.name,
                       "cases": [h.record.case_id for h in hits if h.record.case_id],
                       "images": [h.record.path for h in hits],
                       "diagnoses": [h.record.diagnosis for h in hits if h.record.diagnosis]})
        return ToolResult(tool=self.name, ok=True, evidence=evidence, output=output)
