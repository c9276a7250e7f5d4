"""`medrag serve` (HTTP API + web page) and `medrag mcp` (MCP over stdio)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from medrag.errors import ConfigError

TOKEN_ENV = "MEDRAG_SERVER_TOKEN"


def read_token(token_file: Path | None) -> str | None:
    """The bearer token from --token-file or $MEDRAG_SERVER_TOKEN (never from the command line: it would show in ps)."""
    if token_file is not None:
        try:
            token = token_file.expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from exc
        if not token:
            raise ConfigError(f"the token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _settings():
    from medrag.cli import _quiet_libraries, _settings

    _quiet_libraries()
    return _settings()


def serve_command(
    index: Annotated[Optional[str], typer.Option("--index", "-i", help="default index (requests may name another)")] = None,
    host: Annotated[str, typer.Option(help="address to bind; anything but 127.0.0.1/localhost needs a token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    llm: Annotated[Optional[str], typer.Option("--llm", help="who phrases answers (see medrag ask --help)")] = None,
    graph: Annotated[Optional[str], typer.Option("--graph", help="knowledge graph to look concepts up in")] = None,
    token_file: Annotated[
        Optional[Path], typer.Option("--token-file", help=f"file holding the bearer token (or set ${TOKEN_ENV})")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="largest image upload, in MB")] = 20.0,
    max_files: Annotated[int, typer.Option(help="images per question")] = 4,
    max_pixels: Annotated[int, typer.Option(help="largest image, in pixels")] = 40_000_000,
    timeout: Annotated[float, typer.Option(help="seconds a question may take")] = 120.0,
    max_concurrent: Annotated[int, typer.Option(help="questions answered at once; others wait")] = 2,
) -> None:
    """Serve the HTTP API (/v1/..., docs at /docs) and the web page (/); needs the optional extra "server"."""
    from medrag.server.service import MedragService, ServerConfig

    config = ServerConfig(
        index=index, host=host, port=port, token=read_token(token_file), llm=llm, graph=graph,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_files=max_files, max_pixels=max_pixels,
        timeout_s=timeout, max_concurrent=max_concurrent,
    )
    config.check()  # before importing FastAPI: a bad host/token setup fails fast
    from medrag.server.app import create_app

    service = MedragService(config, _settings())
    if index:
        service.store.info(index)  # an unknown default index fails now, not at the first question
    from medrag.errors import require

    uvicorn = require("uvicorn", extra="server", purpose="medrag serve")
    typer.echo(f"medrag: serving on http://{host}:{port}/ (API docs at /docs){' — bearer token required' if config.token else ''}", err=True)
    uvicorn.run(create_app(config, service), host=host, port=port, log_level="warning", access_log=False)


def mcp_command(
    index: Annotated[Optional[str], typer.Option("--index", "-i", help="default index for search and ask")] = None,
    graph: Annotated[Optional[str], typer.Option("--graph", help="knowledge graph for kg_lookup (and ask)")] = None,
    llm: Annotated[Optional[str], typer.Option("--llm", help="who phrases answers (see medrag ask --help)")] = None,
) -> None:
    """Run an MCP server on stdio: search, ask, kg_lookup and the expert image tools; needs the optional extra "mcp"."""
    from medrag.integrations.mcp import build_mcp_server
    from medrag.server.service import MedragService, ServerConfig

    service = MedragService(ServerConfig(index=index, llm=llm, graph=graph), _settings())
    if index:
        service.store.info(index)
    build_mcp_server(service).run("stdio")
