"""The audience: chat platforms in, one fair queue, one voice answering.

    adapters (a thread each) ─► QuestionQueue ─► answering loop ─► Conversation ─► LiveAvatar.say
         ▲                                           │
         └──────────── reply in chat (optional) ◄────┘ once the answer has been heard
         └──────────── dropped(message, why) ◄─────── a question accepted but never answered

Adapters only enqueue: a flood costs a queue operation per message, never a model call.
The answering loop takes the next question only when the avatar has finished the previous
answer, so a paid question that arrives while the avatar is talking is the very next one
asked, and nothing queues up inside the avatar where priorities no longer apply. An
adapter that raises (or returns while it should run) is restarted with backoff; the others
keep going.
"""
from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from typing import Any

from ..brain.turns import MAX_ANSWER_S, Outcome, TurnResult, Turns
from ..brain.conversation import Conversation
from ..errors import ServiceDown
from ..frames import Interrupt, Question
from ..engines import registry
from .queue import QuestionQueue
from ..frames import Queued

log = logging.getLogger(__name__)

BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 60.0
HEALTHY_S = 60.0  # an adapter that ran this long before failing starts its backoff afresh
RETRIES = 1  # a question whose answer failed (the model crashed) is asked again this many times
OUTAGE_FIRST_S, OUTAGE_MAX_S = 2.0, 30.0  # waits before asking again while an engine server is down
REPLIES_WAITING = 32  # chat replies waiting for a slow platform; beyond, they are dropped (logged)
NOTICES_WAITING = 256  # "your question was dropped" notices; a flood drops most questions, and
# these must never crowd the answers out of REPLIES_WAITING, so they wait apart and go second


def open_adapters(settings) -> list:
    """The adapters named in [chat] adapters, each built with its [adapters.NAME] options.

    An adapter class is called as ``cls(options, **extra)``, where *extra* holds whichever of
    ``base_dir``, ``reply_in_chat`` (the [chat] default) and ``settings`` its constructor
    accepts (a voice adapter needs [asr] and [tts])."""
    adapters = []
    for name in settings.chat.adapters:
        cls = registry.load_ready("adapter", name, "chat adapter")
        options = settings.adapters.get(name)
        extra = _accepted(cls, base_dir=settings.base_dir, reply_in_chat=settings.chat.reply_in_chat,
                          settings=settings)
        adapter = cls(options or None, **extra)
        adapter.name = getattr(adapter, "name", None) or name
        adapters.append(adapter)
    return adapters


def _accepted(cls: type, **offered: Any) -> dict:
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return offered
    names = {p.name for p in params}
    return {k: v for k, v in offered.items() if k in names}


