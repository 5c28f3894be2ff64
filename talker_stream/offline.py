"""The render job (offline): the live avatar's pipeline pulled as fast as the CPU allows,
with the same speaker, timeline and face engine and a file writer at the end instead of a
real-time frame loop.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .speech.audio import read_audio
from .speech.clock import MediaClock
from .config import Settings
from .errors import InputError
from .face import hears_speech, open_face, render_frame
from .face.expression import Expression
from .frames import Sentence, SpeechSegment
from .face.portrait import load_portrait
from .speech.speaker import Speaker, audio_segments
from .speech.text import split_sentences
from .speech.timeline import Timeline
from .speech.tts import open_tts
from .outputs.encoder import Mp4Writer

log = logging.getLogger(__name__)

TAIL_S = 0.4  # idle after the last word, so the mouth settles before the video ends


@dataclass
class RenderResult:
    path: Path
    frames: int
    seconds: float
    wall_seconds: float  # the render loop: TTS, animation and encoding
    setup_seconds: float = 0.0  # before it: portrait, face landmarks, voice loading

    @property
    def realtime_factor(self) -> float:
        """Wall time over media time: below 1 means faster than real time."""
        return self.wall_seconds / self.seconds if self.seconds else float("inf")


def read_text_pieces(path: str | Path, block: int = 4096) -> Iterator[str]:
    """A text file in blocks, so a book-length script is never all in memory."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            while piece := f.read(block):
                yield piece
    except OSError as exc:
        raise InputError(f"cannot read text file {path}: {exc}") from None


def _non_empty(sentences: Iterator[Sentence]) -> Iterator[Sentence]:
    """Fail before anything is written when there is nothing to say."""
    first = next(sentences, None)
    if first is None:
        raise InputError("the text is empty (nothing speakable after removing control characters and emoji)")
    return itertools.chain([first], sentences)


def render(
    settings: Settings,
    output: str | Path,
    text: Iterable[str] | None = None,
    audio: str | Path | None = None,
    progress=None,
) -> RenderResult:
    """Render *text* pieces (spoken by the configured voice) or an *audio* file to *output*.

    *progress*, when given, is called with (done, frames) after each sentence or block:
    done counts characters for text and samples for audio.
    """
    if (text is None) == (audio is None):
        raise InputError("give either text or an audio file to render")
    setup_started = time.perf_counter()
    clock = MediaClock(settings.video.sample_rate, settings.video.fps)
    portrait_path = settings.portrait_path()
    portrait = load_portrait(portrait_path, settings.avatar.max_size)
    engine = open_face(settings)
    # MediaPipe keeps a graph (and its threads) alive until the engine is closed
    with contextlib.closing(engine) if hasattr(engine, "close") else contextlib.nullcontext():
        avatar = engine.prepare(portrait, source=str(portrait_path))
        segments, unit = _speech(settings, clock, text, audio)
        started = time.perf_counter()
        frames = _encode(settings, engine, avatar, portrait, clock, output, segments, unit, progress)
    wall = time.perf_counter() - started
    result = RenderResult(Path(output), frames, frames / float(clock.fps), wall, started - setup_started)
    log.info("rendered %d frames (%.1f s) in %.1f s: %.2fx real time", frames, result.seconds, wall, result.realtime_factor)
    return result


def _speech(settings: Settings, clock: MediaClock, text, audio) -> tuple[Iterator[SpeechSegment], Callable]:
    """The segments to speak, and how much progress each one stands for.

    Everything that can be wrong with the input fails here, before the writer exists.
    """
    if text is not None:
        sentences = _non_empty(split_sentences(text))
        speaker = Speaker(open_tts(settings), clock)
        return speaker.speak(sentences), lambda seg: len(seg.sentence.text) + 1
    chunks = read_audio(audio, clock.sample_rate)
    first = next(chunks)
    return audio_segments(itertools.chain([first], chunks), clock), lambda seg: len(seg.audio.pcm)


def _encode(settings, engine, avatar, portrait, clock, output, segments, unit, progress) -> int:
    """Pull the timeline frame by frame into the mp4; returns the number of frames."""
    timeline = Timeline(clock, Expression(settings.face.expression), listener=engine if hears_speech(engine) else None)
    r = settings.render
    done = 0
    h, w = portrait.shape[:2]
    with Mp4Writer(output, (w, h), clock, r.crf, r.preset, r.audio_bitrate) as writer:
        frame = portrait.copy()

        def emit(count: int) -> None:
            for _ in range(count):
                plan = timeline.next_frame()
                render_frame(engine, avatar, plan.params, frame, plan.index)
                writer.write(frame, plan.audio, plan.pts)

        for seg in segments:
            timeline.append(seg)
            emit(timeline.queued_frames)
            done += unit(seg)
            if progress:
                progress(done, writer.frames)
        emit(max(1, round(TAIL_S * float(clock.fps))))
        return writer.frames
