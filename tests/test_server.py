"""The control server over real HTTP: a real LiveAvatar (Piper voice, mesh face) with the
preview sink, behind a real ControlServer on an ephemeral port on 127.0.0.1.

Nothing is faked: requests go through urllib (or a raw socket where urllib would fix up
the request itself), and what the avatar does is read back from /api/stats and the
preview JPEGs.
"""
from __future__ import annotations

import http.client
import io
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from conftest import lip_brightness, make_settings

TOKEN = "test-token-Zq8rV3xK"  # pragma: allowlist secret - a throwaway for this test server
LINE = "Hello from the control server, this sentence is long enough to be heard for a while."
MAX_QUEUED = 2


@pytest.fixture(scope="module")
def live():
    """One avatar and server for the module: building the avatar takes a couple of seconds."""
    from talker_stream.live import LiveAvatar
    from talker_stream.server import ControlServer
    from talker_stream.outputs import open_sinks

    settings = make_settings(**{"live.sinks": ["preview"], "live.max_queued_utterances": MAX_QUEUED,
                                "server.preview_fps": 25.0})
    sinks = open_sinks(settings)
    avatar = LiveAvatar(settings, sinks)
    server = ControlServer(avatar, sinks[0], host="127.0.0.1", port=0, token=TOKEN).start()
    avatar.start()
    try:
        yield avatar, server, sinks[0]
    finally:
        avatar.stop()
        server.stop()


@pytest.fixture()
def quiet(live):
    """Each test starts and ends with the avatar idle."""
    avatar, server, _ = live
    avatar.interrupt()
    yield live
    avatar.interrupt()


