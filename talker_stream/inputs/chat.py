"""`talker-stream chat`: questions from the terminal (or the microphone) answered live.

Each answer streams from the model into the avatar's voice and, at the same time, onto the
terminal; the next question is read once the answer has been heard, so piped input is
answered line by line instead of being queued all at once and cut off at end of input.
"""
from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from ..brain.drafts import Draft, Drafts
from ..brain.turns import TurnResult, Turns
from ..brain.conversation import Conversation, Reply
from ..frames import Interrupt, Question
from ..errors import TalkerError
from ..speech.text import strip_tags

log = logging.getLogger(__name__)

CHANNEL = "terminal"


class Console:
    """The terminal, written from several threads (answers stream from the speech thread,
    spoken questions arrive on the ASR thread): each line is started cleanly."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()
        self._fresh = True  # at the start of a line

    def write(self, text: str) -> None:
        with self._lock:
            if self._fresh:
                text = text.lstrip(" ")
            if text:
                self.out.write(text)
                self.out.flush()
                self._fresh = text.endswith("\n")

    def typed(self) -> None:
        """The user pressed Enter after a prompt: the terminal is at a line start."""
        with self._lock:
            self._fresh = True

    def line(self, text: str = "") -> None:
        """*text* on a line of its own (ends the current line first)."""
        with self._lock:
            self.out.write(("" if self._fresh else "\n") + (text + "\n" if text else ""))
            self.out.flush()
            self._fresh = True


def _echo(reply: Reply | Draft, out: Console) -> Iterator[str]:
    """Pass the pieces on to the voice and print them as they come, emotion tags hidden
    (a tag may arrive cut across pieces, so a trailing '[' is held back briefly). Closing
    it (the avatar was interrupted) stops the model."""
    held = ""
    try:
        for piece in reply:
            yield piece
            held += piece
            cut = held.rfind("[")
            keep = cut >= 0 and "]" not in held[cut:] and len(held) - cut < 16
            text, held = (held[:cut], held[cut:]) if keep else (held, "")
            out.write(_show(text))
    finally:
        reply.close()  # interrupted: stop the model too
        out.write(_show(held))
        out.line()


def _show(text: str) -> str:
    """Model text for the terminal: no emotion tags, one line per answer."""
    return re.sub(r"[ \t]*\n\s*", " ", strip_tags(text))


def ask(avatar, conversation: Conversation, text: str, out: Console, author: str = "", wait: bool = True,
        on_done=None, reply: Reply | Draft | None = None) -> TurnResult | None:
    """The turn for *text* (or the *reply* already begun for it), its answer printed as it
    is spoken. With *wait*, return what became of it once heard; otherwise return at once
    (the microphone keeps listening) and tell *on_done*."""
    question = reply.question if reply is not None else Question(text, author, CHANNEL)
    turns = Turns(avatar, conversation)
    echo = lambda pieces: _echo(pieces, out)  # noqa: E731
    if wait:
        return turns.answer(question, reply=reply, echo=echo, on_done=on_done)
    turns.ask(question, reply=reply, echo=echo, on_done=on_done)
    return None


def chat_from_terminal(avatar, conversation: Conversation, lines: TextIO, out: TextIO, prompt: bool = False) -> None:
    """One question per line until end of input."""
    console = Console(out)
    while True:
        if prompt:
            console.write("> ")
        line = lines.readline()
        if not line:
            console.line()
            return
        if prompt:
            console.typed()
        if line.strip():
            ask(avatar, conversation, line.strip(), console)


def mic_listener(settings):
    """The ear for ``--mic`` (Silero VAD + Whisper from [asr]), loaded before anything starts."""
    try:
        from ..brain.asr import Listener
    except ImportError as exc:
        raise TalkerError(f"--mic is not available: speech recognition cannot load ({exc}); "
                          "type your questions instead") from None
    return Listener.from_settings(settings)


def open_microphone() -> Iterator:
    """The default microphone, opened now: a missing one fails before the avatar starts."""
    from ..brain.asr import microphone_source

    source = microphone_source()
    first = next(source)

    def primed() -> Iterator:
        try:
            yield first
            yield from source
        finally:
            source.close()

    return primed()


def open_recording(path: str) -> Iterator:
    """Spoken questions from an audio file (anything FFmpeg decodes), heard in real time as if
    from a microphone. A missing or broken file fails now, before the avatar starts; the
    pacing clock starts with the first block the listener takes."""
    from ..brain.asr import file_source

    probe = file_source(path)
    try:
        next(probe, None)  # InputError: not audio, truncated, unreadable
    finally:
        probe.close()
    return file_source(path, realtime=True)


def chat_from_mic(avatar, conversation: Conversation, listener, source, out: TextIO, linger: float = 0.0,
                  who: str = "microphone") -> None:
    """Answer each spoken turn until the source ends. Barge-in: speech that starts while an
    answer is still being written or spoken cuts it off (the listener calls back only when
    [asr] barge_in is on), and memory keeps what was heard of it. The answer is begun
    during the end-of-turn silence ([asr] speculate_ms) and kept back until the turn ends.
    With *linger*, wait up to that many seconds after the source ends for the answers still
    being spoken (a recording ends; a microphone is stopped on purpose). *who* names the
    microphone on the barge-in's Interrupt."""
    console = Console(out)
    drafts = Drafts(conversation, lambda text: Question(text, "", CHANNEL))
    answering: set[int] = set()  # answers still being written or spoken
    lock = threading.Lock()
    ids = itertools.count()

    def on_speech_start() -> None:
        with lock:
            busy = bool(answering)
        if busy:
            avatar.interrupt(Interrupt("barge-in", who))

    def on_question(text: str, start: float, end: float) -> None:
        console.line(f"you: {text}")
        key = next(ids)
        with lock:
            answering.add(key)
        reply = drafts.confirm(text, start, end)
        ask(avatar, conversation, text, console, wait=False, on_done=lambda _s: _forget(key), reply=reply)

    def _forget(key: int) -> None:
        with lock:
            answering.discard(key)

    listener.on_speech_start = on_speech_start
    listener.on_question = on_question
    listener.on_guess = drafts.guess
    listener.on_resumed = drafts.resumed
    listener.run(source)
    deadline = time.monotonic() + linger
    while time.monotonic() < deadline:
        with lock:
            if not answering:
                return
        time.sleep(0.05)
