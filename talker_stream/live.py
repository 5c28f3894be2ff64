"""The live avatar: a frame loop on the wall clock that never waits for an engine.

Two threads meet at the timeline. The *speech* thread turns queued utterances into
speech segments (TTS is bursty and may stall) and places them ahead of the playhead. The
*frame* thread ticks at the configured fps, takes whatever the timeline holds for the
next frame (an idle face when nothing is ready), renders it and hands it to every sink's
queue. If rendering falls behind, the picture is dropped but the audio slot is still
sent, so latency never piles up and sound never gaps. An interrupt (frames.Interrupt: why,
who) is a control value that overtakes queued speech: it bumps a generation counter (stale
TTS output is discarded), cuts the timeline at the playhead, and comes back on the Spoken of
every utterance it cut.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
import logging
import queue
import statistics
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .speech.clock import MediaClock
from .config import Settings
from .face import hears_speech, render_frame
from .face.expression import Expression
from .face.portrait import load_portrait
from .outputs import SinkRunner
from .frames import OutFrame
from .speech.speaker import Speaker
from .speech.text import split_sentences
from .speech.timeline import Timeline
from .frames import Interrupt, Spoken

log = logging.getLogger(__name__)

RESYNC_S = 1.0  # behind the wall clock by more than this (machine suspended?): jump ahead


@dataclass
class Utterance:
    id: int
    text: str | Iterable[str]  # a string, or pieces still being written (LLM tokens)
    question: str = ""
    said_at: float = field(default_factory=time.monotonic)
    generation: int = 0
    on_done: Callable[[Spoken], None] | None = None  # told what was heard, once, when it ends
    error: Exception | None = None  # the voice failed on it: told to on_done with what was heard


class LiveAvatar:
    """The always-on avatar. ``start()``, then ``say()`` and ``interrupt()`` from any thread."""

    def __init__(self, settings: Settings, sinks: list, tts=None, engine=None, portrait: np.ndarray | None = None):
        from .face import open_face
        from .speech.tts import open_tts

        self.settings = settings
        self.clock = MediaClock(settings.video.sample_rate, settings.video.fps)
        path = settings.portrait_path()
        self.portrait = portrait if portrait is not None else load_portrait(path, settings.avatar.max_size)
        self.engine = engine or open_face(settings)
        self.avatar = self.engine.prepare(self.portrait, source=str(path))
        self._own_tts = tts is None  # opened here (a worker process, maybe): closed in stop()
        self.speaker = Speaker(tts or open_tts(settings, live=True), self.clock)
        listener = self.engine if hears_speech(self.engine) else None
        self.timeline = Timeline(self.clock, Expression(settings.face.expression), listener=listener)
        self.runners = [SinkRunner(s) for s in sinks]
        self.max_ahead_frames = int(settings.live.max_ahead_seconds * float(self.clock.fps))

        self._lock = threading.Lock()  # guards the timeline
        self._inbox: queue.Queue[Utterance] = queue.Queue(maxsize=settings.live.max_queued_utterances)
        self._ids = itertools.count(1)
        self._generation = 0
        self._cut: Interrupt | None = None  # the last interrupt (utterances of older generations were cut by it)
        self._said: dict[int, Utterance] = {}
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self.frames = 0
        self.rendered = 0
        self.dropped = 0  # frames whose picture was not rendered in time (held instead)
        self.resyncs = 0
        self.tts_errors = 0
        self._frame_times: list[float] = []
        self._caption = ""
        self._question = ""
        self._speaking_utterance: int | None = None
        self.started_at = 0.0
        self.reporters: dict[str, object] = {}  # name -> more numbers: .stats() and .status() (the chat queue)

    # -- control ---------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run each engine once before the clock starts.

        First calls load data while holding the GIL (espeak-ng's phoneme tables inside
        Piper, onnxruntime's first-run optimisation): done mid-stream, that would freeze
        the frame loop for half a second on the first thing the avatar says.
        """
        from .face.params import FaceParams

        try:
            for _ in self.speaker.tts.stream("Hello."):
                pass
        except Exception as exc:  # noqa: BLE001 - a broken engine is reported when it is used
            log.warning("TTS warm-up failed: %s", exc)
        self.engine.render(self.avatar, FaceParams(jaw_open=0.5, blink_l=0.5, blink_r=0.5, yaw=1.0))

    def start(self) -> "LiveAvatar":
        self.warm_up()
        h, w = self.portrait.shape[:2]
        for r in self.runners:
            r.sink.open((w, h), self.clock)
            r.start()
        self._running.set()
        for target, name in ((self._speech_loop, "speech"), (self._frame_loop, "frames")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def attach(self, sink) -> None:
        """Add a sink while the avatar runs (a browser watching the control page). The frame
        loop reads the runner list afresh each frame; the list is replaced, never changed."""
        runner = SinkRunner(sink)
        h, w = self.portrait.shape[:2]
        sink.open((w, h), self.clock)
        runner.start()
        self.runners = [*self.runners, runner]

    def detach(self, sink) -> None:
        """Remove a sink added with :meth:`attach` and stop it."""
        gone = [r for r in self.runners if r.sink is sink]
        self.runners = [r for r in self.runners if r.sink is not sink]
        for r in gone:
            r.stop()

    def stop(self) -> None:
        self._running.clear()
        for t in self._threads:
            t.join(5)
        for r in self.runners:
            r.stop()
        if self._own_tts:
            getattr(self.speaker.tts, "close", lambda: None)()

    def __enter__(self) -> "LiveAvatar":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def say(self, text: str | Iterable[str], question: str = "", on_done: Callable[[Spoken], None] | None = None) -> int:
        """Queue *text* (or a stream of text pieces) to be spoken; returns its utterance id.

        *on_done* is called once with what was heard: everything when it finished playing,
        part of it when interrupted, nothing when it was dropped. Raises queue.Full when
        flooded.
        """
        u = Utterance(next(self._ids), text, question, generation=self._generation, on_done=on_done)
        self._inbox.put_nowait(u)
        self._said[u.id] = u
        if len(self._said) > 1000:
            for old in sorted(self._said)[:500]:
                self._said.pop(old, None)
        return u.id

    def interrupt(self, why: Interrupt | None = None) -> Spoken:
        """Stop speaking now: the next frame is idle, queued utterances are dropped.

        *why* (default: the operator's) comes back stamped with the stream sample where the
        cut took effect, on the Spoken returned and on every cut utterance's ``on_done``."""
        why = self._cut = why or Interrupt("operator")  # set first: whoever sees the new generation finds why
        self._generation += 1
        dropped = []
        while True:
            try:
                dropped.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            why = self._cut = replace(why, at=self.clock.frame_start(self.timeline.playhead))
            queued = self.timeline.queued_utterances()
            spoken = self.timeline.interrupt()
        spoken.interrupt = why
        self._caption = ""
        if spoken.utterance is not None:
            self._finish(spoken.utterance, spoken)
        for utt in queued:  # already synthesised, waiting behind the one cut: never heard
            if utt != spoken.utterance:
                self._finish(utt, Spoken(utt, [], interrupt=why))
        for u in dropped:
            self._finish(u.id, Spoken(u.id, [], interrupt=why))
        return spoken

    def _finish(self, utterance: int, spoken: Spoken) -> None:
        u = self._said.get(utterance)
        callback, u.on_done = (u.on_done, None) if u is not None else (None, None)
        if u is not None and u.error is not None and spoken.error is None:
            spoken.error = u.error  # what was heard, and that the voice failed on the rest
        if callback is not None:
            try:
                callback(spoken)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the avatar
                log.warning("on_done callback failed: %s", exc)

    # -- threads ---------------------------------------------------------------------------
    def _speech_loop(self) -> None:
        while self._running.is_set():
            try:
                u = self._inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if u.generation != self._generation:
                self._finish(u.id, Spoken(u.id, [], interrupt=self._cut))
                continue
            first = True
            pieces = [u.text] if isinstance(u.text, str) else u.text
            try:
                # a streamed reply starts speaking at its first clause; a whole text is said as written
                for sentence in split_sentences(pieces, fast_start=not isinstance(u.text, str)):
                    if first:
                        log.info("utterance %d: first sentence after %.0f ms", u.id, 1000 * (time.monotonic() - u.said_at))
                    for seg in self.speaker.speak([sentence]):
                        if not self._wait_for_room(u):
                            break
                        seg.utterance, seg.first, seg.question = u.id, first, u.question
                        if first:
                            log.info("utterance %d: first audio after %.0f ms", u.id, 1000 * (time.monotonic() - u.said_at))
                        first = False
                        with self._lock:
                            if u.generation != self._generation:
                                break
                            self.timeline.append(seg)
                    if u.generation != self._generation or not self._running.is_set():
                        break
            except Exception as exc:  # noqa: BLE001 - a dead engine must not kill the avatar
                self.tts_errors += 1
                u.error = exc
                log.warning("could not speak utterance %d: %s", u.id, exc)
            finally:
                if hasattr(pieces, "close"):
                    pieces.close()  # stop an LLM that is still writing an answer nobody will hear
            with self._lock:
                if u.generation == self._generation and self.timeline.mark_last(u.id):
                    continue  # the frame loop reports it when its last frame plays
                cut = self._cut if u.generation != self._generation else None
                heard = Spoken(u.id, self.timeline.heard(u.id), interrupt=cut)
            self._finish(u.id, heard)

    def _wait_for_room(self, u: Utterance) -> bool:
        """Back-pressure: do not synthesise more than max_ahead_seconds ahead of the playhead."""
        while self._running.is_set() and u.generation == self._generation:
            with self._lock:
                if self.timeline.queued_frames < self.max_ahead_frames:
                    return True
            time.sleep(0.05)
        return False

    def _frame_loop(self) -> None:
        period = self.clock.frame_period
        image = self.portrait.copy()
        self.started_at = t0 = time.monotonic()
        k = 0
        while self._running.is_set():
            due = t0 + k * period
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due > RESYNC_S:
                log.warning("frame loop was %.1f s behind the wall clock; skipping ahead", now - due)
                self.resyncs += 1
                t0 = now - k * period
            late = time.monotonic() - (t0 + k * period)
            with self._lock:
                plan = self.timeline.next_frame()
            if late > period and self.rendered:
                out_image = None  # behind: hold the last picture, keep the audio flowing
                self.dropped += 1
            else:
                image = render_frame(self.engine, self.avatar, plan.params, image.copy(), plan.index, realtime=True)
                out_image = image
                self.rendered += 1
            if plan.finished is not None:
                self._finish(plan.finished.utterance, plan.finished)
            if plan.speaking:
                self._caption = plan.caption
                if plan.utterance in self._said:
                    self._question = self._said[plan.utterance].question
            elif not self.timeline.queued_frames:
                self._caption = ""
                self._question = ""
            frame = OutFrame(plan.index, plan.pts, out_image, plan.audio, self._caption, self._question,
                             plan.speaking, plan.utterance, plan.first_of_utterance)
            if plan.first_of_utterance and plan.utterance in self._said:
                log.info("utterance %d: first frame after %.0f ms", plan.utterance,
                         1000 * (time.monotonic() - self._said[plan.utterance].said_at))
            for r in self.runners:
                r.put(frame)
            self.frames += 1
            self._frame_times.append(time.monotonic())
            if len(self._frame_times) > 600:
                del self._frame_times[:300]
            k += 1

    # -- numbers ---------------------------------------------------------------------------
    def latencies(self) -> list[float]:
        """Seconds from say() to the first frame of that utterance written by a sink."""
        out = []
        for r in self.runners[:1]:
            for utt, at in r.first_frame_at.items():
                if utt in self._said:
                    out.append(at - self._said[utt].said_at)
        return out

    def stats(self) -> dict:
        now = time.monotonic()
        recent = [t for t in self._frame_times if now - t <= 2.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
        lat = self.latencies()
        with self._lock:
            queued = self.timeline.queued_frames / float(self.clock.fps)
        return {
            "fps": round(fps, 2),
            "target_fps": float(self.clock.fps),
            "frames": self.frames,
            "dropped": self.dropped,
            "resyncs": self.resyncs,
            "queue_utterances": self._inbox.qsize(),
            "queued_seconds": round(queued, 2),
            "latency_ms": round(lat[-1] * 1000) if lat else None,
            "latency_median_ms": round(statistics.median(lat) * 1000) if lat else None,
            "speaking": self._caption != "",
            "caption": self._caption,
            "question": self._question,
            "tts_errors": self.tts_errors,
            "uptime_s": round(now - self.started_at, 1) if self.started_at else 0.0,
            "sinks": [r.stats() for r in self.runners],
            **{name: r.stats() for name, r in list(self.reporters.items())},
        }

    def status_line(self) -> str:
        s = self.stats()
        lat = f"{s['latency_ms']} ms" if s["latency_ms"] is not None else "-"
        sinks = " ".join(f"{x['name']}:{x['fps']:.0f}fps/{x['dropped']}d" for x in s["sinks"])
        more = "".join(f"  {r.status()}" for r in list(self.reporters.values()))
        return (f"{s['fps']:5.1f}/{s['target_fps']:.0f} fps  dropped {s['dropped']}  queue {s['queue_utterances']} "
                f"({s['queued_seconds']:.1f} s)  latency {lat}  {sinks}{more}")
