"""The data that flows through the pipeline: audio chunks, phoneme timings, frames."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
    extra: dict = field(default_factory=dict)


@dataclass
class VideoFrame:
    """An RGB frame and its pts in samples of the media clock."""

    image: np.ndarray  # H x W x 3, uint8, RGB
    index: int
    pts: int
