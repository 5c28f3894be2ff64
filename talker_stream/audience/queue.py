"""The audience question queue: one fair line for every chat platform.

A live stream can get a hundred messages a second and the avatar answers one question at a
time, so most messages are never answered; the queue decides which are, in an order the
audience can see is fair:

- **priority** first (paid > moderator > regular), then the oldest. Paid amounts are not
  compared: bits, yuan and dollars are different units, so paid questions are first come,
  first served among themselves.
- **near-duplicates merge** ("what's your name??" and "What is your name 😀"): the merged
  question keeps the earliest time and the highest priority, counts its askers, and its
  caption names the first one ("ana +3 asks: ..."). A repeat of a question answered a
  moment ago is merged into that answer instead of being asked again (a paid one is
  queued: the viewer paid to be answered).
- **per-user rate limits** (``ChatMessage.who``): at most ``per_user`` questions per
  ``per_user_seconds``. A paid message is never refused for that: the viewer paid for it.
- **a maximum age**: a question older than that is dropped (and logged) instead of being
  answered minutes after the conversation moved on.
- **a size cap**: when full, the lowest-priority oldest question goes; a new question that
  ranks below everything queued is the one refused. A paid question never goes before a
  regular one.
- **no silent losses**: an accepted question that leaves the queue unanswered (expired, or
  pushed out of a full queue) is handed to ``on_dropped(item, why)`` (why: "expired" or
  "dropped_full"), outside the queue's lock, so the core can tell the asker's platform.
- **moderation** before anything is queued: refusals (blocklist, injection, empty) are
  logged and counted, never answered aloud.
  Names are cleaned too (they reach the caption and the prompt): a blocked or
  instructing name is shown as "Someone".

Everything is bounded: the queue by its cap, the per-user state by pruning and a cap on
users, the answered-recently memory by a short window and a ring.
"""
from __future__ import annotations

import difflib
import functools
import logging
import math
import re
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..frames import PAID, ChatMessage, Queued
from ..brain.moderation import Moderator, speaker_name
from ..speech.text import clean

log = logging.getLogger(__name__)

COMPARE_CHARS = 200  # near-duplicate checks look at this much of each question
MAX_ASKERS_KEPT = 32  # who asked a merged question: the count goes on, the names stop here
RECENT_SECONDS = 30.0  # a repeat of a question answered this recently is merged into that answer
RECENT_KEPT = 16
MAX_USERS_TRACKED = 20000  # per-user rate-limit state; the least recently seen go first
SPELLING_RATIO = 0.8  # two words of 4+ letters this alike are one word spelt two ways (colour, color)
RESPELLING_PAIRS = 64  # two questions with more pairs of unshared words than this are not searched for respellings
RESPELLING_CHECKS = 256  # word pairs one new question may check for respellings, all queued questions together

_TOKEN = re.compile(r"[\u2e80-\u9fff\u3040-\u30ff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+")
_REPEATS = re.compile(r"([^\W\d_])\1+")  # stretched letters; digits stay as written
_CONTRACTION = re.compile(r"\b(can|won|ain)['’]t\b|n['’]t\b|(?<=\w)['’](s|re|m|ll|ve|d)\b")
_LONG_FORMS = {"can": "can not", "won": "will not", "ain": "is not", "s": " is", "re": " are", "m": " am",
               "ll": " will", "ve": " have", "d": " would"}
# chat spellings, written out (after stretched letters are folded: "whats" stays, "doesnt" -> "desnt")
_CHAT_WORDS = {"whats": "what is", "hows": "how is", "wheres": "where is", "whos": "who is", "thats": "that is",
               "im": "i am", "youre": "you are", "ur": "your", "u": "you", "r": "are", "dont": "do not",
               "cant": "can not", "cannot": "can not", "wont": "will not", "isnt": "is not", "pls": "please",
               "plz": "please", "desnt": "does not", "didnt": "did not", "ya": "you", "wat": "what"}


def normalise(text: str) -> str:
    """Text as a duplicate check sees it: case, width, punctuation, emoji and stretched
    letters ("sooo coool!!!") folded away, contractions and chat spellings written out
    ("what's", "whats" -> "what is"); CJK characters kept one by one."""
    text = unicodedata.normalize("NFKC", text[: COMPARE_CHARS * 2]).casefold()
    text = _CONTRACTION.sub(lambda m: _LONG_FORMS[m.group(1) or m.group(2)] if m.group(1) or m.group(2) else " not",
                           text)
    words = (_REPEATS.sub(r"\1", t) for t in _TOKEN.findall(text))
    return _REPEATS.sub(r"\1", " ".join(_CHAT_WORDS.get(w, w) for w in words))[:COMPARE_CHARS]


