"""Answers begun on a guess: the model writes during the end-of-turn silence.

A spoken question is only known to be over after ``[asr] end_of_turn_ms`` of silence, and
waiting for that before even starting the model wastes most of a second. After the
shorter ``speculate_ms`` the listener already has a transcript; a Draft starts the reply
then, on its own thread, keeping what the model writes. If the turn ends as guessed, the
Draft is handed to the avatar as if it were the reply, with its head start; if the
speaker goes on, it is thrown away unheard and leaves no trace in memory.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from .conversation import Conversation, Reply

from ..frames import Question

log = logging.getLogger(__name__)

_END = object()


class Draft:
    """A Reply whose pieces are produced ahead of the consumer (same interface as Reply)."""

    def __init__(self, reply: Reply, key: tuple[float, float]) -> None:
        self.reply = reply
        self.question = reply.question
        self.key = key
        self._pieces: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, name="draft", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        try:
            for piece in self.reply:
                if self._stop.is_set():
                    break
                self._pieces.put(piece)
        except Exception as exc:  # noqa: BLE001 - handed to whoever reads the draft
            self._pieces.put(exc)
        finally:
            self.reply.close()  # only this thread may close the generator it is running
            self._pieces.put(_END)

    def __iter__(self) -> "Draft":
        return self

    def __next__(self) -> str:
        item = self._pieces.get()
        if item is _END:
            self._pieces.put(_END)  # stays exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    @property
    def failed(self) -> Exception | None:
        return self.reply.failed

    def close(self) -> None:
        """Stop the model (after its current token); the rest is never spoken."""
        self._stop.set()

    def heard(self, spoken_text: str) -> None:
        self.reply.heard(spoken_text)

    def discard(self) -> None:
        """The guess was wrong: stop, and forget the reply was ever started. Waits (briefly)
        for the model to let go, so the next draft does not queue behind this one."""
        self.close()
        self._thread.join(timeout=2.0)
        self.reply.discard()


class Drafts:
    """One draft at a time for one speaker, wired to a Listener's guess callbacks.

    ``guess`` starts a draft, ``resumed`` voids it, ``confirm`` returns the draft when the
    final transcript is the guessed one (same turn, same words) or a fresh Reply otherwise.
    """

    def __init__(self, conversation: Conversation, question: Callable[[str], Question]) -> None:
        self.conversation = conversation
        self.question = question
        self._draft: Draft | None = None
        self._lock = threading.Lock()
        self.used = self.wasted = 0

    def guess(self, text: str, start: float, end: float) -> None:
        self.resumed()
        draft = Draft(self.conversation.reply(self.question(text)), (start, end))
        with self._lock:
            self._draft = draft

    def resumed(self) -> None:
        with self._lock:
            draft, self._draft = self._draft, None
        if draft is not None:
            draft.discard()
            self.wasted += 1

    def confirm(self, text: str, start: float, end: float) -> Reply | Draft:
        with self._lock:
            draft, self._draft = self._draft, None
        if draft is not None and draft.key == (start, end) and draft.question.text == text:
            self.used += 1
            return draft
        if draft is not None:
            draft.discard()
            self.wasted += 1
        return self.conversation.reply(self.question(text))
