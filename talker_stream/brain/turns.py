"""The one turn path every question takes, whoever asked it.

    ask ─► moderated once (at the front door: the queue for chat, the conversation otherwise)
        ─► the answer streams from the model into speech (the first clause is spoken while
           the model writes the rest)
        ─► wait until it has been heard (the last frame played, or the avatar was cut off)
        ─► memory keeps only what was heard
        ─► the outcome goes back to the source: answered, interrupted, dropped or failed
           (an interrupted or dropped one carries the Interrupt that cut it: why, and who)

The terminal chat, the microphone, the audience runner, the browser sessions and the HTTP
API all use :class:`Turns`; none of them waits, times out or interrupts on its own.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum

from ..speech.text import strip_tags
from ..frames import Interrupt, Spoken

log = logging.getLogger(__name__)

MAX_ANSWER_S = 300.0  # an answer never reported heard (a stuck sink?) must not hang its source


class Outcome(str, Enum):
    ANSWERED = "answered"  # heard to the end
    INTERRUPTED = "interrupted"  # cut off (barge-in, the operator, a timeout): part was heard
    DROPPED = "dropped"  # nothing of it was heard (the avatar was full, or cut before a word)
    FAILED = "failed"  # the model or the voice failed on it (crashed, unreachable)


@dataclass
class TurnResult:
    outcome: Outcome
    heard: str  # what the audience heard of the answer, tags removed
    spoken: Spoken
    error: Exception | None = None

    @property
    def interrupt(self) -> Interrupt | None:
        """Why it was cut (barge-in, operator, timeout...), when it was."""
        return self.spoken.interrupt


class Turn:
    """One question on its way: wait for it, or be called back (``on_done``)."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.result: TurnResult | None = None
        self._done = threading.Event()

    def done(self, result: TurnResult) -> None:
        self.result = result
        self._done.set()

    def wait(self, timeout: float | None = None) -> TurnResult | None:
        self._done.wait(timeout)
        return self.result


class Turns:
    """Asks *conversation* and says the answer through *avatar*, one turn at a time per call."""

    def __init__(self, avatar, conversation, max_answer_seconds: float = MAX_ANSWER_S) -> None:
        self.avatar = avatar
        self.conversation = conversation
        self.max_answer_seconds = max_answer_seconds

    def ask(self, question, reply=None, caption: str | None = None,
            echo: Callable[[Iterator[str]], Iterator[str]] | None = None,
            on_done: Callable[[TurnResult], None] | None = None) -> Turn:
        """Start a turn. *reply*: an answer already begun for *question* (a draft); *caption*:
        what the viewers see it answer (default ``question.label``); *echo*: a pass-through
        for the pieces on their way to the voice (the terminal prints them)."""
        reply = reply or self.conversation.reply(question)
        turn = Turn(reply)

        def finished(spoken: Spoken) -> None:
            reply.heard(spoken.text)  # memory: only what was heard
            result = _result(reply, spoken)
            turn.done(result)
            if on_done is not None:
                on_done(result)

        pieces = echo(reply) if echo is not None else reply
        try:
            self.avatar.say(pieces, question=caption if caption is not None else question.label, on_done=finished)
        except queue.Full:
            log.warning("the avatar has too much to say already; %s's question is dropped", question.author or "a")
            discard = getattr(reply, "discard", None)
            (discard or reply.close)()  # a draft's model thread must not write on for nobody
            finished(Spoken(None, []))
        return turn

    def answer(self, question, **kw) -> TurnResult:
        """:meth:`ask` and wait until heard; past ``max_answer_seconds`` the avatar is
        interrupted (and what was heard by then is the result)."""
        turn = self.ask(question, **kw)
        result = turn.wait(self.max_answer_seconds)
        if result is None:
            log.warning("no answer was heard within %.0f s; interrupting", self.max_answer_seconds)
            self.avatar.interrupt(Interrupt("timeout", "turns"))
            result = turn.wait(10.0)
        return result or TurnResult(Outcome.DROPPED, "", Spoken(None, []))


def _result(reply, spoken: Spoken) -> TurnResult:
    heard = " ".join(strip_tags(spoken.text).split())
    failed = getattr(reply, "failed", None) or spoken.error  # the model or the voice
    if failed is not None:
        return TurnResult(Outcome.FAILED, heard, spoken, failed)
    if not heard:
        return TurnResult(Outcome.DROPPED, heard, spoken)
    if spoken.partial:
        return TurnResult(Outcome.INTERRUPTED, heard, spoken)
    return TurnResult(Outcome.ANSWERED, heard, spoken)
