"""Browser sessions over WebRTC, in a real headless Chromium (Debian's, driven by Playwright).

`talker-stream serve` runs as a real process with the real engines (SmolLM2 through llama.cpp,
Piper, Whisper, the mesh face). Each page records what it received with MediaRecorder
(what a visitor saw and heard) and hands the WebM back; the test decodes it with PyAV, runs
Whisper on the sound and the project's lip-sync measure on picture and sound together.
Chromium's fake capture device plays a WAV file as the visitor's microphone. Nothing is faked.
"""
from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import PORTRAIT, need_module, requires, wait_for
from services import end

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
CONFIG = """
[avatar]
portrait = "{portrait}"

[llm]
temperature = 0.0
max_tokens = 40

[serve]
max_sessions = 2
per_address = 5
idle_timeout = 60.0
"""

pytestmark = [
    pytest.mark.services,
    pytest.mark.slow,
    requires(Path(CHROMIUM).exists(), "Debian's chromium is not installed (apt-get install chromium)"),
]
playwright_api = need_module("playwright.sync_api", "pip install -e .[test] (playwright)")


@contextlib.contextmanager
def serving(folder: Path, config: str, env: dict | None = None, verbose: bool = False):
    """`talker-stream serve` on a free loopback port; stopped (SIGINT) afterwards."""
    cfg = folder / "config.toml"
    cfg.write_text(config)
    proc = subprocess.Popen([sys.executable, "-m", "talker_stream.cli", *(["-v"] if verbose else []), "-c", str(cfg),
                             "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=open(folder / "serve.log", "w"), text=True, cwd=folder,
                            env=env)
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+/", line)
    assert match, f"serve printed {line!r}; log: {(folder / 'serve.log').read_text()[-3000:]}"
    try:
        yield match.group(0), folder / "serve.log"
    finally:
        end(proc, signal.SIGINT, 20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("serve"), CONFIG.format(portrait=PORTRAIT)) as running:
        yield running


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory):
    """A spoken question for the fake microphone: Piper's voice at 48 kHz, then 30 s of
    silence (Chromium loops the file: the question must not come back during the test)."""
    import wave

    from talker_stream.speech.audio import resample
    from talker_stream.frames import AudioChunk
    from talker_stream.speech.tts.piper import PiperTTS

    chunks = list(PiperTTS().stream("What is the capital of France?"))
    pcm = resample(AudioChunk(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate), 48000).pcm
    pcm = np.concatenate([np.zeros(48000, np.float32), pcm, np.zeros(48000 * 30, np.float32)])
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def browser(extra: list[str] = ()):
    profile = tempfile.mkdtemp(prefix="talker-webrtc-")
    pw = playwright_api.sync_playwright().start()
    context = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                    args=FLAGS + list(extra))
    return pw, context, profile


def close(pw, context, profile) -> None:
    import shutil

    context.close()
    pw.stop()
    shutil.rmtree(profile, ignore_errors=True)


def sessions(url: str) -> dict:
    import json

    with urllib.request.urlopen(url + "api/sessions", timeout=5) as r:
        return json.load(r)


def answered(page, question_word: str, seconds: float) -> bool:
    """The page's captions show the avatar said something after the question, and then stopped."""
    def done() -> bool:
        caps = page.evaluate("talker.captions()")
        heard = [i for i, c in enumerate(caps) if c.startswith("you:") and question_word in c.lower()]
        return bool(heard) and any(not c.startswith("you:") for c in caps[heard[0] + 1:])
    if not wait_for(done, seconds, 0.2):
        return False
    time.sleep(6)  # the rest of the answer plays out
    return True


def received(page, folder: Path, name: str) -> Path:
    data = base64.b64decode(page.evaluate("talker.recorded()"))
    path = folder / f"{name}.webm"
    path.write_bytes(data)
    return path


def heard_words(path: Path) -> str:
    from talker_stream.brain.asr.whisper import WhisperASR
    from talker_stream.speech.audio import read_audio

    pcm = np.concatenate([c.pcm for c in read_audio(path, 16000)])
    return WhisperASR().transcribe(pcm, "en").lower()


