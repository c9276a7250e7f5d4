"""`medrag serve --index NAME --port P` as users start it: a real process, real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'medrag[server]'")
httpx = pytest.importorskip("httpx")

from conftest import write_medical_pdf  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_starts_answers_and_stops(home, tmp_path):
    from medrag.config import load_settings
    from medrag.ingest.pipeline import ingest
    from medrag.testing.fakes import HashingEmbedder

    settings = load_settings(embedder="hashing:256", progress=False)
    ingest([write_medical_pdf(tmp_path / "anatomy.pdf")], index_name="anatomy", embedder=HashingEmbedder(256), settings=settings, progress=False)
    port = free_port()
    env = {**os.environ, "MEDRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("MEDRAG_SERVER_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "medrag.cli", "serve", "--index", "anatomy", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"medrag serve exited with {proc.returncode}: {proc.stderr.read()}")
            try:
                if httpx.get(base + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail("medrag serve did not answer /v1/health within 90 s")
            time.sleep(0.3)
        answer = httpx.post(base + "/v1/ask", json={"question": "What is compact bone?", "index": "anatomy"}, timeout=60)
        assert answer.status_code == 200
        body = answer.json()
        assert body["citations"] and not body["abstained"] and body["trace"]
        bad = httpx.post(base + "/v1/ask", json={"question": "What is bone?", "index": "missing"}, timeout=30)
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "index_not_found"
        assert httpx.get(base + "/v1/health", timeout=5).status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
