"""Live core benchmarks (issue 3): sustained fps and CPU with 1, 2 and 4 sinks, latency
from say() to the first moving-lip frame at a sink, audio/video offset after a long run,
and the CPU an idle (silent) avatar uses.

Everything is real and built the way `talker-stream live` builds it: settings from
``load_settings`` (the defaults of config.toml), the voice from ``open_tts(settings,
live=True)`` (Piper on one thread, in its supervised worker process when ``[tts] isolate``
is on, as in the product), the face from the configured face engine, the sinks from
``open_sinks`` (preview JPEGs, an mp4 recording, an RTMP push to a local nginx started
here, and the virtual camera through pyvirtualcam's real Camera class on a backend that
discards frames, since no v4l2loopback module can be loaded on this machine). CPU figures
count this process and its descendants (the voice worker), not nginx.

Usage:
  .venv/bin/python bench/live.py sinks   [--seconds 30]
  .venv/bin/python bench/live.py latency [--count 10]
  .venv/bin/python bench/live.py drift   [--minutes 10]
  .venv/bin/python bench/live.py idle    [--seconds 10]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

from talker_stream.config import load_settings  # noqa: E402
from talker_stream.live import LiveAvatar  # noqa: E402
from talker_stream.outputs import open_sinks  # noqa: E402

from _load import OtherLoad, cpu_model, tree_cpu_seconds  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from services import RtmpServer  # noqa: E402  (the same nginx-rtmp the tests start)

ROOT = Path(__file__).resolve().parent.parent
PARAGRAPH = (
    "Welcome back to the stream. Today we are answering your questions live, one by one. "
    "If you have something to ask, type it in the chat and I will read it out. "
    "Let us start with the first one, which is about how this avatar works. "
)


class TimedSink:
    """A sink that notes when each frame arrives (used to find the first moving-lip frame)."""

    name = "timed"

    def __init__(self) -> None:
        self.onsets: dict[int, float] = {}

    def open(self, size, clock) -> None:
        pass

    def write(self, frame) -> None:
        if frame.utterance is not None and frame.utterance not in self.onsets:
            if frame.speaking and float(np.sqrt(np.mean(frame.audio**2))) > 0.02:
                self.onsets[frame.utterance] = time.monotonic()

    def close(self) -> None:
        pass


def discard_camera_backend() -> str:
    import pyvirtualcam

    class Discard:
        def __init__(self, width, height, fps, fourcc, device, **kw):
            self.frames = 0

        def send(self, frame):
            self.frames += 1

        def close(self):
            pass

        def device(self):
            return "discard"

        def native_fourcc(self):
            return None

    name = f"bench-discard-{os.getpid()}"
    pyvirtualcam.register_backend(name, Discard)
    return name


def settings(sinks: list[str], folder: Path, **extra):
    """The product's settings (config.toml's defaults) with the sample portrait and *sinks*."""
    over = {"avatar.portrait": str(ROOT / "examples/portrait.png"), "live.sinks": sinks,
            "sinks.record.path": str(folder / "session.mp4"), **extra}
    return load_settings(None, over)


def open_live(s, extra_sinks=()) -> LiveAvatar:
    """As `talker-stream live` opens it: sinks from open_sinks, and LiveAvatar's own
    open_tts(settings, live=True) and face engine (both closed again by stop())."""
    return LiveAvatar(s, open_sinks(s) + list(extra_sinks))


def header(what: str, s) -> None:
    tts = s.tts
    print(f"# live {what}: {cpu_model()}")
    print(f"voice {tts.engine} via open_tts(live=True) (one thread; worker process: {tts.isolate}), "
          f"face {s.face.engine}, {s.video.fps:g} fps, {s.video.sample_rate} Hz")


def keep_talking(live: LiveAvatar, stop: threading.Event) -> None:
    while not stop.is_set():
        if live.stats()["queued_seconds"] < 5:
            live.say(PARAGRAPH)
        stop.wait(0.5)


def bench_sinks(seconds: float) -> None:
    configs = [["preview"], ["preview", "record"], ["preview", "record", "rtmp", "virtualcam"]]
    header("sinks", settings(["preview"], ROOT))
    print("| sinks | frame loop fps | slowest sink fps | dropped pictures | CPU (% of one core, with the voice worker) | other load |")
    print("|---|---|---|---|---|---|")
    for names in configs:
        folder = Path(tempfile.mkdtemp(prefix="bench-live-"))
        nginx = RtmpServer(folder) if "rtmp" in names else None
        extra = {}
        if nginx:
            nginx.start("rec")
            extra["sinks.rtmp.url"] = nginx.url
            extra["sinks.rtmp.key_env"] = "BENCH_NO_KEY"
        if "virtualcam" in names:
            extra["sinks.virtualcam.backend"] = discard_camera_backend()
            extra["sinks.virtualcam.audio_sink"] = ""
        exclude = {nginx.proc.pid} if nginx and nginx.proc else set()
        try:
            s = settings(names, folder, **extra)
            live = open_live(s).start()
            stop = threading.Event()
            talker = threading.Thread(target=keep_talking, args=(live, stop), daemon=True)
            talker.start()
            time.sleep(3)  # settle
            load = OtherLoad(exclude).start()
            t0, c0 = time.perf_counter(), tree_cpu_seconds(exclude)
            f0, d0 = live.frames, live.dropped
            w0 = {r.name: r.written for r in live.runners}
            time.sleep(seconds)
            wall = time.perf_counter() - t0
            cpu = (tree_cpu_seconds(exclude) - c0) / wall * 100
            fps = (live.frames - f0) / wall
            sink_fps = min((r.written - w0[r.name]) / wall for r in live.runners)
            dropped = live.dropped - d0 + sum(r.dropped for r in live.runners)
            other = load.stop()
            stop.set()
            live.stop()
            print(f"| {len(names)}: {', '.join(names)} | {fps:.2f} | {sink_fps:.2f} | {dropped} | {cpu:.0f} | {other} |")
        finally:
            if nginx:
                nginx.stop()
            shutil.rmtree(folder, ignore_errors=True)


def bench_latency(count: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-lat-"))
    sink = TimedSink()
    s = settings(["preview"], folder)
    header("latency", s)
    load = OtherLoad().start()
    live = open_live(s, [sink]).start()
    questions = [
        "Sure, here is the answer.", "Good question, let me think.", "Hello there, welcome in!",
        "Yes, that works on a plain CPU.", "No, nothing is downloaded at run time.",
        "The lips follow the audio clock.", "Absolutely, I can do that.", "That is a tricky one.",
        "Thanks for asking.", "Here we go.", "Of course.", "Right away.",
    ]
    said = {}
    time.sleep(2)
    for i in range(count):
        text = questions[i % len(questions)]
        said[live.say(text)] = time.monotonic()
        deadline = time.monotonic() + 15
        while live.stats()["speaking"] or live.stats()["queued_seconds"] > 0 or not sink.onsets.keys() >= said.keys():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        time.sleep(0.5)
    live.stop()
    shutil.rmtree(folder, ignore_errors=True)
    lat = [(sink.onsets[u] - t) * 1000 for u, t in said.items() if u in sink.onsets]
    print(f"say() -> first frame with moving lips at a sink, {len(lat)} utterances; {load.stop()}")
    print(f"median {statistics.median(lat):.0f} ms, min {min(lat):.0f} ms, max {max(lat):.0f} ms; "
          f"each: {', '.join(f'{x:.0f}' for x in lat)}")


def bench_drift(minutes: float) -> None:
    from talker_stream.face.lipsync import best_lag, track_face
    from talker_stream.speech.audio import frame_loudness, read_audio
    from talker_stream.speech.clock import MediaClock
    import av

    folder = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    s = settings(["record"], folder)
    header("drift", s)
    live = open_live(s).start()
    stop = threading.Event()
    threading.Thread(target=keep_talking, args=(live, stop), daemon=True).start()
    time.sleep(minutes * 60)
    stop.set()
    stats = live.stats()
    live.stop()
    path = folder / "session.mp4"
    from talker_stream.outputs.encoder import probe

    info = probe(path)
    v_end, a_end = info["video"]["end"], info["audio"]["end"]
    # the last 60 s: decode pictures on the frame grid, audio from the file, and compare
    clock = MediaClock(48000, 25)
    start = max(0.0, v_end - 60)
    frames = []
    with av.open(str(path)) as c:
        c.seek(int(start / c.streams.video[0].time_base), stream=c.streams.video[0])
        for f in c.decode(video=0):
            if f.time is not None and f.time >= start:
                frames.append((f.time, f.to_ndarray(format="rgb24")))
    pcm = np.concatenate([ch.pcm for ch in read_audio(path, 48000)])
    first_k = round(frames[0][0] * 25)
    starts = np.array([clock.frame_start(first_k + i) for i in range(len(frames) + 1)])
    loud = frame_loudness(np.pad(pcm, (0, max(0, starts[-1] - len(pcm)))), starts)
    mouth, _ = track_face([f for _, f in frames])
    lag, corr = best_lag(mouth, loud)
    shutil.rmtree(folder, ignore_errors=True)
    print(f"{minutes:g} min live session recorded: video ends {v_end:.3f} s, audio ends {a_end:.3f} s "
          f"(difference {abs(v_end - a_end) * 1000:.1f} ms); loop dropped {stats['dropped']} pictures")
    print(f"lip-sync over the last 60 s: lag {lag} frames, correlation {corr:.2f}")


def bench_idle(seconds: float) -> None:
    """A silent avatar (blinking, breathing, glancing) with the preview sink: its CPU."""
    folder = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    s = settings(["preview"], folder)
    header("idle", s)
    live = open_live(s).start()
    try:
        time.sleep(3)  # settle
        load = OtherLoad().start()
        t0, c0, f0 = time.perf_counter(), tree_cpu_seconds(), live.frames
        time.sleep(seconds)
        wall = time.perf_counter() - t0
        cpu = (tree_cpu_seconds() - c0) / wall * 100
        fps = (live.frames - f0) / wall
        other = load.stop()
    finally:
        live.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"idle avatar, preview sink, {seconds:g} s: {cpu:.0f} % of one core (this process and the voice "
          f"worker), frame loop {fps:.2f} fps; {other}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["sinks", "latency", "drift", "idle"])
    ap.add_argument("--seconds", type=float, default=None, help="sinks: 30 per configuration; idle: 10")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=10)
    a = ap.parse_args()
    {"sinks": lambda: bench_sinks(a.seconds or 30), "latency": lambda: bench_latency(a.count),
     "drift": lambda: bench_drift(a.minutes), "idle": lambda: bench_idle(a.seconds or 10)}[a.what]()


if __name__ == "__main__":
    sys.exit(main())
