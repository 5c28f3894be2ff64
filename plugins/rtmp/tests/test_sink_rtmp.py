"""The RTMP sink against a real nginx + rtmp module, started here on a free 127.0.0.1 port.

nginx records every publish (`record all`) into a private temp folder; the tests read
those recordings back with PyAV and measure lip-sync on the decoded pictures and sound.
Real Piper voice, real mesh animator, real x264/AAC over real RTMP. The one fake is a
broken remote ingest (a TCP listener that never answers), in the stall test.
"""
from __future__ import annotations

import logging
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SIX_SECONDS, make_settings, requires
from services import HAVE_NGINX, RtmpServer, free_port

needs_nginx = requires(HAVE_NGINX, "needs Debian packages nginx and libnginx-mod-rtmp")
FRAME_S = 0.04  # one frame at the default 25 fps


@pytest.fixture
def rtmp_server():
    root = Path(tempfile.mkdtemp(prefix="talker-rtmp-"))
    server = RtmpServer(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stream_key(monkeypatch) -> str:
    key = "live_" + secrets.token_hex(10)
    monkeypatch.setenv("RTMP_STREAM_KEY", key)
    return key


def rtmp_avatar(url: str, **options):
    """A LiveAvatar whose only sink is rtmp, built the way the CLI builds it (config + registry)."""
    from talker_stream.live import LiveAvatar
    from talker_stream.outputs import open_sinks

    settings = make_settings(**{"live.sinks": ["rtmp"], "sinks.rtmp.url": url,
                                **{f"sinks.rtmp.{k}": v for k, v in options.items()}})
    sinks = open_sinks(settings)
    return LiveAvatar(settings, sinks), sinks[0]


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def finished_recording(path: Path) -> Path:
    """nginx closes the recording when the publisher leaves; wait until its size settles."""
    wait_for(path.exists, 5, f"the recording {path.name}")

    def settled() -> bool:
        size = path.stat().st_size
        time.sleep(0.3)
        return size > 0 and size == path.stat().st_size

    wait_for(settled, 5, f"the recording {path.name} to settle")
    return path


def live_pull(url: str, seconds: float, out: dict) -> None:
    """A viewer: play the stream over RTMP while it is being pushed; count packets per codec."""
    import av

    try:
        with av.open(url, timeout=5) as c:
            end = time.monotonic() + seconds
            for packet in c.demux():
                if packet.size:
                    name = packet.stream.codec_context.name
                    out[name] = out.get(name, 0) + 1
                if time.monotonic() > end:
                    break
    except Exception as exc:  # noqa: BLE001 - reported by the assertion in the test
        out["error"] = type(exc).__name__


def assert_secret_not_shown(key: str, caplog, capfd) -> None:
    captured = capfd.readouterr()
    assert key not in caplog.text and key not in captured.out and key not in captured.err, \
        "the stream key must never appear in logs or output"


def test_redacts_the_key_and_backs_off_when_nothing_listens(stream_key, caplog, capfd):
    """No server on the port: one warning (key shown as ****), slots dropped, writes never block."""
    from talker_stream_rtmp import Options, RtmpSink

    from talker_stream.speech.clock import MediaClock
    from talker_stream.errors import TalkerError
    from talker_stream.frames import OutFrame

    assert RtmpSink.check() is None, "PyAV from PyPI ships libx264, aac and the flv muxer"
    caplog.set_level(logging.DEBUG)
    clock = MediaClock(48000, 25)
    sink = RtmpSink(Options(url=f"rtmp://127.0.0.1:{free_port()}/live", reconnect_seconds=0.5))
    sink.open((64, 64), clock)
    image = np.zeros((64, 64, 3), np.uint8)
    slowest, k = 0.0, 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (sink.state == "down" and sink.skipped >= 10):
        t = time.monotonic()
        sink.write(OutFrame(k, clock.frame_start(k), image, np.zeros(1920, np.float32)))
        slowest = max(slowest, time.monotonic() - t)
        k += 1
        time.sleep(0.04)
    assert sink.state == "down" and sink.connects == 0 and sink.skipped >= 10, (sink.state, sink.skipped)
    assert slowest < 0.25, f"a write took {slowest:.3f} s: a dead ingest must not block the sink thread"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot connect to" in warnings[0] and "/live/****" in warnings[0], warnings
    retry_deadline = time.monotonic() + 20  # past the backoff the sink tries again, and fails quietly
    while time.monotonic() < retry_deadline and not any("still cannot reach" in r.getMessage() for r in caplog.records):
        sink.write(OutFrame(k, clock.frame_start(k), image, np.zeros(1920, np.float32)))
        k += 1
        time.sleep(0.04)
    assert any("still cannot reach" in r.getMessage() for r in caplog.records)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1, "one line per state change"
    sink.close()
    assert sink.relay is None and sink.state == "closed"

    bad = RtmpSink(Options(url=f"http://user:pw@example.invalid/{stream_key}"))
    with pytest.raises(TalkerError) as err:
        bad.open((64, 64), clock)
    assert "rtmp://" in str(err.value) and stream_key not in str(err.value) and "pw@" not in str(err.value)
    assert_secret_not_shown(stream_key, caplog, capfd)


def test_unset_key_pushes_to_the_url_as_given_and_says_so_once(monkeypatch, caplog):
    from talker_stream_rtmp import Options, RtmpSink

    from talker_stream.speech.clock import MediaClock

    monkeypatch.delenv("TALKER_TEST_NO_SUCH_KEY", raising=False)
    caplog.set_level(logging.INFO)
    sink = RtmpSink(Options(url="rtmp://127.0.0.1:1/live/", key_env="TALKER_TEST_NO_SUCH_KEY"))
    assert sink.target == "rtmp://127.0.0.1:1/live"
    sink.open((64, 64), MediaClock(48000, 25))
    lines = [r.getMessage() for r in caplog.records if "TALKER_TEST_NO_SUCH_KEY is not set" in r.getMessage()]
    assert len(lines) == 1


@pytest.mark.services
@needs_nginx
def test_pushes_lip_synced_h264_and_aac(rtmp_server, stream_key, caplog, capfd):
    from talker_stream.face.lipsync import measure_file
    from talker_stream.outputs.encoder import probe

    caplog.set_level(logging.DEBUG)
    rec = rtmp_server.start("rec")
    avatar, sink = rtmp_avatar(rtmp_server.url)
    pulled: dict = {}
    viewer = threading.Thread(target=live_pull, args=(f"{rtmp_server.url}/{stream_key}", 3.0, pulled))
    avatar.start()
    avatar.say(SIX_SECONDS)
    try:
        wait_for(lambda: sink.state == "streaming", 10, "the first publish")
        viewer.start()
        time.sleep(8.0)
    finally:
        avatar.stop()
        viewer.join(10)

    assert pulled.get("h264", 0) > 10 and pulled.get("aac", 0) > 10, f"live pull got {pulled}"
    assert sink.connects == 1 and sink.skipped == 0
    flv = finished_recording(rec / f"{stream_key}.flv")
    info = probe(flv)
    v, a = info["video"], info["audio"]
    assert v["codec"] == "h264" and a["codec"] == "aac"
    v_len, a_len = v["end"] - v["first_pts"], a["end"] - a["first_pts"]
    assert v_len > 7.0, f"about 8 s were pushed, the recording holds {v_len:.2f} s"
    assert abs(v_len - a_len) <= FRAME_S, f"video {v_len:.3f} s vs audio {a_len:.3f} s"
    assert abs(v["end"] - a["end"]) <= FRAME_S
    report = measure_file(flv)
    assert abs(report.lag_frames) <= 1 and report.correlation > 0.4, (report.lag_frames, report.correlation)
    assert any("streaming to" in r.getMessage() and "/live/****" in r.getMessage() for r in caplog.records)
    assert_secret_not_shown(stream_key, caplog, capfd)


@pytest.mark.services
@needs_nginx
def test_reconnects_after_the_server_restarts_without_slowing_the_avatar(rtmp_server, stream_key, caplog, capfd):
    from talker_stream.outputs.encoder import probe

    caplog.set_level(logging.DEBUG)
    rec1 = rtmp_server.start("rec1")
    avatar, sink = rtmp_avatar(rtmp_server.url, reconnect_seconds=0.5)
    avatar.start()
    avatar.say(SIX_SECONDS + " " + SIX_SECONDS)
    try:
        wait_for(lambda: sink.state == "streaming", 10, "the first publish")
        time.sleep(2.5)
        rtmp_server.stop()
        wait_for(lambda: sink.state == "down", 5, "the sink to notice the server is gone")
        time.sleep(2.0)  # still down: the sink drops slots and retries on its backoff
        fps_while_down = avatar.stats()["fps"]
        skipped_while_down = sink.skipped
        rec2 = rtmp_server.start("rec2")
        wait_for(lambda: sink.connects >= 2, 10, "the sink to reconnect")
        time.sleep(3.0)
        stats = avatar.stats()
    finally:
        avatar.stop()

    target = stats["target_fps"]
    assert fps_while_down >= 0.9 * target, f"the frame loop ran at {fps_while_down} fps while the ingest was down"
    assert stats["frames"] >= 0.95 * target * stats["uptime_s"] and stats["resyncs"] == 0, stats
    runner = stats["sinks"][0]
    assert runner["lost"] == 0 and runner["errors"] == 0, runner
    assert sink.connects == 2 and skipped_while_down > 0
    before = probe(finished_recording(rec1 / f"{stream_key}.flv"))
    after = probe(finished_recording(rec2 / f"{stream_key}.flv"))
    assert before["video"]["end"] > 2.0
    assert after["video"]["codec"] == "h264" and after["audio"]["codec"] == "aac"
    assert after["video"]["end"] > 2.5 and after["audio"]["end"] > 2.5, after
    # a new publish starts its own timeline at zero, audio and video together
    assert after["video"]["first_pts"] < 0.1 and abs(after["video"]["end"] - after["audio"]["end"]) <= FRAME_S
    messages = [r.getMessage() for r in caplog.records if r.name == "talker_stream_rtmp"]
    assert sum("lost the connection" in m for m in messages) == 1, messages
    assert sum("reconnected to" in m for m in messages) == 1, messages
    assert_secret_not_shown(stream_key, caplog, capfd)


@pytest.fixture
def silent_ingest():
    """A fake of a broken remote ingest: it accepts TCP connections and never says a word."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"rtmp://127.0.0.1:{srv.getsockname()[1]}/live", accepted
    stop.set()
    t.join(2)
    for c in accepted:
        c.close()
    srv.close()


def test_a_silent_ingest_is_dropped_and_never_stalls_the_avatar(silent_ingest, stream_key, caplog, capfd):
    """PyAV connects holding the GIL with no time limit: done in-process, this froze every thread."""
    url, accepted = silent_ingest
    caplog.set_level(logging.DEBUG)
    avatar, sink = rtmp_avatar(url, stall_seconds=1.0, reconnect_seconds=0.5)
    avatar.start()
    avatar.say(SIX_SECONDS)
    try:
        wait_for(lambda: sink.state == "down", 15, "the sink to give up on the silent ingest")
        time.sleep(2.5)  # down, then retrying on the backoff
        stats = avatar.stats()
    finally:
        avatar.stop()
    assert accepted, "the sink did reach the (silent) ingest"
    assert any("no answer from the ingest for 1 s" in r.getMessage() for r in caplog.records)
    assert sink.connects == 0 and sink.skipped > 0
    assert stats["fps"] >= 0.9 * stats["target_fps"], stats
    assert stats["frames"] >= 0.95 * stats["target_fps"] * stats["uptime_s"] and stats["resyncs"] == 0, stats
    assert sink.relay is None, "the stuck relay process was ended"
    assert_secret_not_shown(stream_key, caplog, capfd)
