"""Speaker: sentences in, speech segments on the clock's sample rate out, one at a time."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from .audio import resample
from .clock import MediaClock
from ..frames import AudioChunk, Sentence, SpeechSegment
from .tts import TTSEngine


class Speaker:
    def __init__(self, tts: TTSEngine, clock: MediaClock) -> None:
        self.tts = tts
        self.clock = clock

    def speak(self, sentences: Iterable[Sentence]) -> Iterator[SpeechSegment]:
        """Synthesise lazily: the next sentence is only voiced when the previous one is taken."""
        for sentence in sentences:
            for chunk in self.tts.stream(sentence.text):
                if len(chunk.pcm):
                    yield SpeechSegment(sentence, resample(chunk, self.clock.sample_rate))


def audio_segments(chunks: Iterable[AudioChunk], clock: MediaClock) -> Iterator[SpeechSegment]:
    """Recorded audio as speech: the face then follows the sound alone."""
    for chunk in chunks:
        yield SpeechSegment(Sentence(""), resample(chunk, clock.sample_rate))
