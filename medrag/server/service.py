"""What the HTTP server does, without HTTP: agents per index, uploads, assets, threads.

``MedragService`` is what the FastAPI app (medrag.server.app), the MCP server and
the LangChain tools call. It keeps one agent per index (built on first use and
shared by every request; each question still starts from fresh state), runs
questions with a bound on concurrency and a timeout, checks uploaded images,
and turns the file paths in answers (page thumbnails, figures, overlays) into
opaque asset ids, so clients never name a file on the server.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrag.config import Settings, load_settings
from medrag.tools import describe_tool, load_builtin_tools
from medrag.errors import (
    AgentError,
    ConfigError,
    EmptyQueryError,
    GraphNotFound,
    IndexCorrupt,
    IndexMismatch,
    IndexNotFound,
    InputError,
    MedragError,
    MissingExtra,
    ModelUnavailable,
    ToolError,
)

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
IMAGE_SUFFIXES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif"}
# Keys in citation locators, chunk metadata and tool outputs that name an image file worth showing.
ASSET_KEYS = {
    "thumbnail": "thumbnail",
    "page_image": "thumbnail",
    "figure_image": "figure",
    "image_path": "figure",
    "figure_path": "figure",
    "case_image": "case",
    "image": "case",  # image-index hits: the similar case's picture
    "overlay": "overlay",
    "crop": "crop",
}
_THREAD_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ASSET_ID = re.compile(r"^[a-f0-9]{24}$")


class ApiError(MedragError):
    """An error of the HTTP layer itself (upload too large, missing token, timeout ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


# Most specific first: the first class an error is an instance of decides status and code.
ERROR_STATUS: list[tuple[type[BaseException], int, str]] = [
    (EmptyQueryError, 400, "empty_question"),
    (IndexNotFound, 404, "index_not_found"),
    (GraphNotFound, 404, "graph_not_found"),
    (IndexMismatch, 409, "index_mismatch"),
    (IndexCorrupt, 500, "index_corrupt"),
    (MissingExtra, 503, "missing_extra"),
    (ModelUnavailable, 503, "model_unavailable"),
    (ConfigError, 400, "invalid_config"),
    (InputError, 400, "invalid_input"),
    (ToolError, 500, "tool_error"),
    (AgentError, 500, "agent_error"),
    (MedragError, 500, "medrag_error"),
]


def error_status(exc: BaseException) -> tuple[int, str, str]:
    """(HTTP status, code, message) for an exception; unknown exceptions are internal errors."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code, str(exc)
    for cls, status, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, code, str(exc)
    return 500, "internal_error", "internal server error (see the server log)"


@dataclass
class ServerConfig:
    """How the server runs. The token is never logged or returned (see ``__repr__``)."""

    index: str | None = None  # default index when a request names none
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = field(default=None, repr=False)
    llm: str | None = None
    graph: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024  # per file
    max_files: int = 4
    max_pixels: int = 40_000_000
    timeout_s: float = 120.0  # per question
    max_concurrent: int = 2  # questions running at once; more wait (up to the timeout)
    max_threads: int = 1000  # conversations kept in memory
    max_assets: int = 20_000

    def check(self) -> None:
        if self.host not in LOOPBACK_HOSTS and not self.token:
            raise ConfigError(
                f"binding to {self.host} exposes the server to the network: set a bearer token "
                "(MEDRAG_SERVER_TOKEN or --token-file), or bind to 127.0.0.1"
            )
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("the server token must be at least 16 characters long")
        for name in ("max_upload_bytes", "max_files", "max_pixels", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s must be positive")


class AssetStore:
    """Image files the server may send, each under an opaque id (sha256 of its real path).

    Only files that the server itself found in answers, indexes, tool outputs or
    uploads are registered; a request can only name an id, never a path.
    """

    def __init__(self, max_items: int = 20_000) -> None:
        self._items: OrderedDict[str, tuple[Path, str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items

    def register(self, path: str | Path | None, kind: str) -> str | None:
        if not path or not isinstance(path, (str, Path)):
            return None
        try:
            real = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        media = IMAGE_SUFFIXES.get(real.suffix.lower())
        if media is None or not real.is_file():
            return None
        asset_id = hashlib.sha256(str(real).encode()).hexdigest()[:24]
        with self._lock:
            self._items[asset_id] = (real, media, kind)
            self._items.move_to_end(asset_id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return asset_id

    def get(self, asset_id: str) -> tuple[Path, str, str]:
        if not _ASSET_ID.match(asset_id or ""):
            raise ApiError(404, "asset_not_found", "no such asset")
        with self._lock:
            item = self._items.get(asset_id)
        if item is None or not item[0].is_file():
            raise ApiError(404, "asset_not_found", "no such asset (assets are known from answers of this server run)")
        return item


@dataclass
class Upload:
    name: str
    path: Path  # the file as uploaded, what the agent's tools load
    display_path: Path  # a PNG rendering (DICOM windowed), what a browser shows
    asset_id: str | None
    modality: str
    width: int
    height: int
    stated: dict[str, str] = field(default_factory=dict)  # modality / body_part the user gave

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "asset": self.asset_id, "modality": self.modality, "size": [self.width, self.height]}

    def agent_input(self) -> str | dict[str, str]:
        """What the agent gets: the path, or {"path", "modality", "body_part"} when the user stated them."""
        return {"path": str(self.path), **self.stated} if self.stated else str(self.path)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a uniquely named temp file and rename: two requests with one image never clash."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def sniff_image(data: bytes, content_type: str | None, filename: str) -> str:
    """The kind of an uploaded image from its bytes: png, jpeg or dicom; ApiError 415 otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[128:132] == b"DICM":
        return "dicom"
    if (content_type or "").lower() == "application/dicom" or filename.lower().endswith((".dcm", ".dicom")):
        return "dicom"  # DICOM without the preamble: pydicom decides
    raise ApiError(415, "unsupported_media_type", f"{filename or 'upload'}: images must be PNG, JPEG or DICOM")


def load_tools():
    """The tool registry with every built-in tool module imported (a module missing an extra is logged and skipped)."""
    return load_builtin_tools()


def jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


class MedragService:
    """Agents, indexes, uploads, assets and conversation threads behind the server."""

    def __init__(self, config: ServerConfig | None = None, settings: Settings | None = None) -> None:
        self.config = config or ServerConfig()
        self.settings = settings or load_settings()
        self.assets = AssetStore(self.config.max_assets)
        self._agents: dict[str, tuple[float, Any]] = {}
        self._embedders: dict[str, Any] = {}
        self._retrievers: dict[str, tuple[float, Any]] = {}
        self._page_sizes: dict[tuple[str, int], list[float] | None] = {}
        self._threads: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.RLock()
        self._build_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.config.max_concurrent)
        self.started = time.time()

    # -- indexes, tools --------------------------------------------------------
    @property
    def store(self):
        from medrag.index.text_index import IndexStore

        return IndexStore(self.settings.indexes_dir)

    def indexes(self) -> list[dict[str, Any]]:
        out = []
        for m in self.store.iter_manifests():
            out.append({
                "name": m["name"],
                "sources": m.get("counts", {}).get("sources", 0),
                "chunks": m.get("counts", {}).get("chunks", 0),
                "embedder": m.get("embedder", {}).get("name"),
                "updated": m.get("updated"),
                "default": m["name"] == self.config.index,
            })
        return out

    def tools(self) -> list[dict[str, Any]]:
        registry = load_tools()
        return [jsonable(describe_tool(registry.get(name)) | {"name": name}) for name in registry.names()]

    def index_name(self, name: str | None) -> str:
        name = name or self.config.index
        if not name:
            raise InputError("no index named: pass \"index\" in the request or start the server with --index NAME")
        from medrag.index.text_index import validate_index_name

        return validate_index_name(name)

    def _manifest_mtime(self, name: str) -> float:
        try:
            return (self.store.path(name) / "manifest.json").stat().st_mtime
        except OSError:
            return 0.0

    def embedder(self, name: str):
        spec = self.store.info(name)["embedder"]["name"]  # raises IndexNotFound for unknown names
        with self._lock:
            if spec not in self._embedders:
                from medrag.embed.text import make_embedder

                self._embedders[spec] = make_embedder(spec, device=self.settings.device)
            return self._embedders[spec]

    def _cached(self, cache: dict[str, tuple[float, Any]], name: str, build) -> Any:
        """``build()`` once per index version; concurrent first requests wait for one build, not start fifty."""
        mtime = self._manifest_mtime(name)
        with self._lock:
            cached = cache.get(name)
            if cached is not None and cached[0] == mtime:
                return cached[1]
        with self._build_lock:
            with self._lock:
                cached = cache.get(name)
                if cached is not None and cached[0] == mtime:
                    return cached[1]
            value = build()
            with self._lock:
                cache[name] = (mtime, value)
            return value

    def agent(self, index: str | None):
        """The agent of an index, built once (rebuilt when the index was saved again)."""
        name = self.index_name(index)

        def build():
            from medrag.agent.graph import Agent

            load_tools()  # registers the built-in tools an agent config may name
            return Agent.from_index(name, settings=self.settings, embedder=self.embedder(name), llm=self.config.llm, graph=self.config.graph)

        return self._cached(self._agents, name, build)

    def retriever(self, name: str):
        """The hybrid retriever of an index (for the search endpoint and citation details)."""
        name = self.index_name(name)

        def build():
            from medrag.index.hybrid import HybridRetriever

            embedder = self.embedder(name)
            return HybridRetriever(self.store.open(name, embedder.info()), embedder, self.settings.retrieval)

        return self._cached(self._retrievers, name, build)

    def search(self, index: str, query: str, *, k: int = 5, mode: str = "hybrid", where: dict | None = None) -> dict[str, Any]:
        from medrag.index.hybrid import check_query

        query = check_query(query)
        if not 1 <= int(k) <= 100:
            raise InputError(f"k must be between 1 and 100, not {k}")
        name = self.index_name(index)
        retriever = self.retriever(name)
        with self._slot():
            evidence = retriever.search(query, k=int(k), where=where or None, mode=mode)
        hits = []
        for n, ev in enumerate(evidence, start=1):
            item = ev.to_dict()
            item["n"] = n
            item["assets"] = self._citation_assets(name, item["citation"])
            hits.append(item)
        return {"index": name, "query": query, "mode": mode, "hits": hits}

    # -- uploads -----------------------------------------------------------------
    @property
    def uploads_dir(self) -> Path:
        return self.settings.home / "uploads"

    def save_upload(self, data: bytes, filename: str, content_type: str | None, *,
                    modality: str | None = None, body_part: str | None = None) -> Upload:
        """Check an uploaded image (type, size, pixels) and keep it under an id from its content.

        ``modality``/``body_part``: what the user says the image is (wins over detection).
        """
        from medrag.vision.image import MODALITIES, load_image

        if modality is not None and modality not in MODALITIES:
            raise ApiError(400, "invalid_input", f"modality must be one of {', '.join(MODALITIES)}, not {modality!r}")
        if body_part is not None and not re.match(r"^[A-Za-z _-]{1,40}$", body_part):
            raise ApiError(400, "invalid_input", "body_part must be a word such as chest, head or abdomen")

        name = Path(filename or "image").name[:100] or "image"
        if len(data) > self.config.max_upload_bytes:
            raise ApiError(413, "upload_too_large", f"{name}: {len(data)} bytes exceeds the limit of {self.config.max_upload_bytes} bytes per image")
        if not data:
            raise ApiError(400, "invalid_input", f"{name}: the file is empty")
        kind = sniff_image(data, content_type, name)
        try:
            img = load_image(data, max_pixels=self.config.max_pixels, modality=modality, body_part=body_part)
        except InputError as exc:
            message = str(exc).replace(f"bytes:{hashlib.sha1(data).hexdigest()[:12]}", name)
            if "exceeds the cap" in message or "decompression bomb" in message:
                raise ApiError(413, "too_many_pixels", message) from None
            raise ApiError(400, "invalid_image", message) from None
        # One folder per content hash; the file keeps a cleaned version of the user's name (tools cite it).
        folder = self.uploads_dir / hashlib.sha256(data).hexdigest()[:20]
        folder.mkdir(parents=True, exist_ok=True)
        suffix = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}[kind]
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem).strip("_")[:60] or "image"
        path = folder / f"{stem}{suffix}"
        if not path.exists():
            _write_atomic(path, data)
        display = folder / "_display.png"  # a stem never starts with "_"
        if not display.exists():
            buf = io.BytesIO()
            img.display.save(buf, format="PNG")
            _write_atomic(display, buf.getvalue())
        stated = {k: v for k, v in (("modality", modality), ("body_part", body_part)) if v}
        return Upload(name, path, display, self.assets.register(display, "upload"), img.modality, img.width, img.height, stated)

    # -- asking -------------------------------------------------------------------
    @contextmanager
    def _slot(self) -> Iterator[None]:
        """One of ``max_concurrent`` places to run a question; waits up to the timeout, then 503 busy."""
        if not self._slots.acquire(timeout=self.config.timeout_s):
            raise ApiError(503, "busy", "the server is busy answering other questions; try again shortly")
        try:
            yield
        finally:
            self._slots.release()

    @staticmethod
    def _kwargs(fn, *, images, thread_id, max_rounds, where) -> dict[str, Any]:
        """Keywords for agent.ask/stream: the optional ones only when given."""
        kwargs: dict[str, Any] = {}
        if where:
            kwargs["where"] = where
        if images:
            kwargs["images"] = list(images)
        if thread_id:
            kwargs["thread_id"] = thread_id
        if max_rounds is not None:
            kwargs["max_rounds"] = int(max_rounds)
        return kwargs

    @staticmethod
    def check_thread_id(thread_id: str | None) -> str | None:
        if thread_id is None or thread_id == "":
            return None
        if not isinstance(thread_id, str) or not _THREAD_ID.match(thread_id):
            raise InputError("thread_id must be 1-64 letters, digits, '.', ':', '_' or '-'")
        return thread_id

    def ask(self, question: str, *, index: str | None = None, uploads: list[Upload] | None = None,
            thread_id: str | None = None, max_rounds: int | None = None, where: dict | None = None) -> dict[str, Any]:
        """Answer a question; the answer JSON of `medrag ask --json` plus thread, uploads and asset ids."""
        from medrag.index.hybrid import check_query

        question = check_query(question)
        thread_id = self.check_thread_id(thread_id)
        name = self.index_name(index)
        agent = self.agent(name)
        kwargs = self._kwargs(agent.ask, images=[u.agent_input() for u in uploads or []], thread_id=thread_id, max_rounds=max_rounds, where=where)
        started = time.perf_counter()
        with self._slot():
            answer = agent.ask(question, **kwargs)
        return self.finish(answer, name, uploads or [], thread_id, time.perf_counter() - started)

    def stream(self, question: str, *, index: str | None = None, uploads: list[Upload] | None = None,
               thread_id: str | None = None, max_rounds: int | None = None, where: dict | None = None,
               cancelled: threading.Event | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ("step", step dict) for each agent step as it finishes, then ("answer", answer dict)."""
        from medrag.index.hybrid import check_query
        from medrag.types import Answer

        question = check_query(question)
        thread_id = self.check_thread_id(thread_id)
        name = self.index_name(index)
        agent = self.agent(name)
        kwargs = self._kwargs(agent.stream, images=[u.agent_input() for u in uploads or []], thread_id=thread_id, max_rounds=max_rounds, where=where)
        started = time.perf_counter()
        with self._slot():
            events = agent.stream(question, **kwargs)
            try:
                for event in events:
                    if isinstance(event, Answer):
                        yield "answer", self.finish(event, name, uploads or [], thread_id, time.perf_counter() - started)
                    else:
                        yield "step", self._step_dict(event)
                    if cancelled is not None and cancelled.is_set():
                        return
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()

    def _step_dict(self, step) -> dict[str, Any]:
        data = jsonable(step.to_dict() if hasattr(step, "to_dict") else dict(step))
        assets = self._collect_assets(data)
        if assets:
            data["assets"] = assets
        return data

    def finish(self, answer, index: str, uploads: list[Upload], thread_id: str | None, seconds: float) -> dict[str, Any]:
        data = jsonable(answer.to_dict())
        for citation in data.get("citations", []):
            citation["assets"] = self._citation_assets(index, citation)
            passage = self._chunk(index, citation.get("chunk_id")).get("passage")
            if passage:
                citation["passage"] = passage
            size = self._page_size(index, citation)
            if size:
                citation["page_size"] = size
        overlays = []
        seen = set()
        for step in data.get("trace", []):
            for item in self._collect_assets(step):
                if item["kind"] in ("overlay", "crop") and item["id"] not in seen:
                    seen.add(item["id"])
                    overlays.append(item)
        for citation in data.get("citations", []):
            for kind in ("overlay", "crop"):
                aid = citation["assets"].get(kind)
                if aid and aid not in seen:
                    seen.add(aid)
                    overlays.append({"id": aid, "kind": kind})
        data["index"] = index
        data["thread_id"] = thread_id
        data["uploads"] = [u.to_dict() for u in uploads]
        data["overlays"] = overlays
        data["seconds"] = round(seconds, 3)
        if thread_id:
            self._remember(thread_id, index, data)
        return data

    # -- assets --------------------------------------------------------------------
    def _chunk(self, index: str, chunk_id: str | None) -> dict[str, Any]:
        """Text, metadata and source path of a cited chunk (from the index the search endpoint also uses)."""
        if not chunk_id:
            return {}
        try:
            text_index = self.retriever(index).index
        except MedragError as exc:
            log.warning("cannot open index %s for citation details: %s", index, exc)
            return {}
        chunk = text_index.chunks.get(chunk_id)
        if chunk is None:
            return {}
        record = text_index.sources.get(chunk.doc_id)
        return {"passage": chunk.text, "metadata": dict(chunk.metadata), "path": record.path if record else ""}

    def _citation_assets(self, index: str, citation: dict[str, Any]) -> dict[str, str]:
        found: dict[str, str] = {}
        sources = [citation.get("locator") or {}, self._chunk(index, citation.get("chunk_id")).get("metadata", {})]
        for source in sources:
            for key, kind in ASSET_KEYS.items():
                if kind not in found and isinstance(source.get(key), str):
                    aid = self.assets.register(source[key], kind)
                    if aid:
                        found[kind] = aid
        return found

    def _collect_assets(self, value: Any, depth: int = 0) -> list[dict[str, str]]:
        """Image files named under asset keys anywhere in a step or tool output."""
        out: list[dict[str, str]] = []
        if depth > 6:
            return out
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ASSET_KEYS and key != "image" and isinstance(item, str):  # "image" in a step is the user's input
                    aid = self.assets.register(item, ASSET_KEYS[key])
                    if aid:
                        out.append({"id": aid, "kind": ASSET_KEYS[key]})
                else:
                    out.extend(self._collect_assets(item, depth + 1))
        elif isinstance(value, list):
            for item in value[:200]:
                out.extend(self._collect_assets(item, depth + 1))
        return out

    def _page_size(self, index: str, citation: dict[str, Any]) -> list[float] | None:
        """Width and height of the cited page in PDF points, so a client can place the bbox on a thumbnail."""
        page, chunk_id = citation.get("page"), citation.get("chunk_id")
        if not page or not chunk_id or not citation.get("bbox"):
            return None
        chunk = self._chunk(index, chunk_id)
        md = chunk.get("metadata", {})
        if md.get("page_width") and md.get("page_height"):
            return [float(md["page_width"]), float(md["page_height"])]
        path = chunk.get("path") or ""
        if not path or not path.lower().endswith(".pdf"):
            return None
        key = (path, int(page))
        if key not in self._page_sizes:
            size = None
            try:
                import pymupdf

                with pymupdf.open(path) as doc:
                    rect = doc[int(page) - 1].rect
                    size = [float(rect.width), float(rect.height)]
            except Exception as exc:  # the source PDF moved or is unreadable: no highlight, still the card
                log.info("no page size for %s p.%s: %s", path, page, exc)
            self._page_sizes[key] = size
        return self._page_sizes[key]

    # -- threads -------------------------------------------------------------------
    def _remember(self, thread_id: str, index: str, answer: dict[str, Any]) -> None:
        turn = {
            "question": answer.get("question"),
            "answer": answer.get("answer"),
            "abstained": answer.get("abstained"),
            "confidence": answer.get("confidence"),
            "index": index,
            "citations": [
                {"n": c["n"], "source": c.get("source"), "chunk_id": c.get("chunk_id"), "page": c.get("page")}
                for c in answer.get("citations", [])
            ],
        }
        with self._lock:
            self._threads.setdefault(thread_id, []).append(turn)
            self._threads.move_to_end(thread_id)
            while len(self._threads) > self.config.max_threads:
                self._threads.popitem(last=False)

    def thread(self, thread_id: str) -> list[dict[str, Any]]:
        thread_id = self.check_thread_id(thread_id)
        with self._lock:
            turns = self._threads.get(thread_id or "")
            if turns is None:
                raise ApiError(404, "thread_not_found", f"no conversation '{thread_id}' on this server")
            return [dict(t) for t in turns]
