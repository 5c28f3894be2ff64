"""The OBS sink against a real OBS Studio (28+, with its websocket server) under a private Xvfb.

Nothing is faked: the test starts Xvfb and OBS itself (private config folder, random
password and ports, a 640x360 canvas to keep OBS's CPU low), runs the live avatar with the
obs sink, and reads back through OBS's own websocket what OBS built and shows. Then it
kills OBS, wipes OBS's saved scene collection (so only the sink can bring the scene
back), starts OBS again and checks the sink restored everything and still drives it.
obs-websocket 5 has no bind-address setting, so for the test's life OBS's websocket also
listens beyond 127.0.0.1, behind a random password; the feed itself stays on 127.0.0.1.

The other tests need no OBS: the feed read back from its UDP port, and the caption text.
"""
from __future__ import annotations

import base64
import io
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PORTRAIT, make_settings, requires

needs_obs = requires(shutil.which("obs") and shutil.which("Xvfb"), "needs obs-studio and xvfb (apt-get install obs-studio xvfb)")

FIRST = "Hello from the studio, this sentence should appear as the caption in OBS."
SECOND = "I am back on the air after the restart, and the caption follows me."
SCENE = "talker-test"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate, timeout: float, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value is not None and value is not False:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def xvfb():
    """A private X display: OBS needs one even when nobody looks at it."""
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    os.close(w)
    try:
        assert select.select([r], [], [], 15)[0], "Xvfb did not report its display"
        display = os.read(r, 32).decode().strip()
        assert display.isdigit(), display
        yield f":{display}"
    finally:
        os.close(r)
        proc.terminate()
        proc.wait(10)


class Obs:
    """One OBS Studio process on a private config folder; start, stop (SIGTERM) and start again."""

    def __init__(self, home: Path, display: str) -> None:
        self.home, self.display = home, display
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        cfg = home / "obs-studio"
        (cfg / "basic" / "profiles" / "Untitled").mkdir(parents=True)
        (cfg / "global.ini").write_text(
            "[General]\nEnableAutoUpdates=false\n"
            f"[OBSWebSocket]\nServerEnabled=true\nServerPort={self.port}\nAuthRequired=true\n"
            f"ServerPassword={self.password}\n")
        (cfg / "basic" / "profiles" / "Untitled" / "basic.ini").write_text(
            "[General]\nName=Untitled\n[Video]\nBaseCX=640\nBaseCY=360\nOutputCX=640\nOutputCY=360\n"
            "FPSType=1\nFPSInt=25\n")
        self.scenes = cfg / "basic" / "scenes"
        self.proc: subprocess.Popen | None = None
        self.log = open(home / "obs.log", "ab")

    def start(self) -> float:
        # not QT_*: importing cv2 points Qt at opencv's own plugins, and OBS then fails to start
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
        env |= {"DISPLAY": self.display, "XDG_CONFIG_HOME": str(self.home)}
        t0 = time.monotonic()
        self.proc = subprocess.Popen(["obs", "--minimize-to-tray", "--multi"], env=env, cwd=self.home,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

        def accepting() -> bool:
            assert self.proc.poll() is None, f"OBS exited: see {self.home / 'obs.log'}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for("OBS's websocket port", accepting, 30, 0.1)
        return time.monotonic() - t0

    def stop(self) -> float:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()

    def client(self):
        import obsws_python

        return obsws_python.ReqClient(host="127.0.0.1", port=self.port, password=self.password, timeout=5)

    def meters(self, input_name: str) -> tuple[object, list[tuple[float, float]]]:
        """OBS's own audio meter of one input: (event client, [(time, peak)...]), about 20 a second."""
        import obsws_python

        peaks: list[tuple[float, float]] = []

        def on_input_volume_meters(data) -> None:
            for i in data.inputs:
                if i["inputName"] == input_name:
                    peaks.append((time.monotonic(), max((ch[1] for ch in i["inputLevelsMul"]), default=0.0)))

        events = obsws_python.EventClient(host="127.0.0.1", port=self.port, password=self.password,
                                          subs=obsws_python.Subs.INPUTVOLUMEMETERS)
        events.callback.register(on_input_volume_meters)
        return events, peaks


@pytest.fixture
def obs(tmp_path, xvfb):
    o = Obs(tmp_path / "xdg", xvfb)
    try:
        yield o
    finally:
        o.kill()
        shutil.rmtree(o.home / "obs-studio", ignore_errors=True)  # keep obs.log, drop the config


def req(client, kind: str, data: dict | None = None) -> dict | None:
    """A request that may fail without obsws-python logging a traceback; None when it failed."""
    r = client.base_client.req(kind, data)
    return r.get("responseData", {}) if r["requestStatus"]["result"] else None


def built(client) -> bool:
    """The sink's scene, with both inputs as its items, is OBS's program scene."""
    scenes = req(client, "GetSceneList")
    if not scenes or scenes["currentProgramSceneName"] != SCENE:
        return False
    inputs = {i["inputName"]: i["inputKind"] for i in req(client, "GetInputList")["inputs"]}
    items = {i["sourceName"] for i in req(client, "GetSceneItemList", {"sceneName": SCENE})["sceneItems"]}
    return (inputs.get("talker avatar") == "ffmpeg_source" and inputs.get("talker caption") == "text_ft2_source_v2"
            and {"talker avatar", "talker caption"} <= items)


def small(image: np.ndarray, size: int = 64) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image[..., :3]).resize((size, size), Image.BILINEAR), dtype=np.float32)


