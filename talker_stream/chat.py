"""`talker-stream chat`: questions from the terminal (or the microphone) answered live.

Each answer streams from the model into the avatar's voice and, at the same time, onto the
terminal; the next question is read once the answer has been heard, so piped input is
answered line by line instead of being queued all at once and cut off at end of input.
"""
from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator
from typing import TextIO

from .conversation import Conversation, Question, Reply
from .errors import TalkerError
from .text import _TAG
from .timeline import Spoken

log = logging.getLogger(__name__)

CHANNEL = "terminal"
MAX_ANSWER_S = 300.0  # a reply never heard back (a stuck sink?) must not hang the prompt forever


def _echo(reply: Reply, out: TextIO) -> Iterator[str]:
    """Pass the pieces on to the voice and print them as they come, emotion tags hidden
    (a tag may arrive cut across pieces, so a trailing '[' is held back briefly)."""
    held = ""
    try:
        for piece in reply:
            yield piece
            held += piece
            cut = held.rfind("[")
            keep = cut >= 0 and "]" not in held[cut:] and len(held) - cut < 16
            text, held = (held[:cut], held[cut:]) if keep else (held, "")
            out.write(_TAG.sub("", text))
            out.flush()
    finally:
        reply.close()  # interrupted: stop the model too
        out.write(_TAG.sub("", held) + "\n")
        out.flush()


def ask(avatar, conversation: Conversation, text: str, out: TextIO, author: str = "") -> Spoken | None:
    """Speak the answer to *text*; return what was heard once it has been (None: never told)."""
    q = Question(text, author, CHANNEL)
    reply = conversation.reply(q)
    done = threading.Event()
    heard: list[Spoken] = []

    def on_done(spoken: Spoken) -> None:
        reply.heard(spoken.text)
        heard.append(spoken)
        done.set()

    try:
        avatar.say(_echo(reply, out), question=q.label, on_done=on_done)
    except Exception as exc:  # noqa: BLE001 - queue full: say so and go on
        log.warning("not queued: %s", exc)
        return None
    if not done.wait(MAX_ANSWER_S):
        log.warning("no answer was heard within %.0f s; going on", MAX_ANSWER_S)
        avatar.interrupt()
    return heard[0] if heard else None


def chat_from_terminal(avatar, conversation: Conversation, lines: TextIO, out: TextIO, prompt: bool = False) -> None:
    """One question per line until end of input."""
    while True:
        if prompt:
            out.write("> ")
            out.flush()
        line = lines.readline()
        if not line:
            return
        if line.strip():
            ask(avatar, conversation, line.strip(), out)


def mic_listener(settings):
    """The speech recogniser for ``--mic``; a clear error where it is not available."""
    if importlib.util.find_spec("talker_stream.asr") is None:
        raise TalkerError("--mic is not available yet: this version has no speech recognition "
                          "(talker_stream.asr); type your questions instead")
    raise TalkerError("--mic is not wired to talker_stream.asr yet; type your questions instead")


def chat_from_mic(avatar, conversation: Conversation, listener, settings, out: TextIO) -> None:
    raise TalkerError("--mic is not available yet")