# -- helpers -------------------------------------------------------------------------------
def call(server, path: str, body: bytes | dict | None = None, token: str | None = TOKEN,
         headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    post = data is not None or path in ("/api/say", "/api/interrupt")
    req = urllib.request.Request(server.url.rstrip("/") + path, data=data, method="POST" if post else "GET")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def stats(server) -> dict:
    status, data = call(server, "/api/stats")
    assert status == 200
    return data


def wait_for(predicate, timeout: float, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def jpeg(server) -> np.ndarray:
    with urllib.request.urlopen(server.url + "preview.jpg", timeout=10) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


# -- auth ------------------------------------------------------------------------------------
def test_say_without_token_is_refused_and_silent(quiet):
    avatar, server, _ = quiet
    said_before = len(avatar._said)
    status, data = call(server, "/api/say", {"text": LINE}, token=None)
    assert status == 401 and "token" in data["error"]
    time.sleep(0.8)
    s = stats(server)
    assert not s["speaking"] and s["caption"] == "" and s["queue_utterances"] == 0
    assert len(avatar._said) == said_before  # say() was never called


def test_wrong_token_is_refused(quiet):
    _, server, _ = quiet
    for bad in ("nope", TOKEN + "x", TOKEN[:-1], ""):
        assert call(server, "/api/say", {"text": LINE}, token=bad)[0] == 401
    assert call(server, "/api/interrupt", {}, token="nope")[0] == 401
    # the token as something other than a Bearer header does not count
    assert call(server, f"/api/say?token={TOKEN}", {"text": LINE}, token=None)[0] == 401


def test_no_cors_preflight_is_granted(quiet):
    """What stops another web site from sending the Bearer header: its preflight fails."""
    _, server, _ = quiet
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request("OPTIONS", "/api/say", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "authorization,content-type"})
        r = conn.getresponse()
        r.read()
        assert r.status >= 400
        assert not any(k.lower().startswith("access-control-") for k in r.headers)
    finally:
        conn.close()


def test_foreign_host_header_is_refused(quiet):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: it gets nothing, not even stats."""
    _, server, _ = quiet
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        conn.request("GET", "/api/stats", headers={"Host": f"evil.example:{server.port}"})
        r = conn.getresponse()
        assert r.status == 403 and b"fps" not in r.read()
    finally:
        conn.close()
    assert call(server, "/api/stats", headers={"Host": f"localhost:{server.port}"})[0] == 200


# -- speaking --------------------------------------------------------------------------------
def mouth_brightness(avatar, server, n: int) -> list[float]:
    return lip_brightness(avatar, lambda: jpeg(server), n)


def test_say_with_token_speaks_then_interrupt_stops(quiet):
    avatar, server, _ = quiet
    idle = mouth_brightness(avatar, server, 4)
    status, data = call(server, "/api/say", {"text": LINE, "question": "alice: say hello"})
    assert status == 202 and isinstance(data["utterance"], int)
    utterance = data["utterance"]
    assert wait_for(lambda: stats(server)["caption"] == LINE, 10.0), stats(server)  # ~0.3 s on an idle machine
    assert stats(server)["speaking"] is True
    talking = mouth_brightness(avatar, server, 8)
    # at rest the lips hardly change (seen: within 0.2); talking shows the dark mouth (seen: 25-60 darker)
    assert max(idle) - min(idle) < 5, idle
    # the mouth moves: its box changes by far more than the still idle face's noise
    # (darker with the cavity, brighter with teeth: the range, not one direction)
    assert max(talking) - min(talking) > 12, (idle, talking)

    t0 = time.monotonic()
    status, data = call(server, "/api/interrupt", {})
    assert status == 200 and data["interrupted"] == utterance
    assert wait_for(lambda: not stats(server)["speaking"], 0.2, step=0.01)
    assert time.monotonic() - t0 < 0.6  # the interrupt call included
    heard = data["spoken"]
    assert heard and LINE.startswith(heard) and len(heard) < len(LINE), heard
    assert stats(server)["caption"] == ""


def test_interrupt_when_idle_says_nothing_was_spoken(quiet):
    _, server, _ = quiet
    status, data = call(server, "/api/interrupt")
    assert status == 200 and data == {"interrupted": None, "spoken": ""}


# -- bad requests ----------------------------------------------------------------------------
@pytest.mark.parametrize("body", [{"text": ""}, {"text": "   \n"}, {"text": 42}, {}, {"question": "q"}, [1, 2]])
def test_bad_text_is_400(quiet, body):
    _, server, _ = quiet
    status, data = call(server, "/api/say", json.dumps(body).encode())
    assert status == 400 and data["error"]
    assert stats(server)["queue_utterances"] == 0


@pytest.mark.parametrize("raw", [b"not json", b"{\"text\": ", b"\xff\xfe", b"text=hello"])
def test_non_json_is_400(quiet, raw):
    _, server, _ = quiet
    status, data = call(server, "/api/say", raw)
    assert status == 400 and "JSON" in data["error"]


def test_big_body_is_413_and_answered(quiet):
    _, server, _ = quiet
    body = json.dumps({"text": "a " * 50_000}).encode()  # 100 kB
    assert len(body) > 64 * 1024
    status, data = call(server, "/api/say", body)
    assert status == 413 and "bytes" in data["error"]
    assert stats(server)["queue_utterances"] == 0
    # also without a token: the body is drained, so the 401 arrives instead of a reset
    assert call(server, "/api/say", body, token=None)[0] == 401


def test_long_text_is_413(quiet):
    _, server, _ = quiet
    status, data = call(server, "/api/say", {"text": "word " * 2001})  # 10005 characters, ~10 kB
    assert status == 413 and "10000" in data["error"]
    assert not stats(server)["speaking"]


def test_unknown_paths_are_404(quiet):
    _, server, _ = quiet
    assert call(server, "/api/nothing")[0] == 404
    assert call(server, "/api/nothing", {"text": "x"})[0] == 404


def test_chunked_body_is_refused_not_misread(quiet):
    """A body without Content-Length must not be left on the connection as the 'next request'."""
    _, server, _ = quiet
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        body = json.dumps({"text": LINE}).encode()
        s.sendall(b"POST /api/say HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
                  + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 411")
    assert stats(server)["queue_utterances"] == 0 and not stats(server)["speaking"]


def test_flood_is_429_never_500(quiet):
    avatar, server, _ = quiet
    with ThreadPoolExecutor(8) as pool:  # 20 clients at once, like a chat raid
        codes = list(pool.map(lambda i: call(server, "/api/say", {"text": f"Message number {i}. " + LINE})[0],
                              range(20)))
    assert set(codes) <= {202, 429}, codes
    assert codes.count(202) >= MAX_QUEUED and codes.count(429) >= 10, codes
    assert stats(server)["queue_utterances"] <= MAX_QUEUED
    # after an interrupt the queue is empty again and say is accepted
    assert call(server, "/api/interrupt")[0] == 200
    assert call(server, "/api/say", {"text": "Back again."})[0] == 202


# -- preview and stats -----------------------------------------------------------------------
def test_preview_jpg_is_the_avatar(quiet):
    avatar, server, _ = quiet
    img = jpeg(server)
    h, w = avatar.portrait.shape[:2]
    assert img.shape[1] / img.shape[0] == pytest.approx(w / h, rel=0.02)
    assert img.shape[1] == min(w, 640)
    # it is the portrait (at rest the face moves only a little), not a blank or a test card
    ref = np.asarray(Image.fromarray(avatar.portrait).resize((img.shape[1], img.shape[0])))
    assert np.abs(img.astype(int) - ref.astype(int)).mean() < 12
    assert img.std() > 20


def test_preview_mjpeg_streams_distinct_frames(quiet):
    _, server, _ = quiet
    call(server, "/api/say", {"text": LINE})
    frames: list[bytes] = []
    with urllib.request.urlopen(server.url + "preview.mjpg", timeout=10) as r:
        ctype = r.headers["Content-Type"]
        assert ctype.startswith("multipart/x-mixed-replace")
        boundary = b"--" + ctype.split("boundary=")[1].encode()
        while len(frames) < 6:
            line = r.readline().strip()
            if not line:
                continue
            assert line == boundary, line
            headers = {}
            while (h := r.readline().strip()):
                k, v = h.decode().split(":", 1)
                headers[k.lower()] = v.strip()
            assert headers["content-type"] == "image/jpeg"
            frames.append(r.read(int(headers["content-length"])))
    images = [np.asarray(Image.open(io.BytesIO(f)).convert("L"), dtype=np.int16) for f in frames]
    assert all(f.startswith(b"\xff\xd8") and f.endswith(b"\xff\xd9") for f in frames)
    changes = [np.abs(a - b).mean() for a, b in zip(images, images[1:])]
    assert sum(c > 0 for c in changes) >= 4, changes
    assert len(set(frames)) >= 5


def test_stats_fields_and_fps(quiet):
    _, server, _ = quiet
    f0, t0 = stats(server)["frames"], time.monotonic()
    time.sleep(2.0)
    s = stats(server)
    rate = (s["frames"] - f0) / (time.monotonic() - t0)
    assert rate == pytest.approx(25, rel=0.1)  # the loop is clocked to the wall clock
    documented = {"fps", "target_fps", "frames", "dropped", "resyncs", "queue_utterances", "queued_seconds",
                  "latency_ms", "latency_median_ms", "speaking", "caption", "tts_errors", "uptime_s", "sinks"}
    assert documented <= set(s), documented - set(s)
    assert s["target_fps"] == 25.0
    assert 20 <= s["fps"] <= 30, s  # over the last 2 s; catching up after a stall reads high
    assert s["frames"] > 25 and s["uptime_s"] > 1
    (sink,) = s["sinks"]
    assert sink["name"] == "preview" and {"fps", "written", "dropped", "lost", "errors", "backlog",
                                          "last_error"} <= set(sink)
    assert sink["written"] > 0 and sink["errors"] == 0


def test_page_is_served(quiet):
    _, server, _ = quiet
    with urllib.request.urlopen(server.url, timeout=5) as r:
        page = r.read().decode()
        assert r.headers["Content-Type"].startswith("text/html")
        assert "Access-Control-Allow-Origin" not in r.headers
    assert 'id="preview"' in page and "/api/say" in page and "Bearer" in page
    assert TOKEN not in page  # the token reaches the page only through the URL fragment


def test_token_never_in_stats_or_logs(live, caplog):
    avatar, server, _ = live
    with caplog.at_level(logging.DEBUG):
        call(server, "/api/say", {"text": "Short one."})
        call(server, "/api/say", {"text": "x"}, token="wrong")
        call(server, "/api/say", b"{bad")
        call(server, "/api/interrupt")
        body = json.dumps(stats(server))
    assert TOKEN not in body
    assert caplog.records, "the server logs requests at debug level"
    assert any("/api/say" in r.getMessage() for r in caplog.records)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text
