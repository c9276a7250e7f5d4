"""The HTTP API of `medrag serve`, in process (FastAPI TestClient) over a small real index."""

from __future__ import annotations

import io
import json
import time

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'medrag[server]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from conftest import write_medical_pdf  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from medrag.errors import ConfigError  # noqa: E402

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def settings(home, tmp_path):
    """MEDRAG_HOME with one index 'anatomy' (three PDF pages, hashing embedder, page thumbnails)."""
    from medrag.config import load_settings
    from medrag.ingest.pipeline import ingest
    from medrag.testing.fakes import HashingEmbedder

    settings = load_settings(embedder="hashing:256", progress=False)
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf", ("bone", "heart", "marrow"))
    ingest([pdf], index_name="anatomy", embedder=HashingEmbedder(256), settings=settings, progress=False)
    return settings


def make_client(settings, **config) -> TestClient:
    from medrag.server.app import create_app
    from medrag.server.service import MedragService, ServerConfig

    cfg = ServerConfig(index="anatomy", **config)
    return TestClient(create_app(cfg, MedragService(cfg, settings)), raise_server_exceptions=False)


@pytest.fixture
def client(settings):
    with make_client(settings) as c:
        yield c


def png_bytes(size=(64, 64), value=90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def error_of(response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return response.status_code, body["error"]["code"]


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.split("\n\n"):
        kind, data = None, None
        for line in block.splitlines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
        if kind:
            events.append((kind, data))
    return events


def test_health_docs_and_page(client):
    health = client.get("/v1/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["auth"] is False
    schema = client.get("/openapi.json").json()
    for path in ("/v1/ask", "/v1/ask/stream", "/v1/indexes", "/v1/indexes/{name}/search", "/v1/tools", "/v1/health"):
        assert path in schema["paths"], path
    assert "multipart/form-data" in schema["paths"]["/v1/ask"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "medrag" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


def test_ask_json_answers_with_citations_and_page_thumbnails(client):
    response = client.post("/v1/ask", json={"question": "What is compact bone?", "index": "anatomy", "thread_id": "t-1"})
    assert response.status_code == 200, response.text
    answer = response.json()
    for key in ("answer", "abstained", "confidence", "citations", "sentences", "trace"):
        assert key in answer
    assert not answer["abstained"] and answer["citations"]
    cited = answer["citations"][0]
    assert cited["n"] == 1 and cited["source"] == "anatomy.pdf" and cited["page"] == 1
    assert cited["page_size"] == [612.0, 792.0]  # to place the bbox on the thumbnail
    assert "compact bone" in cited["passage"].lower()
    thumb = client.get(f"/v1/assets/{cited['assets']['thumbnail']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content.startswith(b"\xff\xd8\xff")
    turns = client.get("/v1/threads/t-1").json()["turns"]
    assert [t["question"] for t in turns] == ["What is compact bone?"]


def test_default_index_is_used_when_none_is_named(client):
    response = client.post("/v1/ask", json={"question": "What does the sinoatrial node do?"})
    assert response.status_code == 200 and response.json()["index"] == "anatomy"


def test_stream_sends_each_step_then_the_answer(client):
    with client.stream("POST", "/v1/ask/stream", json={"question": "What is compact bone?"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = sse_events(text)
    kinds = [k for k, _ in events]
    assert kinds[-2:] == ["answer", "done"]
    steps = [d for k, d in events if k == "step"]
    assert len(steps) >= 3
    assert all(("step" in s or "node" in s) for s in steps)
    answer = events[-2][1]
    assert answer["citations"] and len(answer["trace"]) == len(steps)


def test_indexes_search_and_tools(client):
    listed = client.get("/v1/indexes").json()
    assert [i["name"] for i in listed["indexes"]] == ["anatomy"] and listed["default"] == "anatomy"
    found = client.post("/v1/indexes/anatomy/search", json={"query": "osteoblasts form new bone", "k": 3})
    assert found.status_code == 200
    hits = found.json()["hits"]
    assert 1 <= len(hits) <= 3 and hits[0]["citation"]["source"] == "anatomy.pdf"
    assert hits[0]["assets"]["thumbnail"]
    tools = client.get("/v1/tools").json()["tools"]
    assert "search_text" in {t["name"] for t in tools}


@pytest.mark.parametrize(
    "method, path, kwargs, status, code",
    [
        ("post", "/v1/ask", {"json": {"question": "  "}}, 400, "empty_question"),
        ("post", "/v1/ask", {"json": {"index": "anatomy"}}, 422, "invalid_request"),
        ("post", "/v1/ask", {"json": {"question": "x", "max_rounds": "many"}}, 422, "invalid_request"),
        ("post", "/v1/ask", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ("post", "/v1/ask", {"content": b"question=hi", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ("post", "/v1/ask", {"json": {"question": "What is bone?", "index": "nope"}}, 404, "index_not_found"),
        ("post", "/v1/ask", {"json": {"question": "What is bone?", "index": "../etc"}}, 400, "invalid_input"),
        ("post", "/v1/ask", {"json": {"question": "What is bone?", "thread_id": "a b/c"}}, 400, "invalid_input"),
        ("post", "/v1/ask/stream", {"json": {"question": "What is bone?", "index": "nope"}}, 404, "index_not_found"),
        ("post", "/v1/indexes/nope/search", {"json": {"query": "bone"}}, 404, "index_not_found"),
        ("post", "/v1/indexes/anatomy/search", {"json": {"query": "bone", "mode": "magic"}}, 400, "invalid_input"),
        ("post", "/v1/indexes/anatomy/search", {"json": {"query": "bone", "k": 0}}, 422, "invalid_request"),
        ("get", "/v1/assets/0123456789abcdef01234567", {}, 404, "asset_not_found"),
        ("get", "/v1/assets/..%2F..%2Fetc%2Fpasswd", {}, 404, "not_found"),  # no route: never a file
        ("get", "/v1/assets/%2Fetc%2Fpasswd", {}, 404, "not_found"),
        ("get", "/v1/assets/etc-passwd", {}, 404, "asset_not_found"),
        ("get", "/v1/threads/never-seen", {}, 404, "thread_not_found"),
        ("get", "/v1/nothing-here", {}, 404, "not_found"),
        ("delete", "/v1/health", {}, 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_json_errors_and_the_server_stays_up(client, method, path, kwargs, status, code):
    response = getattr(client, method)(path, **kwargs)
    assert error_of(response) == (status, code)
    assert client.get("/v1/health").status_code == 200


def test_asset_ids_never_reach_files_outside_what_answers_named(client, settings):
    secret = settings.home / "assets" / "secret.png"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(png_bytes())
    import hashlib

    guessed = hashlib.sha256(str(secret.resolve()).encode()).hexdigest()[:24]
    assert error_of(client.get(f"/v1/assets/{guessed}")) == (404, "asset_not_found")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_uploads_are_checked_for_type_size_pixels_and_count(settings):
    with make_client(settings, max_upload_bytes=4000, max_files=2, max_pixels=100_000) as client:
        def post(files, question="What is in this image?"):
            return client.post("/v1/ask", data={"question": question}, files=files)

        assert error_of(post([("images", ("notes.txt", b"just text", "text/plain"))])) == (415, "unsupported_media_type")
        assert error_of(post([("images", ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 5000, "image/png"))])) == (413, "upload_too_large")
        assert error_of(post([("images", ("broken.png", b"\x89PNG\r\n\x1a\n" + b"garbage", "image/png"))])) == (400, "invalid_image")
        assert error_of(post([("images", ("huge.png", png_bytes((400, 400), 0), "image/png"))])) == (413, "too_many_pixels")
        three = [("images", (f"{i}.png", png_bytes(), "image/png")) for i in range(3)]
        assert error_of(post(three)) == (413, "too_many_files")
        assert error_of(post([("scan", ("a.png", png_bytes(), "image/png"))])) == (400, "invalid_multipart")
        assert error_of(post([("images", ("a.png", png_bytes(), "image/png"))], question="")) == (400, "empty_question")
        assert client.get("/v1/health").status_code == 200


def test_a_chunked_body_without_length_is_cut_at_the_limit(settings):
    with make_client(settings, max_upload_bytes=2000, max_files=1) as client:
        def chunks():
            for _ in range(200):
                yield b"x" * 10_000  # 2 MB, no Content-Length

        response = client.post("/v1/ask", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert error_of(response) == (413, "upload_too_large")
        big_json = client.post("/v1/ask", content=chunks(), headers={"content-type": "application/json"})
        assert error_of(big_json) == (413, "upload_too_large")
        assert client.get("/v1/health").status_code == 200


def test_an_uploaded_image_is_passed_to_the_agent_and_shown_back(settings):
    from medrag.agent.graph import Agent

    import inspect

    if "images" not in inspect.signature(Agent.ask).parameters:
        pytest.skip("this Agent does not take images yet")
    with make_client(settings) as client:
        response = client.post("/v1/ask", data={"question": "What is compact bone?"},
                               files=[("images", ("scan.png", png_bytes((96, 80), 120), "image/png"))])
        assert response.status_code == 200, response.text
        uploads = response.json()["uploads"]
        assert [u["name"] for u in uploads] == ["scan.png"] and uploads[0]["size"] == [96, 80]
        shown = client.get(f"/v1/assets/{uploads[0]['asset']}")
        assert shown.status_code == 200 and shown.content.startswith(b"\x89PNG")


def test_a_dicom_upload_is_accepted(settings, tmp_path):
    pytest.importorskip("pydicom")
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = generate_uid()
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = FileDataset(str(tmp_path / "ct.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.Rows, ds.Columns = "CT", 32, 32
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = (np.arange(32 * 32, dtype=np.int16).reshape(32, 32)).tobytes()
    ds.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    from medrag.server.service import MedragService, ServerConfig

    service = MedragService(ServerConfig(index="anatomy"), settings)
    upload = service.save_upload((tmp_path / "ct.dcm").read_bytes(), "ct.dcm", "application/dicom")
    assert upload.modality == "ct" and (upload.width, upload.height) == (32, 32)
    assert upload.path.suffix == ".dcm" and upload.display_path.read_bytes().startswith(b"\x89PNG")


def test_a_token_is_required_when_configured_and_never_shown(settings):
    with make_client(settings, token=TOKEN, host="0.0.0.0") as client:
        assert client.get("/v1/health").status_code == 200  # open: liveness and the page's first call
        assert client.get("/").status_code == 200
        assert error_of(client.get("/v1/indexes")) == (401, "unauthorized")
        assert error_of(client.get("/v1/indexes", headers={"Authorization": "Bearer wrong-token-wrong-token"})) == (401, "unauthorized")
        assert error_of(client.post("/v1/ask", json={"question": "What is bone?"})) == (401, "unauthorized")
        ok = client.get("/v1/indexes", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert TOKEN not in client.get("/openapi.json").text and TOKEN not in client.get("/v1/health").text
    from medrag.server.service import ServerConfig

    assert TOKEN not in repr(ServerConfig(token=TOKEN))


def test_binding_beyond_loopback_without_a_token_is_refused(settings):
    from medrag.server.app import create_app
    from medrag.server.service import ServerConfig

    with pytest.raises(ConfigError, match="token"):
        create_app(ServerConfig(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="16 characters"):
        ServerConfig(token="short").check()


def test_serve_command_refuses_an_open_bind_without_token(cli, monkeypatch):
    monkeypatch.delenv("MEDRAG_SERVER_TOKEN", raising=False)
    code, out, err = cli("serve", "--host", "0.0.0.0")
    assert code == 2 and "error:" in err and "token" in err


def test_serve_command_reads_the_token_from_a_file_not_the_command_line(tmp_path):
    from medrag.server.cli import read_token

    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert read_token(path) == TOKEN
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(tmp_path / "missing")


def test_a_slow_question_times_out_with_a_json_error(settings, monkeypatch):
    from medrag.server.service import MedragService

    def slow(self, *args, **kwargs):
        time.sleep(1.0)
        return {}

    monkeypatch.setattr(MedragService, "ask", slow)
    with make_client(settings, timeout_s=0.2) as client:
        assert error_of(client.post("/v1/ask", json={"question": "What is bone?"})) == (504, "timeout")
        assert client.get("/v1/health").status_code == 200


def test_threads_keep_their_own_turns(client):
    client.post("/v1/ask", json={"question": "What is compact bone?", "thread_id": "alice"})
    client.post("/v1/ask", json={"question": "What does the sinoatrial node do?", "thread_id": "bob"})
    alice = client.get("/v1/threads/alice").json()["turns"]
    bob = client.get("/v1/threads/bob").json()["turns"]
    assert [t["question"] for t in alice] == ["What is compact bone?"]
    assert [t["question"] for t in bob] == ["What does the sinoatrial node do?"]
    assert all("heart" not in (c["chunk_id"] or "") for c in alice[0]["citations"])


def test_a_slow_stream_ends_with_a_timeout_event(settings, monkeypatch):
    from medrag.server.service import MedragService

    def slow(self, *args, **kwargs):
        yield "step", {"step": "intake", "outputs_summary": "started"}
        time.sleep(1.0)
        yield "answer", {}

    monkeypatch.setattr(MedragService, "stream", slow)
    with make_client(settings, timeout_s=0.3) as client:
        with client.stream("POST", "/v1/ask/stream", json={"question": "What is bone?"}) as response:
            events = sse_events("".join(response.iter_text()))
    assert [k for k, _ in events] == ["step", "error", "done"]
    assert events[1][1]["error"]["code"] == "timeout"


def test_an_agent_error_mid_stream_is_an_error_event(settings, monkeypatch):
    from medrag.errors import AgentError
    from medrag.server.service import MedragService

    def broken(self, *args, **kwargs):
        yield "step", {"step": "intake"}
        raise AgentError("the graph fell over")

    monkeypatch.setattr(MedragService, "stream", broken)
    with make_client(settings) as client:
        with client.stream("POST", "/v1/ask/stream", json={"question": "What is bone?"}) as response:
            events = sse_events("".join(response.iter_text()))
    assert [k for k, _ in events] == ["step", "error", "done"]
    assert events[1][1]["error"] == {"code": "agent_error", "message": "the graph fell over", "status": 500}


def test_figures_case_images_and_overlays_in_answers_become_assets(settings, tmp_path):
    from medrag.types import Answer, AnswerSentence, Citation

    case, overlay = tmp_path / "case.png", tmp_path / "overlay.png"
    case.write_bytes(png_bytes())
    overlay.write_bytes(png_bytes(value=200))
    answer = Answer(
        "q", "A similar case. [1] Lungs measured. [2]", False, 0.8,
        citations=[
            Citation("medpix", "img-1", locator={"image": str(case), "caption": "Chest film of a similar case"}),
            Citation("chest.png", "segment_lungs_xray:chest.png", locator={"overlay": str(overlay), "tool": "segment_lungs_xray"}),
        ],
        sentences=[AnswerSentence("A similar case.", [1]), AnswerSentence("Lungs measured.", [2])],
    )
    with make_client(settings) as client:
        data = client.app.state.service.finish(answer, "anatomy", [], None, 0.1)
        case_id = data["citations"][0]["assets"]["case"]
        overlay_id = data["citations"][1]["assets"]["overlay"]
        assert data["overlays"] == [{"id": overlay_id, "kind": "overlay"}]
        assert client.get(f"/v1/assets/{case_id}").content == case.read_bytes()
        assert client.get(f"/v1/assets/{overlay_id}").content == overlay.read_bytes()
        text = tmp_path / "notes.txt"
        text.write_text("not an image")
        assert client.app.state.service.assets.register(text, "figure") is None  # only image files are ever served
