"""A speech output: answers spoken into a player of any sample rate, and cut at once.

    text pieces ─► sentences (text.py) ─► Speaker (TTS, resampled to the player's rate)
        ─► player.feed(pcm) ... played ─► what was heard comes back as a Spoken

For voices that do not go through the avatar's timeline: a voice channel (Discord), a
phone line. One answer plays at a time, on a thread of its own; ``say()`` queues the next
(bounded); ``interrupt(Interrupt)`` cuts the one playing and drops those waiting. Every
answer's ``on_done`` learns what was heard of it (whole sentences, then the share of one
that played), with the Interrupt when it was cut or dropped and the error when the voice
failed on it, as the live avatar reports.

The player is the output's own (a ``discord.AudioSource``...), with this shape:

- ``feed(pcm) -> bool``: queue float32 mono audio at the output's rate, waiting for room
  when its buffer is full; False once cancelled (stop synthesising);
- ``finish()``: no more audio comes, play out what is left; ``cancel()``: stop now;
- ``wait(timeout) -> bool``: True once it has played out (or was cancelled, or is gone);
- ``played``: samples of the answer played so far (padding while synthesis was behind
  not counted).
"""
from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..frames import Interrupt, Spoken
from .clock import MediaClock
from .speaker import Speaker
from .text import split_sentences

log = logging.getLogger(__name__)


@dataclass
class _Answer:
    id: int
    pieces: str | Iterable[str]
    on_done: Callable[[Spoken], None] | None
    cut: Interrupt | None = None
    player: Any = None


class SpeechOutput:
    """Answers spoken through *tts* into players made by *open_player* (one per answer) at
    *rate*. *tts_lock*: held while synthesising, when several outputs share one engine."""

    def __init__(self, tts, rate: int, open_player: Callable[[], Any], *, max_waiting: int = 8,
                 tts_lock: threading.Lock | None = None, name: str = "speech") -> None:
        self.speaker = Speaker(tts, MediaClock(rate, 50))
        self.open_player = open_player
        self.max_waiting = max_waiting
        self.tts_lock = tts_lock or threading.Lock()
        self.name = name
        self.current: _Answer | None = None
        self._waiting: deque[_Answer] = deque()
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> SpeechOutput:
        self._thread.start()
        return self

    @property
    def speaking(self) -> bool:
        """An answer is being spoken (and has not been cut)."""
        answer = self.current
        return answer is not None and answer.cut is None

    def say(self, pieces: str | Iterable[str], on_done: Callable[[Spoken], None] | None = None) -> int | None:
        """Queue an answer (a text, or pieces still being written); its utterance id, or None
        when closed or *max_waiting* answers already wait (then it is not spoken)."""
        with self._cond:
            if self._closed:
                return None
            if len(self._waiting) >= self.max_waiting:
                log.warning("%s: %d answers already wait; this one is not spoken", self.name, len(self._waiting))
                return None
            answer = _Answer(next(self._ids), pieces, on_done)
            self._waiting.append(answer)
            self._cond.notify()
            return answer.id

    def interrupt(self, why: Interrupt) -> bool:
        """Cut the answer being spoken and drop those waiting; True when one was being spoken.
        *why* comes back, stamped with the samples played, on each one's Spoken."""
        with self._cond:
            dropped, self._waiting = list(self._waiting), deque()
            answer = self.current if self.speaking else None
            if answer is not None:
                player = answer.player
                answer.cut = why = replace(why, at=player.played if player is not None else 0)
                if player is not None:
                    player.cancel()
        for d in dropped:
            _tell(d, Spoken(d.id, [], interrupt=why))
        return answer is not None

    def close(self, timeout: float = 5.0) -> None:
        """Cut what is being said (the session ended) and end the thread."""
        self.interrupt(Interrupt("session-ended", self.name))
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                answer = self.current = self._waiting.popleft()
            try:
                spoken = self._speak(answer)
            except Exception:  # noqa: BLE001 - a failed answer must not end the output
                log.exception("%s: speaking an answer failed", self.name)
                spoken = Spoken(answer.id, [], interrupt=answer.cut)
            with self._cond:
                self.current = None
            _tell(answer, spoken)

    def _speak(self, answer: _Answer) -> Spoken:
        player = self.open_player()
        with self._cond:
            answer.player = player
            if answer.cut is not None:
                player.cancel()
        placed: list[tuple[str, int, int]] = []  # (sentence, first sample, end sample) fed to the player
        fed, error = 0, None
        streamed = not isinstance(answer.pieces, str)
        try:
            for sentence in split_sentences([answer.pieces] if not streamed else answer.pieces, fast_start=streamed):
                if answer.cut is not None:
                    break
                with self.tts_lock:  # synthesised whole, then fed outside the lock: a full player waits alone
                    pcm = [seg.audio.pcm for seg in self.speaker.speak([sentence])]
                start, length = fed, sum(len(b) for b in pcm)
                for block in pcm:
                    if not player.feed(block):
                        break
                    fed += len(block)
                if fed > start:
                    placed.append((sentence.text, start, start + length))
                if fed - start < length:
                    break  # cancelled: cut, or the player is gone
        except Exception as exc:  # noqa: BLE001 - a dead engine: say what was made, then go on
            error = exc
            log.warning("%s: could not speak answer %d: %s", self.name, answer.id, exc)
        finally:
            player.finish()
            close = getattr(answer.pieces, "close", None)
            if callable(close):
                close()  # stop a model still writing an answer nobody will hear
        while not player.wait(0.5):
            if self._closed:
                player.cancel()
                break
        played = min(player.played, fed)
        whole = [text for text, _, end in placed if end <= played]
        part = next(((text, (played - a) / (b - a)) for text, a, b in placed if a < played < b), ("", 0.0))
        return Spoken(answer.id, whole, part[0], part[1], interrupt=answer.cut, error=error)


def _tell(answer: _Answer, spoken: Spoken) -> None:
    if answer.on_done is None:
        return
    try:
        answer.on_done(spoken)
    except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop the output
        log.warning("on_done callback failed: %s", exc)
