"""The speech output (talker_stream/speech/output.py): answers spoken by the real Piper voice
into a player at 48 kHz, what was heard reported as a Spoken, an Interrupt cutting at once."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import wait_for
from talker_stream.frames import Interrupt
from talker_stream.speech.output import SpeechOutput


class Device:
    """STAND-IN for a sound device (a Discord voice connection, a phone line): plays what it
    is fed in real time, 20 ms at a time, on a thread of its own."""

    def __init__(self, rate: int) -> None:
        self.rate, self.block = rate, rate // 50
        self.buf = np.zeros(0, np.float32)
        self.out: list[np.ndarray] = []
        self.played = 0
        self.finished = self.cancelled = False
        self.ended = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._play, daemon=True).start()

    def feed(self, pcm: np.ndarray) -> bool:
        while not self.cancelled and len(self.buf) > 2 * self.rate:  # 2 s of room, then the producer waits
            time.sleep(0.01)
        with self.lock:
            if self.cancelled:
                return False
            self.buf = np.concatenate([self.buf, pcm])
            return True

    def finish(self) -> None:
        self.finished = True

    def cancel(self) -> None:
        with self.lock:
            self.cancelled, self.buf = True, np.zeros(0, np.float32)

    def wait(self, timeout: float) -> bool:
        return self.ended.wait(timeout)

    def _play(self) -> None:
        while not self.cancelled:
            with self.lock:
                block, self.buf = self.buf[: self.block], self.buf[self.block:]
            if len(block):
                self.out.append(block)
                self.played += len(block)
            elif self.finished:
                break
            time.sleep(0.02)
        self.ended.set()


@pytest.fixture(scope="module")
def piper():
    from talker_stream.speech.tts.piper import PiperTTS

    return PiperTTS(threads=1)


@pytest.fixture
def output(piper):
    devices: list[Device] = []

    def device() -> Device:
        devices.append(Device(48000))
        return devices[-1]

    out = SpeechOutput(piper, 48000, device, max_waiting=2, name="test-voice").start()
    out.devices = devices
    yield out
    out.close()


def test_answers_are_spoken_at_the_players_rate_and_reported_heard(output, piper):
    done: list = []
    assert output.say("[happy] Hello there. How are you?", on_done=done.append) == 1
    assert output.say(iter(["Streamed ", "pieces, ", "as a model writes them."]), on_done=done.append) == 2
    assert wait_for(lambda: len(done) == 2, 30)
    first, second = done
    assert first.text == "Hello there. How are you?" and first.interrupt is None  # the tag is never spoken
    assert second.text == "Streamed pieces, as a model writes them." and second.interrupt is None
    sound = np.concatenate(output.devices[0].out)
    voice = sum(len(c.pcm) for c in piper.stream("Hello there.")) + sum(len(c.pcm) for c in piper.stream("How are you?"))
    rate = next(iter(piper.stream("Hi."))).sample_rate
    assert abs(len(sound) / (voice * 48000 / rate) - 1) < 0.15  # all of it at 48 kHz (Piper's timing varies a little)
    assert np.sqrt(np.mean(sound ** 2)) > 0.02


def test_an_interrupt_cuts_the_answer_and_drops_those_waiting(output):
    done: list = []
    long_answer = " ".join(["Paris has been the capital of France for a very long time."] * 6)
    output.say(long_answer, on_done=done.append)
    assert wait_for(lambda: output.speaking, 10)
    output.say("This one waits.", on_done=done.append)
    output.say("So does this one.", on_done=done.append)
    assert output.say("One too many.") is None  # max_waiting: 2
    assert wait_for(lambda: output.devices and output.devices[0].played > 48000, 30)
    assert output.interrupt(Interrupt("barge-in", "ana"))
    assert wait_for(lambda: len(done) == 3, 10)
    cut = next(s for s in done if s.utterance == 1)
    assert cut.interrupt.reason == "barge-in" and cut.interrupt.source == "ana"
    assert 48000 <= cut.interrupt.at <= output.devices[0].played  # where it was cut, in played samples
    assert cut.text and long_answer.startswith(cut.text) and len(cut.text) < len(long_answer) / 2
    assert [s.sentences for s in done if s.utterance != 1] == [[], []]  # dropped unheard, and told why
    assert all(s.interrupt.reason == "barge-in" for s in done)
    assert not output.speaking and output.interrupt(Interrupt()) is False  # nothing left to cut
    output.close()
    assert output.say("After the end.") is None


def test_a_voice_that_fails_mid_answer_reports_what_was_heard_and_the_error(piper):
    class Breaks:
        """The real voice, failing on the second sentence (a crashed worker, a server gone)."""

        def stream(self, text):
            if "second" in text:
                raise ConnectionError("the voice server went away")
            yield from piper.stream(text)

    done: list = []
    out = SpeechOutput(Breaks(), 48000, lambda: Device(48000), name="test-voice").start()
    try:
        out.say("The first sentence. The second sentence. The third.", on_done=done.append)
        assert wait_for(lambda: done, 30)
    finally:
        out.close()
    assert done[0].text == "The first sentence." and isinstance(done[0].error, ConnectionError)
    assert done[0].interrupt is None
