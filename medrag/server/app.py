"""The HTTP API and web page of `medrag serve` (FastAPI; install with pip install "medrag[server]").

Endpoints (all errors are JSON ``{"error": {"code", "message"}}``):

- ``GET  /v1/health``                       liveness, version, whether a token is needed
- ``POST /v1/ask``                          JSON ``{"question", "index"?, "thread_id"?, "max_rounds"?, "where"?}``
                                            or multipart with the same fields and ``images`` files (PNG/JPEG/DICOM)
- ``POST /v1/ask/stream``                   the same, answered as server-sent events: ``step`` ... ``answer``
- ``GET  /v1/indexes``                      the indexes on this server
- ``POST /v1/indexes/{name}/search``        ``{"query", "k"?, "mode"?, "where"?}`` -> cited passages
- ``GET  /v1/tools``                        the registered agent tools
- ``GET  /v1/threads/{thread_id}``          a conversation's turns
- ``GET  /v1/assets/{asset_id}``            a page thumbnail, figure, overlay or upload named in an answer
- ``GET  /``                                the web page; ``/docs`` and ``/openapi.json`` the API docs
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from medrag.errors import MedragError, require

require("fastapi", extra="server", purpose="medrag serve")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from medrag import __version__  # noqa: E402
from medrag.server.service import ApiError, MedragService, ServerConfig, Upload, error_status  # noqa: E402

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SAFETY_NOTE = (
    "medrag answers from the indexed evidence only and is not a medical device: "
    "confirm every clinical finding with a qualified professional."
)
OPEN_PATHS = ("/v1/health",)  # reachable without a token (load balancers, the web page's first call)


class AskBody(BaseModel):
    question: str = Field(..., description="the question", examples=["What is compact bone?"])
    index: str | None = Field(None, description="index to search (default: the server's --index)")
    thread_id: str | None = Field(None, description="conversation id: follow-up questions in one thread share history")
    max_rounds: int | None = Field(None, ge=0, le=10, description="think-act-rethink rounds (agent default when absent)")
    where: dict[str, Any] | None = Field(None, description='metadata filter, e.g. {"source": "book.pdf"}')


class SearchBody(BaseModel):
    query: str = Field(..., examples=["haversian canal"])
    k: int = Field(5, ge=1, le=100)
    mode: str = Field("hybrid", description="hybrid, dense or bm25")
    where: dict[str, Any] | None = None


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


ASK_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": AskBody.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["question"],
                    "properties": {
                        "question": {"type": "string"},
                        "index": {"type": "string"},
                        "thread_id": {"type": "string"},
                        "max_rounds": {"type": "integer"},
                        "where": {"type": "string", "description": "JSON object"},
                        "modality": {"type": "string", "enum": ["xray", "ct", "mr", "photo", "unknown"],
                                     "description": "what the images are (default: read from DICOM tags or guessed)"},
                        "body_part": {"type": "string", "description": "e.g. chest"},
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                                   "description": "PNG, JPEG or DICOM files"},
                    },
                }
            },
        },
    }
}


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is refused while it is read (chunked uploads too)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, "upload_too_large", f"the request body exceeds {self.max_bytes} bytes")
            return message

        return await self.app(scope, limited, send)


def create_app(config: ServerConfig | None = None, service: MedragService | None = None) -> FastAPI:
    """The FastAPI app. ``config.check()`` refuses a non-loopback host without a token."""
    config = config or (service.config if service else ServerConfig())
    config.check()
    service = service or MedragService(config)
    app = FastAPI(
        title="medrag",
        version=__version__,
        description="A retrieval-augmented agent for medical questions that cites its evidence. " + SAFETY_NOTE,
    )
    app.state.service = service
    body_limit = config.max_files * config.max_upload_bytes + 1024 * 1024
    app.add_middleware(BodyLimit, max_bytes=body_limit)

    # -- errors ------------------------------------------------------------------
    @app.exception_handler(MedragError)
    async def _medrag_error(request: Request, exc: MedragError):
        status, code, message = error_status(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, message)
        return error_response(status, code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error (see the server log)")

    # -- auth ----------------------------------------------------------------------
    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if config.token and request.url.path.startswith("/v1/") and request.url.path not in OPEN_PATHS:
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), config.token.encode()):
                response = error_response(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer TOKEN)")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        return await call_next(request)

    # -- helpers -------------------------------------------------------------------
    async def read_ask(request: Request) -> tuple[dict[str, Any], list[Upload]]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                raw = await request.json()
            except ValueError:
                raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
            if not isinstance(raw, dict):
                raise ApiError(400, "invalid_json", "the request body must be a JSON object")
            from pydantic import ValidationError

            try:
                body = AskBody.model_validate(raw)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from None
            return body.model_dump(), []
        if ctype == "multipart/form-data":
            return await read_multipart(request)
        raise ApiError(415, "unsupported_media_type", "send application/json or multipart/form-data")

    async def read_multipart(request: Request) -> tuple[dict[str, Any], list[Upload]]:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > body_limit:
            raise ApiError(413, "upload_too_large", f"the request is {length} bytes; the limit is {body_limit} bytes")
        try:
            form = await request.form(max_files=config.max_files + 1, max_fields=20, max_part_size=1024 * 1024)
        except ApiError:
            raise
        except StarletteHTTPException as exc:
            raise ApiError(400, "invalid_multipart", str(exc.detail)) from None
        except Exception as exc:
            raise ApiError(400, "invalid_multipart", f"unreadable multipart body: {exc}") from None
        try:
            files = [f for f in form.getlist("images") if hasattr(f, "read")]
            stray = [k for k, v in form.multi_items() if hasattr(v, "read") and k != "images"]
            if stray:
                raise ApiError(400, "invalid_multipart", f"files go in the 'images' field, not {sorted(set(stray))}")
            if len(files) > config.max_files:
                raise ApiError(413, "too_many_files", f"{len(files)} images; at most {config.max_files} per question")
            fields: dict[str, Any] = {}
            for key in ("question", "index", "thread_id", "max_rounds", "where", "modality", "body_part"):
                value = form.get(key)
                if isinstance(value, str) and value.strip():
                    fields[key] = value
            if "where" in fields:
                try:
                    fields["where"] = json.loads(fields["where"])
                except ValueError:
                    raise ApiError(400, "invalid_input", "where must be a JSON object") from None
            if "max_rounds" in fields and not fields["max_rounds"].strip().isdigit():
                raise ApiError(400, "invalid_input", "max_rounds must be a whole number")
            from pydantic import ValidationError

            stated = {"modality": fields.pop("modality", None), "body_part": fields.pop("body_part", None)}
            try:
                body = AskBody.model_validate(fields | {"question": fields.get("question", "")})
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from None
            from medrag.index.hybrid import check_query

            check_query(body.question)  # before any upload is decoded or saved
            uploads = []
            for f in files:
                data = await f.read(config.max_upload_bytes + 1)
                uploads.append(await run_in_threadpool(service.save_upload, data, f.filename or "image", f.content_type, **stated))
            return body.model_dump(), uploads
        finally:
            await form.close()

    async def with_timeout(fn, *args, **kwargs):
        try:
            return await asyncio.wait_for(run_in_threadpool(fn, *args, **kwargs), timeout=config.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no answer within {config.timeout_s:g} s") from None

    # -- routes --------------------------------------------------------------------
    @app.get("/v1/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """Liveness: always 200 while the server runs (no token needed)."""
        return {
            "status": "ok",
            "version": __version__,
            "default_index": config.index,
            "auth": bool(config.token),
            "uptime_s": round(time.time() - service.started, 1),
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_files": config.max_files,
                       "max_pixels": config.max_pixels, "timeout_s": config.timeout_s},
            "safety_note": SAFETY_NOTE,
        }

    @app.post("/v1/ask", tags=["ask"], openapi_extra=ASK_OPENAPI)
    async def ask(request: Request) -> dict[str, Any]:
        """Answer a question from an index, citing every sentence (the JSON of `medrag ask --json`)."""
        body, uploads = await read_ask(request)
        return await with_timeout(service.ask, body["question"], index=body["index"], uploads=uploads,
                                  thread_id=body["thread_id"], max_rounds=body["max_rounds"], where=body["where"])

    @app.post("/v1/ask/stream", tags=["ask"], openapi_extra=ASK_OPENAPI, response_class=StreamingResponse,
              responses={200: {"content": {"text/event-stream": {}}, "description": "events: step (each agent step), answer, error"}})
    async def ask_stream(request: Request):
        """Server-sent events: one ``step`` event per agent step as it finishes, then ``answer`` (or ``error``)."""
        body, uploads = await read_ask(request)
        # Checked before the stream starts, so a bad request is a plain JSON error with its status.
        from medrag.index.hybrid import check_query

        check_query(body["question"])
        service.check_thread_id(body["thread_id"])
        await run_in_threadpool(service.agent, body["index"])  # unknown index -> 404 now, not mid-stream
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def produce() -> None:
            try:
                for kind, data in service.stream(body["question"], index=body["index"], uploads=uploads, thread_id=body["thread_id"],
                                                 max_rounds=body["max_rounds"], where=body["where"], cancelled=cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, (kind, data))
            except Exception as exc:  # noqa: BLE001 - reported to the client as an error event
                status, code, message = error_status(exc)
                if status >= 500:
                    log.error("stream failed: %s", exc, exc_info=not isinstance(exc, MedragError))
                loop.call_soon_threadsafe(queue.put_nowait, ("error", {"error": {"code": code, "message": message, "status": status}}))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        async def events():
            worker = loop.run_in_executor(None, produce)
            deadline = loop.time() + config.timeout_s
            try:
                yield ": medrag stream\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout=max(0.01, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        cancelled.set()
                        yield sse("error", {"error": {"code": "timeout", "message": f"no answer within {config.timeout_s:g} s", "status": 504}})
                        break
                    if item is None:
                        break
                    yield sse(*item)
                yield sse("done", {})
            finally:
                cancelled.set()
                del worker

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/indexes", tags=["indexes"])
    async def indexes() -> dict[str, Any]:
        """The indexes this server can search."""
        return {"indexes": await run_in_threadpool(service.indexes), "default": config.index}

    @app.post("/v1/indexes/{name}/search", tags=["indexes"])
    async def search(name: str, body: SearchBody) -> dict[str, Any]:
        """The passages retrieval finds for a query, with scores and citations (no answer composed)."""
        return await with_timeout(service.search, name, body.query, k=body.k, mode=body.mode, where=body.where)

    @app.get("/v1/tools", tags=["server"])
    async def tools() -> dict[str, Any]:
        """The registered agent tools: names, descriptions, modalities and inputs."""
        return {"tools": await run_in_threadpool(service.tools)}

    @app.get("/v1/threads/{thread_id}", tags=["ask"])
    async def thread(thread_id: str) -> dict[str, Any]:
        """A conversation's turns on this server (question, answer, citations)."""
        return {"thread_id": thread_id, "turns": service.thread(thread_id)}

    @app.get("/v1/assets/{asset_id}", tags=["ask"], response_class=FileResponse)
    async def asset(asset_id: str):
        """An image named by id in an answer: page thumbnail, figure, similar case, overlay or upload."""
        path, media, _kind = service.assets.get(asset_id)
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    # -- web page --------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event (the JSON is on one line, so a single data field suffices)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def serve(config: ServerConfig, *, log_level: str = "info") -> None:
    """Run the server with uvicorn until interrupted."""
    require("uvicorn", extra="server", purpose="medrag serve")
    import uvicorn

    config.check()
    app = create_app(config)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("medrag serve is bound to %s: every /v1 request needs the bearer token", config.host)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False)


