"""The virtualcam sink, live: a webcam that keeps 25 fps and a microphone that carries the voice.

There is no v4l2loopback kernel module on the test machines, so the webcam side runs the
real pyvirtualcam ``Camera`` (shape and dtype checks included) against a backend that this
file registers through ``pyvirtualcam.register_backend``: it replaces only the kernel device,
and records what would have been written to /dev/videoN. The microphone side is not faked:
the test starts a private PulseAudio daemon, the sink creates its null sink there, and
``parec`` records the monitor source the way a meeting app would.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PORTRAIT, SIX_SECONDS, make_settings, need, need_module
from services import PulseAudio

pyvirtualcam = need_module("pyvirtualcam", "pip install -e plugins/virtualcam")
from talker_stream.errors import EngineUnavailable  # noqa: E402
from talker_stream.live import LiveAvatar  # noqa: E402
from talker_stream_virtualcam import Options, VirtualCamSink  # noqa: E402

pytestmark = pytest.mark.services

FPS = 25
KILL_AFTER_S = 4.0  # the microphone test kills pacat this long after the avatar started
RETRY_PLUS = 3.0  # the sink starts pacat again 2 s after it died; a second of slack
SIDE = 352  # the sample portrait
_names = itertools.count()
SPEECH = [SIX_SECONDS, "The camera keeps its rate while I talk, and my voice goes to the virtual microphone."]


class RecordingBackend:
    """A pyvirtualcam backend in place of the v4l2loopback device: it records every send."""

    opened: list[dict] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw) -> None:
        self.args = {"width": width, "height": height, "fps": fps, "fourcc": fourcc, "device": device}
        self.sends: list[tuple[float, tuple, np.dtype, np.ndarray | None, int]] = []
        self.closed = False
        type(self).opened.append({"backend": self, **self.args})

    def send(self, frame: np.ndarray) -> None:
        keep = frame.copy() if len(self.sends) < 3 else None  # a few pictures to check the colours
        self.sends.append((time.monotonic(), frame.shape, frame.dtype, keep, int(frame[0])))

    def close(self) -> None:
        self.closed = True

    def device(self) -> str:
        return self.args["device"] or "test-camera"

    def native_fourcc(self) -> int | None:
        return None


class SpeakingLog(VirtualCamSink):
    """The real sink, noting for each slot when it was made and arrived, and what it held."""

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self.slots: list[tuple[float, float, bool, bool, np.ndarray]] = []  # arrived, made, speaking, held, audio

    def write(self, frame) -> None:
        self.slots.append((time.monotonic(), frame.made_at, frame.speaking, frame.image is None, frame.audio))
        super().write(frame)

    def close(self) -> None:
        self.mic_restarts = self.mic.restarts if self.mic is not None else 0
        super().close()


def register_backend() -> str:
    name = f"test-recording-{os.getpid()}-{next(_names)}"
    pyvirtualcam.register_backend(name, RecordingBackend)
    return name


def run_avatar(sink: VirtualCamSink, seconds: float, during=None) -> LiveAvatar:
    """Run a LiveAvatar into *sink* for *seconds* while it speaks SPEECH."""
    settings = make_settings(**{"live.sinks": []})
    live = LiveAvatar(settings, [sink])
    live.start()
    try:
        for text in SPEECH:
            live.say(text)
        t_end = time.monotonic() + seconds
        if during is not None:
            during(live)
        while time.monotonic() < t_end:
            time.sleep(0.1)
    finally:
        live.stop()
    return live


def test_webcam_gets_rgb_frames_at_25_fps_while_speaking():
    backend = register_backend()
    sink = SpeakingLog(Options(backend=backend, audio_sink=""))
    live = run_avatar(sink, 11.5)

    cam = RecordingBackend.opened[-1]
    assert (cam["width"], cam["height"], cam["fps"]) == (SIDE, SIDE, float(FPS))
    assert cam["fourcc"] == pyvirtualcam.util.encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
    assert cam["backend"].closed, "close() must release the camera"
    sends = cam["backend"].sends
    assert {(s[1], s[2]) for s in sends} == {((SIDE * SIDE * 3,), np.dtype(np.uint8))}  # Camera sends it flat

    # RGB, not BGR: the first picture (the idle face) has the portrait's channel means.
    from talker_stream.face.portrait import load_portrait

    ref = load_portrait(PORTRAIT).reshape(-1, 3).mean(0)
    got = sends[0][3].reshape(SIDE, SIDE, 3).reshape(-1, 3).mean(0)
    assert np.abs(got - ref).max() < 8, (got, ref)
    assert np.abs(got - ref).max() < np.abs(got - ref[::-1]).max(), "channels are swapped"

    times = np.array([s[0] for s in sends])
    last10 = times[times >= times[-1] - 10.0]
    rate = (len(last10) - 1) / (last10[-1] - last10[0])
    gaps = np.diff(last10)
    made = np.array([slot[1] for slot in sink.slots])
    loop_gap = np.diff(made[made >= made[-1] - 10.0]).max()  # the frame loop's own worst stall
    print(f"virtualcam: {rate:.2f} fps over the last 10 s, max gap {gaps.max() * 1000:.0f} ms (frame loop: "
          f"{loop_gap * 1000:.0f} ms), {len(sends)} sends, {sum(slot[3] for slot in sink.slots)} held pictures, "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    assert len(sends) == len(sink.slots), "every slot, a dropped picture included, must reach the camera"
    assert abs(rate - FPS) < 1.0, f"delivered {rate:.2f} fps"
    assert gaps.max() < 2.0 / FPS, (f"the camera stalled for {gaps.max() * 1000:.0f} ms; the frame loop itself "
                                    f"stalled for {loop_gap * 1000:.0f} ms (CPU starved?)")
    speaking = [slot for slot in sink.slots if slot[2] and slot[0] >= times[-1] - 10.0]
    assert len(speaking) > 5 * FPS, "the avatar should have been speaking during the measured window"


def test_a_dropped_picture_is_sent_again_and_audio_only_slots_keep_the_rate():
    from talker_stream.speech.clock import MediaClock
    from talker_stream.frames import OutFrame

    sink = VirtualCamSink(Options(backend=register_backend(), audio_sink=""))
    sink.open((4, 2), MediaClock(48000, FPS))
    cam = RecordingBackend.opened[-1]["backend"]
    silence = np.zeros(1920, np.float32)
    pictures = [np.full((2, 4, 3), v, np.uint8) for v in (10, 20)]
    for k, image in enumerate([pictures[0], None, None, pictures[1], None]):
        sink.write(OutFrame(k, k * 1920, image, silence))
    sink.close()
    assert [s[4] for s in cam.sends] == [10, 10, 10, 20, 20], "a dropped picture must hold the previous one"
    assert cam.closed


def test_no_device_says_how_to_load_v4l2loopback():
    sink = VirtualCamSink(Options(backend="v4l2loopback", device="/dev/video63", audio_sink=""))
    from talker_stream.speech.clock import MediaClock

    with pytest.raises(EngineUnavailable) as err:
        sink.open((SIDE, SIDE), MediaClock(48000, FPS))
    assert "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=talker" in str(err.value)
    with pytest.raises(EngineUnavailable, match="no pyvirtualcam backend named 'nope'"):
        VirtualCamSink(Options(backend="nope")).open((SIDE, SIDE), MediaClock(48000, FPS))


def test_no_sound_server_says_how_to_run_video_only(monkeypatch, tmp_path):
    from talker_stream.speech.clock import MediaClock

    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-such.sock")
    sink = VirtualCamSink(Options(backend=register_backend()))
    with pytest.raises(EngineUnavailable) as err:
        sink.open((SIDE, SIDE), MediaClock(48000, FPS))
    assert 'audio_sink = ""' in str(err.value), "the error should say how to run video only"
    assert RecordingBackend.opened[-1]["backend"].closed, "a failed open() must release the camera"


def test_check_needs_a_device_or_a_registered_backend(monkeypatch):
    """Both answers of check(), on any machine: the list of /dev/videoN devices is replaced
    (a stand-in for the kernel's), and pyvirtualcam's backend table is restored after the
    test, so backends registered by earlier tests cannot hide the negative answer."""
    import talker_stream_virtualcam.sink as sink_module

    monkeypatch.setattr(pyvirtualcam.camera, "BACKENDS", {"v4l2loopback": pyvirtualcam.camera.BACKENDS["v4l2loopback"]})
    monkeypatch.setattr(sink_module, "v4l2loopback_devices", lambda: [])
    why = VirtualCamSink.check()
    assert why is not None and why.startswith("no v4l2loopback device (/dev/videoN) on this machine")
    assert "sudo modprobe v4l2loopback" in why, why
    monkeypatch.setattr(sink_module, "v4l2loopback_devices", lambda: [("/dev/video9", "talker")])
    assert VirtualCamSink.check() is None, "a v4l2loopback device is enough"
    monkeypatch.setattr(sink_module, "v4l2loopback_devices", lambda: [])
    register_backend()
    assert VirtualCamSink.check() is None, "so is another registered backend (OBS's, or a test's)"


# -- the virtual microphone, through a real PulseAudio ------------------------------------
@pytest.fixture
def pulse(monkeypatch):
    """A private PulseAudio daemon on a unix socket in a temp dir (as in shared/RECIPES.md)."""
    need(PulseAudio.missing() is None, str(PulseAudio.missing()))
    tmp = Path(tempfile.mkdtemp(prefix="talker-pulse-"))
    daemon = PulseAudio(tmp)
    try:
        daemon.start()
        monkeypatch.setenv("PULSE_SERVER", daemon.server)
        yield daemon.server
    finally:
        daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def sinks() -> list[str]:
    out = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True, timeout=5).stdout
    return [line.split("\t")[1] for line in out.splitlines()]


def best_match(sent: np.ndarray, window: np.ndarray) -> tuple[int, float]:
    """Where *window* occurs in *sent*, and the normalised correlation there (1.0 = identical)."""
    from scipy.signal import correlate

    c = correlate(sent, window, mode="valid", method="fft")
    norm = np.linalg.norm(window)
    energy = np.sqrt(correlate(sent ** 2, np.ones(len(window)), mode="valid", method="fft").clip(0))
    nc = c / (np.maximum(energy, 0.5 * norm) * norm)  # the floor: near-silent stretches of sent match nothing
    k = int(np.argmax(nc))
    return k, float(nc[k])


def test_voice_reaches_the_virtual_microphone(pulse, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    assert "talker_mic" not in sinks()
    sink = SpeakingLog(Options(backend=register_backend(), audio_sink="talker_mic"))
    raw = tmp_path / "mic.raw"
    rec: dict = {}

    def during(live: LiveAvatar) -> None:
        assert "talker_mic" in sinks(), "open() should have created the null sink"
        with open(raw, "wb") as out:
            rec["parec"] = subprocess.Popen(
                ["parec", "-d", "talker_mic.monitor", "--format=s16le", "--rate=48000", "--channels=1", "--raw",
                 "--latency-msec=20"], stdout=out)

        def kill_pacat() -> None:  # the sound server dropping the stream mid-sentence
            time.sleep(KILL_AFTER_S)
            rec["killed_at"], rec["pid"] = time.monotonic(), sink.mic.proc.pid
            os.kill(rec["pid"], signal.SIGKILL)
        threading.Thread(target=kill_pacat, daemon=True).start()

    try:
        run_avatar(sink, 11.0, during)
        after_close = sinks()
    finally:
        if "parec" in rec:
            rec["parec"].terminate()
            rec["parec"].wait(5)
    assert "talker_mic" not in after_close, "close() should remove the null sink it created"
    assert "pid" in rec and sink.mic_restarts == 1, "the sink should have started pacat again after it died"
    lost = [r.getMessage() for r in caplog.records if "virtual microphone" in r.getMessage()]
    assert len([m for m in lost if "retrying" in m]) == 1, f"the outage should be logged once: {lost}"

    pcm = np.fromfile(raw, dtype="<i2").astype(np.float32) / 32768
    assert len(pcm) > 48000 * 7, f"recorded only {len(pcm) / 48000:.1f} s"
    assert np.abs(pcm).max() > 0.2, "no speech reached talker_mic.monitor"
    # Each voiced quarter second of the recording should be a piece of what the avatar said,
    # sample for sample (correlation ~1), not noise or a garbled format. A quarter that spans
    # an underrun (the frame loop stalled longer than the sound buffer) matches less well, so
    # most, not all, must match. Where a quarter matched tells when the sink was given it.
    sent = np.concatenate([slot[4] for slot in sink.slots])
    slot_times = np.array([slot[0] for slot in sink.slots])
    q = 48000 // 4
    voiced = matched = before = after = 0
    for a in range(len(pcm) // q):
        window = pcm[a * q:(a + 1) * q]
        if np.sqrt((window ** 2).mean()) < 0.01:  # -40 dBFS: an idle null sink's monitor is exact zeros
            continue
        voiced += 1
        k, corr = best_match(sent, window)
        if corr < 0.95:
            continue
        matched += 1
        sent_at = slot_times[min(k // 1920, len(slot_times) - 1)]
        before += sent_at < rec["killed_at"]
        after += sent_at > rec["killed_at"] + RETRY_PLUS
    print(f"virtual mic: peak {np.abs(pcm).max():.3f}, {len(pcm) / 48000:.1f} s recorded, {voiced / 4:.2f} s voiced, "
          f"{matched}/{voiced} quarter seconds identical to what was sent; {before / 4:.2f} s heard before pacat "
          f"was killed, {after / 4:.2f} s after it was restarted")
    assert voiced >= 12, "the voice should be heard while the avatar speaks"
    assert matched >= 0.6 * voiced, f"only {matched} of {voiced} voiced quarter seconds are the avatar's voice"
    assert before >= 4, "the voice should be heard before pacat was killed"
    assert after >= 8, "the voice should come back after pacat was restarted"


def test_a_stuck_sound_server_never_blocks_the_sink(pulse):
    """pacat stopped (SIGSTOP) stops reading: writes must return at once and drop the oldest audio."""
    from talker_stream_virtualcam.mic import MAX_PENDING_S, PulseMic

    mic = PulseMic("talker_mic", 48000, 100, create=True)
    mic.open()
    try:
        assert "talker_mic" in sinks()
        os.kill(mic.proc.pid, signal.SIGSTOP)
        slot = np.full(1920, 0.1, np.float32)
        took = []
        for _ in range(100):  # 4 s of audio, far more than the pipe and the pending buffer hold
            t0 = time.monotonic()
            mic.write(slot)
            took.append(time.monotonic() - t0)
        print(f"stuck pacat: slowest write {max(took) * 1000:.2f} ms, {mic.dropped_samples / 48000:.2f} s dropped")
        assert max(took) < 0.02, f"a write blocked for {max(took) * 1000:.0f} ms"
        assert mic.dropped_samples > 48000, "audio beyond the pipe and the pending buffer should be dropped"
        assert len(mic._pending) <= MAX_PENDING_S * 48000 * 4
        os.kill(mic.proc.pid, signal.SIGCONT)
    finally:
        t0 = time.monotonic()
        mic.close()
    assert time.monotonic() - t0 < 3.0, "close() should not wait long for pacat"
    assert "talker_mic" not in sinks()