def test_a_visitor_hears_and_sees_the_answer_in_sync(server, tmp_path):
    from talker_stream.face.lipsync import measure_file

    url, log = server
    pw, context, profile = browser()
    try:
        page = context.new_page()
        page.goto(url)
        assert page.evaluate("talker.start(false)") == 201
        assert wait_for(lambda: page.evaluate("document.getElementById('avatar').videoWidth") > 0, 20), \
            "video arrives at the browser"
        page.evaluate("talker.record()")
        time.sleep(1.0)
        assert page.evaluate("talker.ask('What is the capital of France?')") == 200
        assert answered(page, "france", 60), page.evaluate("talker.captions()")
        path = received(page, tmp_path, "answer")
        (Path(os.environ.get("TALKER_KEEP", tmp_path)) / "answer.webm").write_bytes(path.read_bytes())
    finally:
        close(pw, context, profile)
    words = heard_words(path)
    assert len(words.split()) >= 4, f"the answer was heard at the browser: {words!r}"
    report = measure_file(path, fps=25.0)  # the avatar's rate; the WebM's timing is variable
    assert abs(report.lag_frames) <= 1 and report.correlation > 0.3, (report.lag_frames, report.correlation)
    assert wait_for(lambda: sessions(url)["sessions"] == 0, 10), "closing the page ended its session"


def test_two_visitors_each_get_their_own_answer(server, tmp_path):
    url, _ = server
    pw, context, profile = browser()
    try:
        a, b = context.new_page(), context.new_page()
        for page in (a, b):
            page.goto(url)
            assert page.evaluate("talker.start(false)") == 201
        assert sessions(url)["sessions"] == 2
        a.evaluate("talker.ask('What colour is the sky?')")
        b.evaluate("talker.ask('How many legs does a spider have?')")
        assert answered(a, "sky", 90) and answered(b, "spider", 90)
        caps_a, caps_b = a.evaluate("talker.captions()"), b.evaluate("talker.captions()")
        # a third session is over the cap: a clear busy answer, never a frozen page
        c = context.new_page()
        c.goto(url)
        assert c.evaluate("talker.start(false)") == 503
        assert any("busy" in line for line in c.evaluate("talker.captions()"))
    finally:
        close(pw, context, profile)
    assert not any("spider" in x.lower() for x in caps_a) and not any("sky" in x.lower() for x in caps_b), \
        (caps_a, caps_b)
    assert wait_for(lambda: sessions(url)["sessions"] == 0, 10)


def test_the_visitors_microphone_is_heard_and_answered(server, question_wav, tmp_path):
    url, _ = server
    pw, context, profile = browser([f"--use-file-for-fake-audio-capture={question_wav}"])
    try:
        page = context.new_page()
        page.goto(url)
        assert page.evaluate("talker.start(true)") == 201
        # "capital", not "France": Whisper tiny.en on Opus-coded speech has heard "capital of
        # friends" on another CPU; the test is about the path, not the model's ear
        assert answered(page, "capital", 60), page.evaluate("talker.captions()")
        heard = [c for c in page.evaluate("talker.captions()") if c.startswith("you:")]
    finally:
        close(pw, context, profile)
    assert "what is the capital" in heard[0].lower(), heard
    assert wait_for(lambda: sessions(url)["sessions"] == 0, 10), "the closed page's session ended"


