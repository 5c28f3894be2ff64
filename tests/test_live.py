"""The live core: a clocked feed that never freezes, keeps real time, and stops on a word.

The sink used here is a real sink that keeps what it is given in memory (with arrival
times), so the tests can look at exactly what a virtual camera or encoder would receive.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest

from conftest import make_settings
from talker_stream.live import LiveAvatar
from talker_stream.frames import AudioChunk, Interrupt
from talker_stream.speech.tts.piper import PiperTTS

PERIOD = 1 / 25


class MemorySink:
    name = "memory"

    def __init__(self):
        self.frames = []
        self.times = []
        self.lock = threading.Lock()

    def open(self, size, clock):
        self.size = size

    def write(self, frame):
        with self.lock:
            self.frames.append(frame)
            self.times.append(time.monotonic())

    def close(self):
        pass


class StallingTTS:
    """The real Piper voice, but it freezes for *stall* seconds in the middle of each sentence."""

    def __init__(self, stall: float):
        self.voice = PiperTTS(threads=1)
        self.sample_rate = self.voice.sample_rate
        self.stall = stall

    def stream(self, text):
        for chunk in self.voice.stream(text):
            half = len(chunk.pcm) // 2
            yield AudioChunk(chunk.pcm[:half], chunk.sample_rate)
            time.sleep(self.stall)
            yield AudioChunk(chunk.pcm[half:], chunk.sample_rate)


class DeadTTS:
    sample_rate = 22050

    def stream(self, text):
        raise RuntimeError("engine crashed")
        yield  # pragma: no cover


@pytest.fixture(scope="module")
def piper():
    return PiperTTS(threads=1)  # as the live avatar opens it


def run_live(sink, seconds, animator, tts, say=(), **overrides):
    settings = make_settings(**{"live.sinks": [], **overrides})
    live = LiveAvatar(settings, [sink], tts=tts, engine=animator)
    live.start()
    for text in say:
        live.say(text)
    time.sleep(seconds)
    live.stop()
    return live


def test_idle_feed_keeps_its_rate_and_moves(animator, piper):
    sink = MemorySink()
    live = run_live(sink, 4.0, animator, piper)
    frames = [f for f in sink.frames if f.image is not None]
    assert abs(len(sink.frames) - 4.0 * 25) <= 4
    assert not any(f.speaking for f in sink.frames)
    assert all(len(f.audio) == 1920 and not f.audio.any() for f in sink.frames)
    diffs = [np.abs(a.image.astype(int) - b.image).mean() for a, b in zip(frames, frames[10:])]
    assert max(diffs) > 0.05, "an idle avatar still breathes and moves its head"
    assert [f.pts for f in sink.frames] == [k * 1920 for k in range(len(sink.frames))]
    assert live.stats()["resyncs"] == 0


def test_speech_plays_on_the_clock(animator, piper):
    sink = MemorySink()
    run_live(sink, 5.0, animator, piper, say=["Hello there, this is a live test."])
    speaking = [f for f in sink.frames if f.speaking]
    assert len(speaking) > 25, "about two seconds of speech"
    assert speaking[0].first_of_utterance and speaking[0].caption == "Hello there, this is a live test."
    loud = np.array([np.sqrt(np.mean(f.audio**2)) for f in speaking])
    assert loud.max() > 0.05
    ts = np.array(sink.times)
    assert np.diff(ts).max() < 2 * PERIOD + 0.03


def test_tts_stall_mid_sentence_never_freezes_the_feed(animator):
    sink = MemorySink()
    run_live(sink, 7.0, animator, StallingTTS(stall=2.0), say=["This sentence stalls halfway through its audio."])
    ts = np.array(sink.times)
    gaps = np.diff(ts)
    assert gaps.max() < 2 * PERIOD, f"longest gap between frames {gaps.max() * 1000:.0f} ms"
    speaking = np.array([f.speaking for f in sink.frames])
    # speaking, then idle during the stall, then speaking again
    changes = np.flatnonzero(np.diff(speaking.astype(int)))
    assert len(changes) >= 3, "the feed idles through the stall and resumes speaking"
    idle_run = max(len(r) for r in np.split(speaking, changes + 1) if not r[0] and len(r) < len(speaking))
    assert idle_run >= 25, "about two seconds of idle frames while the engine was stuck"


def test_interrupt_stops_speech_within_one_frame(animator, piper):
    sink = MemorySink()
    settings = make_settings(**{"live.sinks": []})
    live = LiveAvatar(settings, [sink], tts=piper, engine=animator).start()
    text = "This is a long answer. It has several sentences. Nobody will hear the end of it, I promise."
    utt = live.say(text)
    deadline = time.monotonic() + 10
    while not any(f.speaking for f in sink.frames) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.5)
    cut_at = live.timeline.playhead
    spoken = live.interrupt()
    time.sleep(0.6)
    live.stop()
    assert spoken.interrupt.reason == "operator"  # the default: someone pressed stop
    after = [f for f in sink.frames if f.index > cut_at]
    assert after and not any(f.speaking for f in after), "the very next frame is not speaking"
    tail = np.concatenate([f.audio for f in after])
    assert np.abs(tail[240:]).max() == 0.0, "silence after a 5 ms fade"
    assert spoken.utterance == utt
    assert spoken.text and text.startswith(spoken.text.split(" ")[0])
    assert "promise" not in spoken.text, "only what was heard is reported"
    assert live.stats()["queued_seconds"] == 0


def test_render_too_slow_keeps_real_time_and_audio(animator, piper):
    class SlowAnimator:
        """The real animator, made slower than real time on purpose."""

        name = "slow"

        def prepare(self, portrait, source="portrait"):
            return animator.prepare(portrait, source)

        def render(self, avatar, params, out=None):
            time.sleep(0.06)
            return animator.render(avatar, params, out=out)

    sink = MemorySink()
    live = run_live(sink, 4.0, SlowAnimator(), piper, say=["Keep talking while the renderer lags behind."])
    assert abs(len(sink.frames) - 4.0 * 25) <= 5, "frame slots keep real time"
    assert live.dropped > 20 and sum(f.image is None for f in sink.frames) == live.dropped
    assert all(len(f.audio) == 1920 for f in sink.frames), "every slot carries its audio"
    assert sum(f.speaking for f in sink.frames) > 25


def test_dead_engine_and_flood_do_not_stop_the_avatar(animator):
    sink = MemorySink()
    settings = make_settings(**{"live.sinks": [], "live.max_queued_utterances": 3})
    live = LiveAvatar(settings, [sink], tts=DeadTTS(), engine=animator).start()
    live.say("this will fail")
    with pytest.raises(queue.Full):
        for i in range(50):
            live.say(f"flood {i}")
    time.sleep(1.5)
    live.stop()
    assert live.tts_errors >= 1
    assert abs(len(sink.frames) - 1.5 * 25) <= 4, "the feed went on"


def test_on_done_reports_what_was_heard(animator, piper):
    sink = MemorySink()
    settings = make_settings(**{"live.sinks": []})
    live = LiveAvatar(settings, [sink], tts=piper, engine=animator).start()
    done = {}
    first = live.say("Short one.", on_done=lambda s: done.setdefault("first", s))
    pieces = iter(["Here is a streamed ", "answer, written ", "piece by piece. ", "And a second sentence."])
    second = live.say(pieces, on_done=lambda s: done.setdefault("second", s))
    deadline = time.monotonic() + 15
    while len(done) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    third = live.say("This one will be cut off before the end, because we interrupt it.",
                     on_done=lambda s: done.setdefault("third", s))
    while not any(f.utterance == third and f.speaking for f in sink.frames) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    cut_at = live.clock.frame_start(live.timeline.playhead)
    live.interrupt(Interrupt("barge-in", "microphone"))
    live.stop()
    assert done["first"].utterance == first and done["first"].text == "Short one."
    assert done["first"].interrupt is None and done["second"].interrupt is None  # heard to the end
    assert done["second"].utterance == second
    # the first clause was cut early (fast start), then whole sentences
    assert done["second"].sentences == ["Here is a streamed answer,", "written piece by piece.", "And a second sentence."]
    assert done["third"].utterance == third and 0 < done["third"].partial_fraction < 1
    assert "interrupt it" not in done["third"].text
    why = done["third"].interrupt  # the source learns why it was cut, and where
    assert (why.reason, why.source) == ("barge-in", "microphone") and 0 <= why.at - cut_at < live.clock.sample_rate // 2
