"""The control page in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright over its own pipe) against a real LiveAvatar and ControlServer on 127.0.0.1.

The browser gets a new empty profile in a temp dir and the flags that keep it off the
network; the fixture closes it and removes the dir. Nothing is faked.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, lip_brightness, make_settings, need_module, requires

CHROMIUM = "/usr/bin/chromium"
TOKEN = "page-test-token-4hD9sQ"  # pragma: allowlist secret - a throwaway for this test server
LINE = "Hello from the browser, I am reading what you typed into the page."
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.services,
    requires(Path(CHROMIUM).exists(), "Debian's chromium is not installed (apt-get install chromium)"),
]
playwright_api = need_module("playwright.sync_api", "pip install -e .[test] (playwright)")


@pytest.fixture(scope="module")
def live():
    from talker_stream.live import LiveAvatar
    from talker_stream.server import ControlServer
    from talker_stream.outputs import open_sinks

    settings = make_settings(**{"live.sinks": ["preview"]})
    sinks = open_sinks(settings)
    avatar = LiveAvatar(settings, sinks)
    server = ControlServer(avatar, sinks[0], host="127.0.0.1", port=0, token=TOKEN).start()
    avatar.start()
    try:
        yield avatar, server
    finally:
        avatar.stop()
        server.stop()


@pytest.fixture(scope="module")
def browser():
    """A fresh Chromium profile (headless, loopback only); closed and deleted afterwards."""
    profile = tempfile.mkdtemp(prefix="talker-chromium-")
    pw = playwright_api.sync_playwright().start()
    context = None
    try:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1100, "height": 680})
        context.set_default_timeout(15_000)
        yield context
    finally:
        if context is not None:
            context.close()
        pw.stop()
        shutil.rmtree(profile, ignore_errors=True)


def stats(server) -> dict:
    with urllib.request.urlopen(server.url + "api/stats", timeout=5) as r:
        return json.loads(r.read())


def wait_for(predicate, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


GRAB = """() => { const img = document.getElementById('preview'); const [w, h] = window.previewSize();
    const c = document.createElement('canvas'); c.width = w; c.height = h;
    c.getContext('2d').drawImage(img, 0, 0); return c.toDataURL('image/png'); }"""


def preview_pixels(page) -> np.ndarray:
    """The frame the page's <img> shows right now, at its own size, as grey levels."""
    png = base64.b64decode(page.evaluate(GRAB).split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)


def mouth_brightness(page, avatar, n: int) -> list[float]:
    return lip_brightness(avatar, lambda: preview_pixels(page), n)


def open_page(browser, server):
    """A fresh page on the control page, with the token, once its preview shows a frame."""
    page = browser.new_page()
    page.goto(server.url + "#token=" + TOKEN)
    page.wait_for_function("window.previewSize()[0] > 0")
    # a video element knows its size before its first picture is painted: wait for a picture
    assert wait_for(lambda: preview_pixels(page).std() > 20, 10, 0.2), "the preview shows the avatar"
    return page


def test_page_shows_live_preview_says_and_interrupts(live, browser):
    avatar, server = live
    avatar.interrupt()
    page = open_page(browser, server)
    try:
        # the live preview: WebRTC video (with the voice) at the portrait's shape, changing
        assert page.evaluate("document.getElementById('preview').tagName") == "VIDEO", "WebRTC, not the MJPEG fallback"
        w, h = page.evaluate("window.previewSize()")
        assert (h, w) == avatar.portrait.shape[:2]
        # the token is taken out of the address bar (still usable by the page)
        assert page.evaluate("location.hash") == ""
        assert TOKEN not in page.url

        page.fill("#text", LINE)
        idle = mouth_brightness(page, avatar, 4)
        page.click("#send")
        assert wait_for(lambda: stats(server)["caption"] == LINE, 10.0), (stats(server), page.text_content("#message"))
        page.wait_for_function("document.getElementById('caption').textContent === " + json.dumps(LINE))
        assert page.input_value("#text") == ""
        assert "queued" in page.text_content("#message")
        talking = mouth_brightness(page, avatar, 8)  # the page's own preview shows the mouth moving
        assert max(idle) - min(idle) < 5, idle
        # the mouth moves: its box changes by far more than the still idle face's noise
        # (darker with the cavity, brighter with teeth: the range, not one direction)
        assert max(talking) - min(talking) > 12, (idle, talking)

        shot = Image.open(io.BytesIO(page.screenshot()))
        assert shot.size == (1100, 680)
        if os.environ.get("TALKER_UPDATE_DOCS"):  # refresh the picture in docs/api.md on request only
            shot.save(ROOT / "docs" / "web-page.png")

        page.click("#interrupt")
        assert wait_for(lambda: not stats(server)["speaking"], 1.0, step=0.02)
        page.wait_for_function("document.getElementById('message').textContent.startsWith('interrupted after: ')")
        heard = page.text_content("#message").removeprefix("interrupted after: ")
        assert heard and LINE.startswith(heard) and heard != LINE
        page.wait_for_function("document.getElementById('caption').textContent === ''")
    finally:
        page.close()


def test_preview_keeps_moving_when_idle(live, browser):
    """Idle is alive too (blinks, breathing, head motion): frames read through a canvas differ."""
    avatar, server = live
    avatar.interrupt()
    page = open_page(browser, server)
    try:
        frames = []
        for _ in range(4):
            frames.append(preview_pixels(page))
            time.sleep(1.0)
        assert all(f.shape == avatar.portrait.shape[:2] for f in frames)
        assert all(f.std() > 20 for f in frames)  # a picture, not a blank
        changes = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
        assert max(changes) > 0.1, changes
    finally:
        page.close()


def test_page_without_token_cannot_make_it_talk(live, browser):
    avatar, server = live
    avatar.interrupt()
    said = len(avatar._said)
    page = browser.new_page()  # a new tab: nothing in its sessionStorage
    try:
        page.goto(server.url)
        page.fill("#text", LINE)
        page.click("#send")
        page.wait_for_function("document.getElementById('message').className === 'err'")
        assert "token" in page.text_content("#message")
        time.sleep(0.5)
        assert len(avatar._said) == said and not stats(server)["speaking"]
        # a wrong token gets the server's 401 message in the page
        page.goto(server.url + "?again#token=wrong")  # a new query: a real load, not a fragment change
        page.fill("#text", LINE)
        page.click("#send")
        page.wait_for_function("document.getElementById('message').className === 'err'")
        assert "missing or wrong token" in page.text_content("#message")
        assert len(avatar._said) == said
    finally:
        page.close()