def similarity(a: str, b: str, a_tokens: frozenset | None = None, b_tokens: frozenset | None = None,
               floor: float = 0.0, checks: list[int] | None = None) -> float:
    """Token-set Jaccard, counting two longer words spelt nearly alike as the same word.

    Word sets rather than characters: "what is your name" and "what is your game" differ by
    one letter but are different questions, while "how old are you" and "tess how old are
    you" are the same one. With a *floor*, only whether it is reached is exact: below it,
    or once it is reached, the search for respellings stops, and it is not tried at all
    between two questions with more than ``RESPELLING_PAIRS`` pairs of unshared words (a
    chat flood of long messages must not make every new question slow to queue). *checks*,
    a one-item list, is how many word pairs may still be compared for respellings; it is
    counted down, and the search stops at 0."""
    ta = a_tokens if a_tokens is not None else frozenset(a.split())
    tb = b_tokens if b_tokens is not None else frozenset(b.split())
    na, nb = len(ta), len(tb)
    if not na or not nb or min(na, nb) < floor * max(na, nb):
        return 0.0  # the sizes alone rule it out
    same = len(ta & tb)
    union = na + nb - same
    if floor and same >= floor * union:
        return same / union  # similar enough already
    # only words of 4+ letters can be respellings of each other (numbers never)
    only_a = [w for w in ta - tb if len(w) >= 4 and w.isalpha()]
    only_b = [w for w in tb - ta if len(w) >= 4 and w.isalpha()]
    misses = len(only_a)  # unshared words of a that may find no respelling, the floor still reachable
    if floor:
        # each respelling found makes two unshared words one shared word: same + 1, union - 1
        need = math.ceil((floor * union - same) / (1 + floor) - 1e-9)
        if need > min(len(only_a), len(only_b)) or len(only_a) * len(only_b) > RESPELLING_PAIRS:
            return same / union
        misses -= need
    only_a.sort()
    only_b.sort()
    for w in only_a:
        for v in only_b:
            if checks is not None:
                if checks[0] <= 0:
                    return same / union
                checks[0] -= 1
            if _respelt(w, v):
                same += 1
                union -= 1
                only_b.remove(v)
                break
        else:
            misses -= 1
            if misses < 0:
                break  # too few words left to reach the floor
        if floor and same >= floor * union:
            break
    return same / union


@functools.lru_cache(maxsize=4096)  # chat repeats its words: most pairs were seen a moment ago
def _respelt(w: str, v: str) -> bool:
    if abs(len(v) - len(w)) > 2:
        return False
    m = difflib.SequenceMatcher(None, w, v)
    return m.quick_ratio() >= SPELLING_RATIO and m.ratio() >= SPELLING_RATIO


@dataclass
class QueueStats:
    accepted: int = 0
    merged: int = 0
    rate_limited: int = 0
    expired: int = 0
    dropped_full: int = 0
    refused: int = 0
    taken: int = 0
    requeued: int = 0


