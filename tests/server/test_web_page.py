"""The web page in a real browser: Debian chromium driven by Playwright against a live uvicorn server.

Needs `apt-get install -y chromium` (or MEDRAG_CHROMIUM=/path/to/chromium) and `pip install playwright`;
skipped with the reason otherwise. Screenshots land in the test's tmp folder.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'medrag[server]'")
pytest.importorskip("uvicorn", reason="the server extra is not installed: pip install 'medrag[server]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")

from conftest import write_medical_pdf  # noqa: E402


def chromium_path() -> str | None:
    for candidate in (os.environ.get("MEDRAG_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="chromium not found: apt-get install -y chromium (or set MEDRAG_CHROMIUM)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKEN = "web-page-test-token-0123456789"


@pytest.fixture(params=[None], ids=["open"])
def live_server(request, home, tmp_path):
    """uvicorn on 127.0.0.1 serving an index of a three-page anatomy PDF (hashing embedder)."""
    import uvicorn

    from medrag.config import load_settings
    from medrag.ingest.pipeline import ingest
    from medrag.server.app import create_app
    from medrag.server.service import MedragService, ServerConfig
    from medrag.testing.fakes import HashingEmbedder

    settings = load_settings(embedder="hashing:256", progress=False)
    pdf = write_medical_pdf(tmp_path / "anatomy.pdf", ("bone", "heart", "marrow"))
    ingest([pdf], index_name="anatomy", embedder=HashingEmbedder(256), settings=settings, progress=False)
    config = ServerConfig(index="anatomy", port=free_port(), token=request.param)
    server = uvicorn.Server(uvicorn.Config(create_app(config, MedragService(config, settings)), host="127.0.0.1",
                                           port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def chest_png(path: Path) -> Path:
    """A synthetic frontal chest-like picture: bright body, two dark lung fields."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (256, 256), 20)
    draw = ImageDraw.Draw(img)
    draw.rectangle([30, 20, 226, 250], fill=170)
    draw.ellipse([55, 50, 120, 200], fill=45)
    draw.ellipse([136, 50, 201, 200], fill=45)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def test_ask_stream_read_the_answer_and_open_a_citation(live_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_server + "/")
    sync_api.expect(page.locator("#index option")).to_have_count(1)
    page.fill("#question", "What is compact bone?")
    page.click("#ask")
    sync_api.expect(page.get_by_test_id("answer-text")).to_be_visible(timeout=30_000)
    steps = page.get_by_test_id("step")
    assert steps.count() >= 3
    kinds = [steps.nth(i).get_attribute("data-kind") for i in range(steps.count())]
    assert "verify" in kinds or "compose" in kinds, kinds
    assert "compact bone" in page.get_by_test_id("answer-text").inner_text().lower()
    sync_api.expect(page.get_by_test_id("confidence")).to_be_visible()
    assert page.locator("#banner li").count() >= 1  # the safety / confidence notes

    page.locator(".cite").first.click()
    card = page.locator("#card")
    sync_api.expect(card).to_be_visible()
    thumb = page.get_by_test_id("thumbnail").locator("img")
    sync_api.expect(thumb).to_be_visible()
    page.wait_for_function("() => { const i = document.querySelector('[data-testid=thumbnail] img'); return i && i.complete && i.naturalWidth > 0; }")
    sync_api.expect(page.get_by_test_id("bbox")).to_be_visible()  # the cited passage's box on the page
    assert page.locator("#card-passage mark").count() >= 1
    page.screenshot(path=str(tmp_path / "desktop-card.png"), full_page=True)
    page.keyboard.press("Escape")
    sync_api.expect(card).to_be_hidden()
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(200)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"page is {overflow}px wider than a phone screen"
    page.locator(".cite").first.click()
    sync_api.expect(card).to_be_visible()
    box = card.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 391
    page.screenshot(path=str(tmp_path / "phone-card.png"), full_page=True)
    page.keyboard.press("Escape")
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert not errors, errors
    for name in ("desktop.png", "desktop-card.png", "phone.png", "phone-card.png"):
        assert (tmp_path / name).stat().st_size > 5_000
    print(f"screenshots in {tmp_path}")


def test_attach_an_image_and_see_it_with_the_answer(live_server, browser, tmp_path):
    import inspect

    from medrag.agent.graph import Agent

    if "images" not in inspect.signature(Agent.stream).parameters:
        pytest.skip("this Agent does not take images yet")
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_server + "/")
    sync_api.expect(page.locator("#index option")).to_have_count(1)
    page.set_input_files("#file", str(chest_png(tmp_path / "chest.png")))
    sync_api.expect(page.locator("#attached li")).to_have_count(1)
    page.select_option("#modality", "xray")
    page.select_option("#body-part", "chest")
    page.fill("#question", "What do the lung fields show on this chest X-ray?")
    page.click("#ask")
    sync_api.expect(page.locator("#banner")).to_be_visible(timeout=60_000)
    sync_api.expect(page.locator("#images img").first).to_be_visible()
    page.wait_for_function("() => [...document.querySelectorAll('#images img')].every(i => i.complete && i.naturalWidth > 0)")
    steps = page.get_by_test_id("step")
    tools = [steps.nth(i).locator(".tool").all_inner_texts() for i in range(steps.count())]
    if ["segment_lungs_xray"] in tools:  # the agent sent the X-ray to the lung tool: its overlay is shown
        sync_api.expect(page.get_by_test_id("overlay").first).to_be_visible()
    page.screenshot(path=str(tmp_path / "desktop-image.png"), full_page=True)
    assert not errors, errors


@pytest.mark.parametrize("live_server", [TOKEN], ids=["token"], indirect=True)
def test_with_a_token_the_page_asks_for_it_and_loads_images_with_it(live_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(live_server + "/")
    sync_api.expect(page.locator("#auth")).to_be_visible()
    page.fill("#token", TOKEN)
    page.click("#save-token")
    sync_api.expect(page.locator("#index option")).to_have_text(["anatomy (5 passages)"])
    page.fill("#question", "What does the sinoatrial node do?")
    page.click("#ask")
    sync_api.expect(page.get_by_test_id("answer-text")).to_be_visible(timeout=30_000)
    page.locator(".cite").first.click()
    page.wait_for_function("() => { const i = document.querySelector('[data-testid=thumbnail] img'); return i && i.complete && i.naturalWidth > 0; }")
    assert page.get_by_test_id("thumbnail").locator("img").get_attribute("src").startswith("blob:")
    page.screenshot(path=str(tmp_path / "desktop-token.png"), full_page=True)