class Audience:
    """Runs the adapters and answers their questions through *avatar*, one at a time."""

    def __init__(self, avatar, conversation: Conversation, adapters: list, questions: QuestionQueue,
                 reply_in_chat: bool = False, max_answer_seconds: float = MAX_ANSWER_S) -> None:
        self.avatar = avatar
        self.conversation = conversation
        self.turns = Turns(avatar, conversation, max_answer_seconds)
        self.adapters = list(adapters)
        self.questions = questions
        self.max_answer_seconds = max_answer_seconds
        # [chat] reply_in_chat, or the adapter's own reply_in_chat option, turns chat replies on
        self.replying = {id(a): reply_in_chat or bool(getattr(getattr(a, "options", None), "reply_in_chat", False))
                         for a in self.adapters}
        self.answered = 0
        self.unheard = 0  # taken, but nothing of the answer was heard (interrupted, avatar full)
        self.chat_replies = 0
        self.chat_replies_failed = 0
        self.drop_notices = 0  # adapters told that an accepted question was lost (dropped())
        self.errors = 0
        self.failed = 0  # answers the model failed to write, after RETRIES
        self.outages = 0  # answers held back because an engine server was down (the question waited)
        self._outage_wait = OUTAGE_FIRST_S
        self.restarts = {a.name: 0 for a in self.adapters}
        self.asked: list[Queued] = []  # the last questions taken, oldest first (bounded; tests and status)
        self._replies: queue.Queue[tuple[Any, Any, str]] = queue.Queue(maxsize=REPLIES_WAITING)
        self._notices: queue.Queue[tuple[Any, Any, str]] = queue.Queue(maxsize=NOTICES_WAITING)
        self.notices_skipped = 0  # drop notices past NOTICES_WAITING (a flood): not sent
        told = questions.on_dropped  # someone else's listener keeps hearing too

        def on_dropped(item: Queued, why: str) -> None:
            self._dropped(item, why)
            if told is not None:
                told(item, why)

        questions.on_dropped = on_dropped
        self._running = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, settings, avatar, conversation: Conversation, adapters: list | None = None) -> "Audience":
        adapters = open_adapters(settings) if adapters is None else adapters
        return cls(avatar, conversation, adapters, QuestionQueue.from_settings(settings), settings.chat.reply_in_chat)

    # -- life --------------------------------------------------------------------------------
    def start(self) -> "Audience":
        self._running.set()
        self._spawn(self._answer_loop, "audience-answers")
        self._spawn(self._reply_loop, "audience-replies")
        for a in self.adapters:
            self._spawn(lambda a=a: self._keep_running(a), f"adapter-{a.name}")
        if hasattr(self.avatar, "reporters"):
            self.avatar.reporters["chat"] = self
        return self

    def _spawn(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._running.clear()
        self._stopping.set()
        for a in self.adapters:
            try:
                a.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                log.warning("chat adapter %s did not stop cleanly: %s", a.name, exc)
        self.questions.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))  # the numbers stay on the avatar's status: final totals

    def __enter__(self) -> "Audience":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- adapters ----------------------------------------------------------------------------
    def _keep_running(self, adapter) -> None:
        delay = BACKOFF_FIRST_S

        def on_message(message) -> str:  # the adapter's thread: enqueue and return what happened
            try:
                return self.questions.offer(message, source=adapter)
            except Exception as exc:  # noqa: BLE001 - never into the adapter's loop
                log.warning("chat adapter %s: a message could not be queued: %s", adapter.name, exc)
                return "error"

        while self._running.is_set():
            started = time.monotonic()
            try:
                adapter.run(on_message)
                if not self._running.is_set():
                    return
                why = "stopped by itself"
            except Exception as exc:  # noqa: BLE001 - restart it; the other platforms go on
                why = f"failed: {type(exc).__name__}: {exc}"
            if time.monotonic() - started > HEALTHY_S:
                delay = BACKOFF_FIRST_S
            self.restarts[adapter.name] += 1
            log.warning("chat adapter %s %s; restarting in %.0f s", adapter.name, why, delay)
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX_S)

    # -- answering ---------------------------------------------------------------------------
    def _answer_loop(self) -> None:
        while self._running.is_set():
            item = self.questions.take(timeout=0.5)
            if item is None:
                continue
            try:
                self.answer(item)
            except Exception as exc:  # noqa: BLE001 - one bad question must not end the show
                self.errors += 1
                log.warning("could not answer %s: %s", item.author or "?", exc)
                self._dropped(item, "unheard")

    def answer(self, item: Queued) -> TurnResult | None:
        """One turn for *item* (moderated already, by the queue), under the asker's name:
        wait until heard (stopping early when the audience stops), then reply in chat, ask
        again after a failure, or tell the platform it was dropped."""
        self.asked.append(item)
        del self.asked[:-50]
        question = Question(item.text, item.author, item.channel, moderated=True)
        turn = self.turns.ask(question, caption=item.label, echo=self._spoken_along(item))
        deadline = time.monotonic() + self.max_answer_seconds
        while (result := turn.wait(0.2)) is None:
            if not self._running.is_set():
                return None
            if time.monotonic() > deadline:
                log.warning("no answer to %s was heard within %.0f s; going on", item.author, self.max_answer_seconds)
                self.avatar.interrupt(Interrupt("timeout", "audience"))
                result = turn.wait(10.0)
                break
        if result is None or result.outcome is Outcome.DROPPED:
            self.unheard += 1
            self._dropped(item, "unheard")
            if result is not None and result.spoken.utterance is None:
                self._stopping.wait(1.0)  # the avatar was full: let it speak before the next
            return result
        if result.outcome is Outcome.FAILED:
            if isinstance(result.error, ServiceDown) and not result.heard:
                self._outage(item, result.error)
            else:
                self._failed(item, result.error)
            return result
        self._outage_wait = OUTAGE_FIRST_S
        self.answered += 1
        if item.source is not None and self.replying.get(id(item.source)):
            try:
                self._replies.put_nowait((item.source, item.message, result.heard))
            except queue.Full:
                self.chat_replies_failed += 1
                log.warning("chat reply to %s dropped: %d replies already wait", item.author, REPLIES_WAITING)
        return result

    def _spoken_along(self, item: Queued):
        """The adapter's ``speak_along`` pass-through for a question it can hear answered (a
        spoken one in a voice channel), when it replies at all; None otherwise."""
        along = getattr(item.source, "speak_along", None)
        if not callable(along) or not self.replying.get(id(item.source)):
            return None
        try:
            return along(item.message)
        except Exception as exc:  # noqa: BLE001 - the stream still answers
            log.warning("chat adapter %s cannot speak along: %s", item.source.name, exc)
            return None

    def _outage(self, item: Queued, why: Exception) -> None:
        """An engine server is down (nothing was said): the question goes back to its place
        without using its retry, and the answering loop waits (2 s, doubling to 30 s) before
        asking again, so an outage costs the queue nothing but time; questions that grow too
        old meanwhile expire by the queue's own rule and their platforms are told."""
        self.outages += 1
        if not self.questions.requeue(item):
            self._dropped(item, "failed")
            return
        log.warning("%s; %d questions wait, asking again in %.0f s", why, len(self.questions), self._outage_wait)
        self._stopping.wait(self._outage_wait)
        self._outage_wait = min(self._outage_wait * 2, OUTAGE_MAX_S)

    def _failed(self, item: Queued, why: Exception) -> None:
        """The model failed while answering (it crashed and is restarting): the avatar has
        said a short apology; the question goes back to its place in the queue, once, and
        after that its platform is told it failed."""
        if item.attempts < RETRIES and self._running.is_set():
            item.attempts += 1
            if self.questions.requeue(item):
                log.warning("%s's question goes back to the queue: %s", item.author or "?", why)
                return
        self.failed += 1
        self._dropped(item, "failed")

    def _dropped(self, item: Queued, why: str) -> None:
        """An accepted question will not be answered: queue a ``dropped(message, why)`` for its
        adapter, if it has that method, on the reply thread. Never blocks (the queue calls
        this from adapters' threads and the answering loop)."""
        adapter = item.source
        if adapter is None or not callable(getattr(adapter, "dropped", None)):
            return
        try:
            self._notices.put_nowait((adapter, item.message, why))
        except queue.Full:
            self.notices_skipped += 1
            log.debug("not telling %s that %s's question was dropped: %d notices already wait",
                      getattr(adapter, "name", "?"), item.author or "?", NOTICES_WAITING)

    def _reply_loop(self) -> None:
        """Chat replies on their own thread: a platform's rate limit never holds the voice.
        Answers go first; drop notices when no answer waits."""
        while self._running.is_set():
            try:
                adapter, message, text = self._replies.get(timeout=0.5 if self._notices.empty() else 0.01)
            except queue.Empty:
                try:
                    adapter, message, why = self._notices.get_nowait()
                except queue.Empty:
                    continue
                self._tell_dropped(adapter, message, why)
                continue
            try:
                ok = adapter.reply(message, text)
            except Exception as exc:  # noqa: BLE001 - a failed reply is only logged
                ok = False
                log.warning("chat adapter %s could not reply: %s", adapter.name, exc)
            if ok:
                self.chat_replies += 1
            else:
                self.chat_replies_failed += 1

    def _tell_dropped(self, adapter, message, why: str) -> None:
        try:
            adapter.dropped(message, why)
            self.drop_notices += 1
        except Exception as exc:  # noqa: BLE001 - only logged
            log.warning("chat adapter %s could not be told of a dropped question: %s", adapter.name, exc)

    # -- numbers -----------------------------------------------------------------------------
    def stats(self) -> dict:
        return {**self.questions.stats(), "answered": self.answered, "unheard": self.unheard,
                "chat_replies": self.chat_replies, "chat_replies_failed": self.chat_replies_failed,
                "drop_notices": self.drop_notices, "notices_skipped": self.notices_skipped,
                "errors": self.errors, "failed": self.failed, "outages": self.outages, "adapters": {a.name: {"restarts": self.restarts[a.name]} for a in self.adapters}}

    def status(self) -> str:
        s = self.stats()
        return (f"chat {s['queued']} waiting, {s['answered']} answered, {s['merged']} merged, "
                f"{s['rate_limited']} limited, {s['expired'] + s['dropped_full'] + s['failed']} dropped, {s['refused']} refused")