class QuestionQueue:
    """Thread-safe: adapters ``offer()`` from their own threads, the answering loop ``take()``s.

    *on_dropped(item, why)* (also settable as the attribute) hears of every accepted question
    that leaves unanswered: why is "expired" (past the maximum age) or "dropped_full" (pushed
    out by a higher-ranking one). It is called on whichever thread noticed (an adapter's in
    ``offer``, the answering loop's in ``take``), never under the queue's lock, so it may use
    the queue; it should be quick. What it raises is logged, never passed on."""

    def __init__(self, max_size: int = 100, max_age_seconds: float = 300.0, per_user: int = 2,
                 per_user_seconds: float = 60.0, duplicate_threshold: float = 0.8,
                 moderator: Moderator | None = None, clock: Callable[[], float] = time.monotonic,
                 on_dropped: Callable[[Queued, str], Any] | None = None) -> None:
        self.max_size = max_size
        self.max_age = max_age_seconds
        self.per_user = per_user
        self.per_user_seconds = per_user_seconds
        self.threshold = duplicate_threshold
        self.moderator = moderator or Moderator()
        self.clock = clock
        self.on_dropped = on_dropped
        self.counts = QueueStats()
        self._items: list[Queued] = []  # small (max_size): a list scan beats a heap with merges and evictions
        self._recent: deque[Queued] = deque(maxlen=RECENT_KEPT)  # taken lately, for repeats
        self._users: OrderedDict[str, deque[float]] = OrderedDict()  # who -> times of their recent questions
        self._seq = 0
        self._cond = threading.Condition()
        self._closed = False

    @classmethod
    def from_settings(cls, settings) -> "QuestionQueue":
        c, m = settings.chat, settings.moderation
        return cls(c.max_size, c.max_age_seconds, c.per_user, c.per_user_seconds, c.duplicate_threshold,
                   Moderator(list(m.blocklist), m.max_question_chars))

    # -- in ----------------------------------------------------------------------------------
    def offer(self, message: ChatMessage, source: Any = None) -> str:
        """Queue *message* (from adapter *source*) as a question. Never blocks and never raises
        on bad input; returns what happened: accepted, merged, rate_limited, expired,
        dropped_full or refused."""
        now = self.clock()
        try:
            message = _sane(message, now, self._speaker)
            verdict = self.moderator.question(message.text)
            key = normalise(verdict.text) if verdict.ok else ""
        except Exception as exc:  # noqa: BLE001 - one strange message must not reach the adapter's loop
            verdict, key = None, ""
            log.warning("a message from %s could not be read: %s", _name(message), exc)
        dropped: list[tuple[Queued, str]] = []  # accepted earlier, gone now: told once the lock is released
        with self._cond:
            outcome = self._admit(message, source, verdict, key, now, dropped)
        self._tell(dropped)
        return outcome

    def _admit(self, message: ChatMessage, source: Any, verdict, key: str, now: float,
               dropped: list[tuple[Queued, str]]) -> str:
        """offer() under the lock; questions it pushes out (or finds expired) go on *dropped*."""
        if verdict is None or not verdict.ok or not key:
            self.counts.refused += 1
            log.info("refused %s's question (%s)", _name(message), verdict.reason if verdict and not verdict.ok
                     else "no words")
            return "refused"
        self._expire(now, dropped)
        if now - message.received > self.max_age:
            self.counts.expired += 1
            log.info("dropped %s's question: already %.0f s old", _name(message), now - message.received)
            return "expired"
        if message.priority < PAID and not self._allow(message.who, now):
            self.counts.rate_limited += 1
            return "rate_limited"
        tokens = frozenset(key.split())
        # a paid question is never absorbed by one answered a moment ago: the viewer paid to be answered
        same = self._find_duplicate(key, tokens, now, recent=message.priority < PAID)
        if same is not None:
            self._merge(same, message)
            self.counts.merged += 1
            return "merged"
        self._seq += 1
        item = Queued(message, verdict.text, key, message.priority, min(message.received, now), self._seq,
                      paid=message.paid, paid_label=message.paid_label, who={message.who}, tokens=tokens, source=source)
        if len(self._items) >= self.max_size:
            victim = max(self._items, key=lambda q: (-q.priority, -q.received, -q.seq))  # lowest, then oldest
            if victim.priority > item.priority:
                self.counts.dropped_full += 1
                log.info("queue full: dropped %s's question", _name(message))
                return "dropped_full"
            self._items.remove(victim)
            self.counts.dropped_full += 1
            log.info("queue full: dropped %s's question to make room", victim.author or "?")
            dropped.append((victim, "dropped_full"))
        self._items.append(item)
        self.counts.accepted += 1
        self._cond.notify()
        return "accepted"

    def _speaker(self, author: str) -> str:
        """A viewer's display name as the caption and the prompt show it: cleaned like a
        question (no control, bidi or zero-width characters, no emoji), capped, and
        "Someone" when it is empty, blocked or tries to instruct the model."""
        name = speaker_name(author)
        if name != "Someone" and not self.moderator.question(author[:200]).ok:
            return "Someone"
        return name

    def _allow(self, who: str, now: float) -> bool:
        self._prune_users(now)
        times = self._users.pop(who, None) or deque(maxlen=self.per_user)
        self._users[who] = times  # most recently seen last
        while times and now - times[0] >= self.per_user_seconds:
            times.popleft()
        if len(times) >= self.per_user:
            return False
        times.append(now)
        return True

    def _prune_users(self, now: float) -> None:
        """Forget users quiet for a whole window, and the least recently seen past the cap."""
        while self._users:
            times = next(iter(self._users.values()))
            if len(self._users) < MAX_USERS_TRACKED and times and now - times[-1] < self.per_user_seconds:
                break
            self._users.popitem(last=False)

    def _find_duplicate(self, key: str, tokens: frozenset, now: float, recent: bool = True) -> Queued | None:
        """The queued (or, with *recent*, just answered) question *key* repeats, if any."""
        best, best_sim = None, self.threshold
        checks = [RESPELLING_CHECKS]  # the lock is held: the respelling search is bounded per question
        answered = [q for q in self._recent if q.taken_at is not None and now - q.taken_at <= RECENT_SECONDS] \
            if recent else []
        for q in (*self._items, *answered):
            if q.key == key:
                return q
            if not q.tokens & tokens:
                continue  # not a word in common: not the same question
            s = similarity(key, q.key, tokens, q.tokens, best_sim, checks)
            if s >= best_sim:
                best, best_sim = q, s
        return best

    def _merge(self, q: Queued, message: ChatMessage) -> None:
        if message.who not in q.who:  # the same person again is not another asker (but may have paid now)
            q.askers += 1
            if len(q.who) < MAX_ASKERS_KEPT:
                q.who.add(message.who)
        q.priority = max(q.priority, message.priority)
        q.received = min(q.received, message.received)
        if message.paid > q.paid:
            q.paid, q.paid_label = message.paid, message.paid_label

    # -- out ---------------------------------------------------------------------------------
    def take(self, timeout: float | None = None) -> Queued | None:
        """The next question to answer, waiting up to *timeout* seconds (None: until one
        comes or the queue is closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            dropped: list[tuple[Queued, str]] = []
            item, done = None, True
            with self._cond:
                self._expire(self.clock(), dropped)
                if self._items:
                    item = min(self._items, key=Queued.rank)
                    self._items.remove(item)
                    self.counts.taken += 1
                    item.taken_at = self.clock()  # repeats asked while it is answered merge into it
                    self._recent.append(item)
                elif not self._closed:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is None or left > 0:
                        done = False
                        if not dropped:  # else: tell them first (outside the lock), then wait
                            self._cond.wait(left if left is not None else 1.0)
            self._tell(dropped)
            if done:
                return item

    def requeue(self, item: Queued) -> bool:
        """Put a taken question back in its old place (its answer failed: the model crashed).
        It keeps its rank, so it is the next answered among its priority; False when closed."""
        with self._cond:
            if self._closed:
                return False
            item.taken_at = None
            self._items.append(item)
            self.counts.requeued += 1
            self._cond.notify()
            return True

    def _expire(self, now: float, dropped: list[tuple[Queued, str]]) -> None:
        old = [q for q in self._items if now - q.received > self.max_age]
        for q in old:
            self._items.remove(q)
            self.counts.expired += 1
            log.info("dropped %s's question after %.0f s unanswered: %.60s", q.author or "?", now - q.received, q.text)
            dropped.append((q, "expired"))

    def _tell(self, dropped: list[tuple[Queued, str]]) -> None:
        """on_dropped for each question that left unanswered; the lock must not be held."""
        callback = self.on_dropped
        if callback is None:
            return
        for item, why in dropped:
            try:
                callback(item, why)
            except Exception:  # noqa: BLE001 - a listener's bug must not reach an adapter or the answering loop
                log.exception("on_dropped failed for %s's question (%s)", item.author or "?", why)

    def close(self) -> None:
        """Wake every waiting take(): it returns None once the queue is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def snapshot(self) -> list[Queued]:
        """The queued questions in the order they would be answered."""
        with self._cond:
            return sorted(self._items, key=Queued.rank)

    def stats(self) -> dict:
        with self._cond:
            c = self.counts
            return {"queued": len(self._items), "accepted": c.accepted, "merged": c.merged,
                    "rate_limited": c.rate_limited, "expired": c.expired, "dropped_full": c.dropped_full,
                    "refused": c.refused, "taken": c.taken, "requeued": c.requeued, "users_tracked": len(self._users)}


def _sane(m: ChatMessage, now: float, speaker: Callable[[str], str]) -> ChatMessage:
    """A copy with every field of the promised type and size: an adapter's bug (or a
    platform's oddity) stops here. The name goes on the caption and into the prompt, so it
    is what *speaker* makes of it; the rate-limit key stays the viewer's own."""
    def line(value, cap: int) -> str:
        return " ".join(str(value or "").split())[:cap]

    author, author_id = line(m.author, 200), line(m.author_id, 200)
    paid, received = float(m.paid or 0), float(m.received)
    return ChatMessage(line(m.platform, 40), line(m.channel, 200), speaker(author), str(m.text or ""),
                       author_id or author.lower(), paid if math.isfinite(paid) else 0.0,
                       line(clean(str(m.paid_label or ""))[0], 60),
                       bool(m.moderator), received if math.isfinite(received) and received <= now else now, m.handle)


def _name(message: ChatMessage) -> str:
    return f"{getattr(message, 'platform', '?')}:{str(getattr(message, 'author', '?'))[:40]}"
