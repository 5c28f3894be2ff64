"""Every type that flows through the pipeline, in one place (pipecat keeps its frames.py so).

In the order data moves: a ChatMessage from a platform becomes a Queued question, a
Question reaches the brain; the answer's Sentences become AudioChunks, SpeechSegments on
the timeline, a FramePlan per frame and an OutFrame for the sinks; what was heard comes
back as Spoken; a transcribed turn is Heard. An Interrupt is the one control value: it
overtakes the data queued ahead of it, and the Spoken it cuts carries it back."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .face.params import FaceParams


@dataclass(frozen=True)
class Phoneme:
    """One phoneme and where it sits in its chunk, in samples of the chunk's rate."""

    symbol: str
    start: int
    length: int


@dataclass
class AudioChunk:
    """Mono float32 PCM in [-1, 1]; phonemes when the engine knows them."""

    pcm: np.ndarray
    sample_rate: int
    phonemes: list[Phoneme] | None = None

    def __post_init__(self) -> None:
        pcm = np.asarray(self.pcm, dtype=np.float32)
        if pcm.ndim != 1:
            raise ValueError("AudioChunk.pcm must be mono (1-D)")
        self.pcm = pcm

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.sample_rate


@dataclass
class Sentence:
    """A piece of text the avatar says, with the emotion it says it with."""

    text: str
    emotion: str = "neutral"


@dataclass
class SpeechSegment:
    """One spoken sentence at the clock's sample rate, ready to be put on the timeline."""

    sentence: Sentence
    audio: AudioChunk
    utterance: int | None = None  # which say() it belongs to
    first: bool = False  # the utterance's first segment (its first frame starts the latency clock)
    last: bool = False  # the utterance's last segment (its last frame reports what was heard)
    question: str = ""  # the caption of what it answers ("NAME asks: ..."), if anything


@dataclass
class OutFrame:
    """One frame slot as sinks see it."""

    index: int
    pts: int  # in samples of the media clock
    image: np.ndarray | None  # None: the picture was dropped (hold the previous one)
    audio: np.ndarray  # float32 mono samples for this slot, never dropped
    caption: str = ""  # what the avatar is saying
    question: str = ""  # what it is answering (with who asked), if anything
    speaking: bool = False
    utterance: int | None = None
    first_of_utterance: bool = False
    made_at: float = field(default_factory=time.monotonic)


@dataclass
class FramePlan:
    """What one frame shows and plays."""

    index: int
    pts: int  # first audio sample of the frame, in the clock's time base
    audio: np.ndarray  # float32 mono samples for [pts, next pts)
    params: FaceParams
    caption: str = ""
    speaking: bool = False
    utterance: int | None = None
    first_of_utterance: bool = False
    finished: "Spoken | None" = None  # set on the last frame of an utterance


@dataclass(frozen=True)
class Interrupt:
    """Stop speaking now: a value that overtakes the speech queued ahead of it.

    Whatever cuts (the listener's barge-in, the operator, the turn's timeout, a session that
    ends) says why with one of these; the output that was cut stamps ``at`` and hands it back
    on the Spoken of each utterance it cut, so the source learns why."""

    reason: str = "operator"  # "barge-in", "operator", "timeout", "session-ended"
    source: str = ""  # who or what cut: "microphone", "http", "turns", "discord:<user id>"...
    at: int | None = None  # where the cut took effect, in samples of the cut stream's clock
    made: float = field(default_factory=time.monotonic)


@dataclass
class Spoken:
    """What an utterance actually said: whole sentences, then part of one when it was cut."""

    utterance: int | None
    sentences: list[str]
    partial: str = ""
    partial_fraction: float = 0.0
    interrupt: Interrupt | None = None  # why it was cut or dropped, when it was
    error: Exception | None = None  # the voice failed while saying it (a crash, its server down)

    @property
    def text(self) -> str:
        """The words heard, cutting the partial sentence at the share of it that played."""
        words = self.partial.split()
        heard = words[: int(len(words) * self.partial_fraction)]
        return " ".join(self.sentences + ([" ".join(heard)] if heard else []))


@dataclass
class Heard:
    """One transcribed turn, with the timings a benchmark wants."""

    text: str
    start: float  # seconds of stream time (pre-roll included)
    end: float  # end of the last speech window
    audio_seconds: float
    asr_seconds: float
    reason: str


# Priority classes: a paid message is answered before a moderator's, before everyone else's.
REGULAR, MODERATOR, PAID = 0, 1, 2


@dataclass
class ChatMessage:
    """One audience message, whatever platform it came from."""

    platform: str  # "twitch", "youtube", "bilibili", "discord", ...
    channel: str  # where it was said (a Twitch channel, a Discord channel id...): memory and reply key
    author: str  # display name, as shown on the caption ("NAME asks: ...")
    text: str
    author_id: str = ""  # stable id for rate limits; falls back to the name
    paid: float = 0.0  # what the viewer paid with it, in the platform's unit (bits, CNY, USD...)
    paid_label: str = ""  # how to say it: "500 bits", "¥30 Super Chat"
    moderator: bool = False  # a moderator, the broadcaster or the server owner
    received: float = field(default_factory=time.monotonic)
    handle: Any = None  # whatever the adapter needs to reply to this message

    @property
    def priority(self) -> int:
        return PAID if self.paid > 0 else MODERATOR if self.moderator else REGULAR

    @property
    def who(self) -> str:
        """The rate-limit key: the same person on the same platform."""
        return f"{self.platform}:{self.author_id or self.author.lower()}"


@dataclass
class Queued:
    """One question waiting (or taken): the first message that asked it and who joined in."""

    message: ChatMessage  # the first asker's: the caption names them, a chat reply answers them
    text: str  # the question as moderation cleaned it
    key: str  # normalised, for duplicate checks
    priority: int
    received: float  # the earliest asker's time
    seq: int
    askers: int = 1
    paid: float = 0.0  # the largest amount among the askers
    paid_label: str = ""
    who: set[str] = field(default_factory=set)  # asker keys (up to MAX_ASKERS_KEPT)
    tokens: frozenset = frozenset()
    taken_at: float | None = None  # when the answering loop took it
    attempts: int = 0  # answers that failed (the model crashed) before this one
    source: Any = None  # the adapter that delivered the first message (to reply through)

    @property
    def author(self) -> str:
        return self.message.author

    @property
    def channel(self) -> str:
        """The conversation's memory key: one memory per platform channel."""
        return f"{self.message.platform}:{self.message.channel}"

    @property
    def label(self) -> str:
        """The caption: ``NAME asks: ...``, ``NAME +3 asks: ...``, ``NAME asks: ... (500 bits)``."""
        name = self.author or "Someone"
        if self.askers > 1:
            name += f" +{self.askers - 1}"
        return f"{name} asks: {self.text}" + (f" ({self.paid_label})" if self.paid_label else "")

    def rank(self) -> tuple:
        """Smaller is answered sooner: priority, then age, then arrival order."""
        return (-self.priority, self.received, self.seq)


@dataclass
class Question:
    text: str
    author: str = ""
    channel: str = "default"  # memory key: a speaker, a chat channel, a Discord guild...
    moderated: bool = False  # checked at the front door already (the chat queue): not checked again

    @property
    def label(self) -> str:
        return f"{self.author} asks: {self.text}" if self.author else self.text