def test_bad_offers_and_a_page_closed_mid_answer_free_what_they_took(server):
    url, _ = server

    def post(body: bytes, ctype: str = "application/sdp") -> tuple[int, str]:
        req = urllib.request.Request(url + "whep", body, {"Content-Type": ctype}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    assert wait_for(lambda: sessions(url)["sessions"] == 0, 10)
    status, text = post(b"hello, I am not SDP")
    assert status == 400 and "v=0" in text
    status, text = post(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
                        b"a=rtpmap:0 PCMU/8000\r\n")
    assert status == 400 and "Opus" in text
    assert post(b"v=0", "text/plain")[0] == 415
    assert sessions(url)["sessions"] == 0, "nothing kept for a refused offer"
    pw, context, profile = browser()
    try:
        page = context.new_page()
        page.goto(url)
        assert page.evaluate("talker.start(false)") == 201
        page.evaluate("talker.ask('Tell me a long story about a dragon.')")
        assert wait_for(lambda: any(not c.startswith("you:") for c in page.evaluate("talker.captions()")[1:]), 60)
        page.close()  # mid-answer
        t0 = time.monotonic()
        assert wait_for(lambda: sessions(url)["sessions"] == 0, 10), sessions(url)
        assert time.monotonic() - t0 < 10
    finally:
        close(pw, context, profile)


def test_an_app_reachable_from_other_machines_needs_an_invite(tmp_path, monkeypatch):
    """Bound to every address (traffic stays on loopback here): no token in the environment is
    one line before anything loads; with one, a session without it is refused (401)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(portrait=PORTRAIT))
    args = [sys.executable, "-m", "talker_stream.cli", "-c", str(cfg), "serve", "--host", "0.0.0.0", "--port", "0"]
    env = {k: v for k, v in os.environ.items() if k != "TALKER_INVITE"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and "set $TALKER_INVITE to an invite token" in out.stderr, out.stderr
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**env, "TALKER_INVITE": "invite-7Qx"})  # pragma: allowlist secret - test only
    try:
        port = re.search(r":(\d+)/", proc.stdout.readline()).group(1)
        url = f"http://127.0.0.1:{port}/whep"
        for headers, expected in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                  ({"Authorization": "Bearer invite-7Qx"}, 400)):  # let in: then the SDP is judged
            req = urllib.request.Request(url, b"not sdp", {"Content-Type": "application/sdp", **headers}, method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == expected, headers
    finally:
        proc.send_signal(2)
        proc.wait(20)


def test_turn_credentials_come_from_the_environment(monkeypatch):
    """A static TURN account, or short-lived TURN REST API credentials made from a shared
    secret (username "expiry:name", password base64(HMAC-SHA1(secret, username)))."""
    import hashlib
    import hmac

    from aiortc import RTCIceTransportPolicy

    from talker_stream.config import load_settings
    from talker_stream.errors import ConfigError
    from talker_stream.server import ice

    monkeypatch.delenv("TALKER_TURN_SECRET", raising=False)
    monkeypatch.setenv("TALKER_TURN_USERNAME", "ana")
    monkeypatch.setenv("TALKER_TURN_PASSWORD", "s3cret")  # pragma: allowlist secret - test only
    s = load_settings(None, {"serve.ice_servers": ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478"]})
    stun, turn = ice.server_config(s.serve).iceServers
    assert stun.urls == "stun:127.0.0.1:3478" and stun.username is None
    assert (turn.urls, turn.username, turn.credential) == ("turn:127.0.0.1:3478", "ana", "s3cret")
    assert ice.browser_config(s.serve) == {"iceTransportPolicy": "all", "iceServers": [
        {"urls": "stun:127.0.0.1:3478"}, {"urls": "turn:127.0.0.1:3478", "username": "ana", "credential": "s3cret"}]}

    monkeypatch.setenv("TALKER_TURN_SECRET", "shared")  # pragma: allowlist secret - test only: wins over the account
    s = load_settings(None, {"serve.ice_servers": ["turn:127.0.0.1:3478"], "serve.relay_only": True,
                             "serve.turn_ttl": 600})
    t0 = time.time()
    page, server = ice.browser_config(s.serve), ice.server_config(s.serve)
    assert page["iceTransportPolicy"] == "relay" and server.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    for user, credential in ((page["iceServers"][0]["username"], page["iceServers"][0]["credential"]),
                             (server.iceServers[0].username, server.iceServers[0].credential)):
        expiry, name = user.split(":", 1)
        assert t0 + 600 <= int(expiry) + 1 <= time.time() + 601 and re.fullmatch(r"talker-(page|server)-[0-9a-f]{8}", name)
        assert credential == base64.b64encode(hmac.new(b"shared", user.encode(), hashlib.sha1).digest()).decode()
    assert ice.rest_credentials("shared", "x", 60, now=1000) == ("1060:x", "Q5xxpvm8DdJXQ30QCGdpZjxa/sE=")  # openssl dgst -sha1 -hmac
    assert "shared" not in ice.describe(s.serve) and "TALKER_TURN_SECRET" in ice.describe(s.serve)
    monkeypatch.delenv("TALKER_TURN_SECRET")
    monkeypatch.delenv("TALKER_TURN_USERNAME")
    with pytest.raises(ConfigError, match="relay_only = true needs TURN credentials"):
        ice.check_credentials(s.serve)


TURN_SECRET = "coturn-shared-secret-4Hq"  # pragma: allowlist secret - test only
TURN_CONFIG = CONFIG + """ice_servers = ["turn:127.0.0.1:{port}?transport=udp"]
relay_only = true
turn_ttl = 600
"""


def free_port() -> int:
    """A loopback port free for both UDP and TCP (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def coturn(folder: Path, port: int, secret: str):
    """Debian's coturn on loopback with the TURN REST API (use-auth-secret): relays on 127.0.0.1
    (loopback peers allowed: both ends relay here), no TLS, no CLI; its verbose log is returned."""
    log = folder / f"turn-{secret[:6]}.log"
    proc = subprocess.Popen(["turnserver", "-n", f"--listening-port={port}", "--listening-ip=127.0.0.1",
                             "--relay-ip=127.0.0.1", "--use-auth-secret", f"--static-auth-secret={secret}",
                             "--realm=talker.test", "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli",
                             "--log-file=stdout", "--simple-log", "--verbose", f"--pidfile={folder}/turn.pid",
                             f"--db={folder}/turndb"], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: proc.poll() is not None or "Total General servers" in log.read_text(), 15, 0.1)
        assert proc.poll() is None, log.read_text()[-3000:]
        yield log
    finally:
        end(proc, seconds=10)


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory):
    """`talker-stream serve` relaying only through a TURN server on a fixed loopback port, with
    the TURN REST secret in its environment (each test starts coturn there itself)."""
    folder = tmp_path_factory.mktemp("serve-turn")
    port = free_port()
    env = {**os.environ, "TALKER_TURN_SECRET": TURN_SECRET}
    with serving(folder, TURN_CONFIG.format(portrait=PORTRAIT, port=port), env, verbose=True) as (url, log):
        yield url, log, port, folder


@requires(shutil.which("turnserver"), "coturn is not installed (apt-get install coturn)")
def test_media_flows_through_a_real_turn_server_with_short_lived_credentials(turn_server, tmp_path):
    """relay_only: the page and the server both use relay candidates from coturn, whose
    credentials come from the shared secret; the answer is seen and heard through it."""
    url, serve_log, port, folder = turn_server
    with coturn(folder, port, TURN_SECRET) as turn_log:
        pw, context, profile = browser()
        try:
            page = context.new_page()
            page.goto(url)
            config = page.evaluate("fetch('/ice').then((r) => r.json())")
            assert config["iceTransportPolicy"] == "relay", config
            assert re.fullmatch(r"\d+:talker-page-[0-9a-f]{8}", config["iceServers"][0]["username"]), config
            assert page.evaluate("talker.start(false)") == 201, page.evaluate("talker.captions()")
            assert wait_for(lambda: page.evaluate("document.getElementById('avatar').videoWidth") > 0, 30), \
                "video arrives at the browser through the relay"
            page.evaluate("talker.record()")
            time.sleep(1.0)
            assert page.evaluate("talker.ask('What is the capital of France?')") == 200
            assert answered(page, "france", 60), page.evaluate("talker.captions()")
            path = page.evaluate("talker.path()")
            recording = received(page, tmp_path, "relayed")
        finally:
            close(pw, context, profile)
        assert path and path["local"] == "relay" and path["remote"] == "relay", path
        assert path["bytesReceived"] > 100_000, path
        assert wait_for(lambda: sessions(url)["sessions"] == 0, 10), "closing the page ended its session"
        # the server's allocation ends with the session; coturn then says what it relayed to the page
        usage = (r"session \w+: peer usage: realm=<talker\.test>, username=<\d+:talker-server-[0-9a-f]{8}>, "
                 r"rp=\d+, rb=\d+, sp=\d+, sb=(\d+)")
        assert wait_for(lambda: re.search(usage, turn_log.read_text()), 15, 0.2), turn_log.read_text()[-3000:]
        text = turn_log.read_text()
    assert re.search(r"user <\d+:talker-server-[0-9a-f]{8}>: incoming packet ALLOCATE processed, success", text)
    allocated = re.search(r"user <(\d+):talker-page-[0-9a-f]{8}>: incoming packet ALLOCATE processed, success", text)
    assert allocated and time.time() < int(allocated.group(1)) <= time.time() + 600, "short-lived: [serve] turn_ttl"
    relayed = max(int(m.group(1)) for m in re.finditer(usage, text))
    assert relayed > 100_000, f"the server's media went through coturn: {relayed} bytes"
    words = heard_words(recording)
    assert len(words.split()) >= 3, f"the answer was heard through the relay: {words!r}"
    log = serve_log.read_text()
    assert "relay only" in log and TURN_SECRET not in log and config["iceServers"][0]["credential"] not in log


@requires(shutil.which("turnserver"), "coturn is not installed (apt-get install coturn)")
def test_a_wrong_turn_secret_is_a_clear_failure_not_a_frozen_page(turn_server):
    """The TURN server's secret changed under the app: the page says the TURN server gave
    no relay address, the server refuses such an offer itself, and nothing is kept."""
    url, _, port, folder = turn_server
    with coturn(folder, port, "another-secret-9Zp") as turn_log:  # pragma: allowlist secret - test only
        pw, context, profile = browser()
        try:
            page = context.new_page()
            page.goto(url)
            t0 = time.monotonic()
            assert page.evaluate("talker.start(false)") != 201
            assert time.monotonic() - t0 < 15
            note = page.evaluate("talker.captions()")[-1]
            assert "TURN server gave no relay address" in note and "401" in note, note
            # an offer that skips the page's check (any WHEP player): the server's own relay fails
            status, text = page.evaluate("""(async () => {
                const pc = new RTCPeerConnection();
                pc.addTransceiver("video", { direction: "recvonly" });
                await pc.setLocalDescription(await pc.createOffer());
                const r = await fetch("/whep", { method: "POST", headers: { "Content-Type": "application/sdp" },
                                                body: pc.localDescription.sdp });
                pc.close(); return [r.status, await r.text()]; })()""")
            assert status == 502 and "TURN server gave no relay address" in text, (status, text)
        finally:
            close(pw, context, profile)
        assert "error 401" in turn_log.read_text()
    assert sessions(url)["sessions"] == 0


def test_the_operator_hears_the_avatar_on_the_live_control_page(tmp_path):
    """`talker-stream live`'s control page: its preview is the WebRTC stream, sound included."""
    import json

    from conftest import make_settings
    from talker_stream.live import LiveAvatar
    from talker_stream.server import ControlServer

    avatar = LiveAvatar(make_settings(**{"live.sinks": []}), []).start()
    server = ControlServer(avatar, None, host="127.0.0.1", port=0, token="op-token-1").start()
    pw, context, profile = browser()
    try:
        page = context.new_page()
        page.goto(server.url)
        page.wait_for_function("window.previewSize()[0] > 0", timeout=20000)
        assert page.evaluate("document.getElementById('preview').tagName") == "VIDEO"
        page.evaluate("(() => { const v = document.getElementById('preview'); v.muted = false; return v.play(); })()")
        page.wait_for_function("document.getElementById('preview').srcObject.getAudioTracks().length > 0")
        page.evaluate("""(() => { window.rec = []; const r = new MediaRecorder(
            new MediaStream(document.getElementById('preview').srcObject.getAudioTracks()),
            { mimeType: 'audio/webm;codecs=opus' }); r.ondataavailable = (e) => e.data.size && window.rec.push(e.data);
            r.start(500); window.recorder = r; })()""")
        req = urllib.request.Request(server.url + "api/say", json.dumps({"text": "The weather is lovely today."}).encode(),
                                     {"Content-Type": "application/json", "Authorization": "Bearer op-token-1"})
        assert urllib.request.urlopen(req, timeout=10).status == 202
        time.sleep(5)
        data = base64.b64decode(page.evaluate("""(async () => { await new Promise((ok) => { window.recorder.onstop = ok;
            window.recorder.stop(); }); const b = new Uint8Array(await new Blob(window.rec).arrayBuffer());
            let s = ''; for (let i = 0; i < b.length; i += 32768) s += String.fromCharCode(...b.subarray(i, i + 32768));
            return btoa(s); })()"""))
        assert server._whep.viewers == 1
        page.close()
        assert wait_for(lambda: server._whep.viewers == 0 and len(avatar.runners) == 0, 10), "the viewer's sink left"
    finally:
        close(pw, context, profile)
        server.stop()
        avatar.stop()
    path = tmp_path / "operator.webm"
    path.write_bytes(data)
    words = heard_words(path)
    # two of the three words at least: on a busy machine the first word's start can be lost
    # while the connection ramps up ("what is lovely today?")
    found = [bool(re.search(r"\b(weather|water)\b", words)), "lovely" in words, "today" in words]
    assert sum(found) >= 2, words