def avatar_shot(client) -> np.ndarray | None:
    """What OBS shows of the avatar input, or None while it has no frame yet."""
    from PIL import Image

    shot = req(client, "GetSourceScreenshot", {"sourceName": "talker avatar", "imageFormat": "png",
                                               "imageWidth": 176, "imageHeight": 176})
    if not shot:
        return None
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["imageData"].split(",", 1)[1]))).convert("RGB"))
    return image if image.mean() > 10 else None  # black: no frame decoded yet


def assert_shows_avatar(shot: np.ndarray, portrait: np.ndarray) -> dict:
    """OBS's picture is our portrait: the centre (the face) correlates, and it is far closer to
    the portrait than to the same portrait upside down (same colours, wrong picture)."""
    a, b = small(shot), small(portrait)
    c = slice(12, 52)  # the central face region; the avatar moves a little (head motion, blinks)
    corr = float(np.corrcoef(a[c, c].mean(2).ravel(), b[c, c].mean(2).ravel())[0, 1])
    mad = float(np.abs(a - b).mean())
    mad_other = float(np.abs(a - b[::-1]).mean())
    numbers = {"corr": round(corr, 3), "mad": round(mad, 1), "mad_flipped": round(mad_other, 1)}
    assert corr > 0.85, numbers
    assert mad < 0.5 * mad_other, numbers
    return numbers


def wait_caption(client, expected: str, timeout: float = 20) -> None:
    seen = []

    def shows() -> bool:
        text = req(client, "GetInputSettings", {"inputName": "talker caption"})["inputSettings"].get("text", "")
        if not seen or seen[-1] != text:
            seen.append(text)
        return text == expected

    try:
        wait_for("the caption", shows, timeout, 0.1)
    except AssertionError:
        raise AssertionError(f"caption never read {expected!r}; OBS showed {seen!r}") from None


@pytest.mark.services
@needs_obs
def test_obs_scene_feed_caption_and_restart(obs, monkeypatch, caplog):
    from talker_stream.live import LiveAvatar
    from talker_stream.face.portrait import load_portrait
    from talker_stream_obs import ObsOptions, ObsSink

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("TEST_OBS_PW", obs.password)
    started = obs.start()
    options = ObsOptions(port=obs.port, password_env="TEST_OBS_PW", scene=SCENE,
                         feed_port=free_port(socket.SOCK_DGRAM), reconnect_seconds=0.5)
    sink = ObsSink(options)
    avatar = LiveAvatar(make_settings(**{"live.sinks": []}), [sink])
    portrait = load_portrait(PORTRAIT)
    client = obs.client()
    try:
        avatar.start()
        wait_for("the sink to build its scene", lambda: built(client), 15)
        t_feed = time.monotonic()
        first = assert_shows_avatar(wait_for("OBS to show the feed", lambda: avatar_shot(client), 15), portrait)
        first_frame_s = time.monotonic() - t_feed

        events, peaks = obs.meters("talker avatar")
        time.sleep(0.5)
        said_at = time.monotonic()
        utterance = avatar.say(FIRST, question="alice: are you there?")
        wait_caption(client, f"alice asks: are you there?\n{FIRST}")
        heard_at = wait_for("OBS to hear the voice", lambda: next((t for t, p in peaks if t > said_at and p > 0.05),
                                                                  None), 10, 0.05)
        events.disconnect()
        idle = max((p for t, p in peaks if t < said_at), default=None)
        assert idle is not None and idle < 0.005, f"OBS's meter before speech: {idle}"
        voice_lag = heard_at - avatar.runners[0].first_frame_at[utterance]
        caption = req(client, "GetInputSettings", {"inputName": "talker caption"})["inputSettings"]
        assert caption["font"]["face"] == "DejaVu Sans"
        feed = req(client, "GetInputSettings", {"inputName": "talker avatar"})["inputSettings"]
        assert feed["input"] == f"udp://127.0.0.1:{options.feed_port}" and feed["is_local_file"] is False

        # OBS goes away; its saved scenes go too, so whatever comes back was rebuilt by the sink
        client.disconnect()
        stopped = obs.stop()
        wait_for("the sink to notice", lambda: sink.state != "connected", 10)
        shutil.rmtree(obs.scenes, ignore_errors=True)
        assert not obs.scenes.exists()
        written = avatar.runners[0].written
        time.sleep(1.0)
        assert avatar.runners[0].written > written + 15, "the feed must keep encoding while OBS is down"
        t_restart = time.monotonic()
        restarted = obs.start()
        client = obs.client()
        wait_for("the sink to rebuild the scene", lambda: sink.connects == 2 and built(client), 30)
        rebuilt_s = time.monotonic() - t_restart
        again = assert_shows_avatar(wait_for("the feed after the restart", lambda: avatar_shot(client), 15), portrait)
        avatar.say(SECOND)
        wait_caption(client, SECOND)
        stats = avatar.stats()["sinks"][0]
    finally:
        avatar.stop()
        client.disconnect()
    assert stats["errors"] == 0, stats

    lines = [r.getMessage() for r in caplog.records if r.name == "talker_stream_obs.sink"]
    assert [m.split(" OBS at")[0] for m in lines] == ["obs: connected to", "obs: lost", "obs: reconnected to"], \
        "\n".join(lines)
    assert obs.password not in caplog.text, "the websocket password must never be logged"
    print(f"\nOBS port open in {started:.1f} s / {restarted:.1f} s, exit on SIGTERM {stopped:.1f} s; first frame "
          f"in OBS {first_frame_s:.1f} s; scene rebuilt {rebuilt_s:.1f} s after restart; pixels {first} / {again}; "
          f"OBS hears the voice {voice_lag:.2f} s after the sink wrote it")


def test_feed_is_mpegts_on_one_clock_while_obs_is_absent(tmp_path, caplog):
    """No OBS at all: the sink still sends the feed (read back here from the UDP port and
    demuxed), retries quietly (one log line, no obsws-python tracebacks) and never blocks."""
    import threading

    from talker_stream.speech.clock import MediaClock
    from talker_stream.face.portrait import load_portrait
    from talker_stream.frames import OutFrame
    from talker_stream.outputs.encoder import probe
    from talker_stream_obs import ObsOptions, ObsSink

    caplog.set_level(logging.DEBUG)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.2)
    datagrams: list[bytes] = []
    done = threading.Event()

    def receive() -> None:
        while True:
            try:
                datagrams.append(rx.recv(65536))
            except TimeoutError:
                if done.is_set():
                    return

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    clock = MediaClock(48000, 25)
    image = load_portrait(PORTRAIT)
    sink = ObsSink(ObsOptions(port=free_port(), feed_port=rx.getsockname()[1], reconnect_seconds=0.1))
    sink.open((image.shape[1], image.shape[0]), clock)
    t = np.arange(clock.frame_start(75)) / clock.sample_rate
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    t0 = time.monotonic()
    for k in range(75):  # three seconds, written as fast as the encoder takes them
        a, b = clock.frame_window(k)
        sink.write(OutFrame(k, a, None if k % 5 == 4 else image, audio[a:b], caption="hi" if k > 30 else ""))
    write_s = time.monotonic() - t0
    time.sleep(0.6)  # several reconnect periods
    sink.close()
    done.set()
    reader.join(3)
    rx.close()

    sizes = {len(d) for d in datagrams}
    assert datagrams and max(sizes) == 1316 and all(n % 188 == 0 for n in sizes), sizes  # whole TS packets
    assert all(d[0] == 0x47 for d in datagrams), "each datagram starts on a TS sync byte"
    ts = tmp_path / "feed.ts"
    ts.write_bytes(b"".join(datagrams))
    info = probe(ts)
    assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "aac", info
    assert info["video"]["count"] == 60, info  # every fifth picture was dropped: held, not sent
    import av

    with av.open(str(ts)) as c:  # a keyframe every 0.5 s: where OBS can start, and what bounds its delay
        keys = [p.pts for p in c.demux(video=0) if p.pts is not None and p.is_keyframe]
    assert len(keys) >= 5 and max(np.diff(keys)) <= 0.5 * 90000 * 5 / 4, keys  # 12 frames, some held
    # one clock: frame 0 and sample 0 coincide; the muxer shifts both by the AAC priming (1024 samples)
    assert abs(info["video"]["first_pts"] - info["audio"]["first_pts"] - 1024 / 48000) < 0.001, info
    assert 3.0 <= info["audio"]["end"] - info["audio"]["first_pts"] <= 3.0 + 2048 / 48000, info
    lines = [r.getMessage() for r in caplog.records if r.name == "talker_stream_obs.sink"]
    assert len(lines) == 1 and "waiting for OBS" in lines[0], lines
    assert not [r for r in caplog.records if r.name.startswith("obsws_python")], "no connect attempt, no traceback"
    assert sink.state == "waiting" and sink.connects == 0
    assert write_s < 3.0, f"writing 3 s of feed took {write_s:.1f} s"


@pytest.mark.parametrize("caption,question,shown", [
    ("Hello.", "", "Hello."),
    ("Hello.", "alice: are you there?", "alice asks: are you there?\nHello."),
    ("Hello.", "bob asks: why?", "bob asks: why?\nHello."),
    ("Yes.", "is   it   raining?", "Asked: is it raining?\nYes."),
    ("", "", ""),
])
def test_caption_text(caption, question, shown):
    from talker_stream_obs.scene import caption_text

    assert caption_text(caption, question) == shown
