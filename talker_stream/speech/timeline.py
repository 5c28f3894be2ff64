"""The timeline: speech laid out on the one clock, pulled frame by frame.

Segments are placed back to back ahead of the playhead, each padded to a whole number of
frames; a frame is then just "the audio samples of this frame's window plus the face for
the middle of that window". The render job pulls as fast as it can, the live loop pulls
at the wall clock; when nothing is queued the frame is an idle one (blinks, breathing).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .clock import MediaClock
from ..face import SpeechListener
from ..face.expression import Expression
from ..face.visemes import MouthTrack, mouth_track
from ..frames import FramePlan, SpeechSegment, Spoken

MOOD_HOLD_S = 1.5  # the face keeps the last sentence's emotion this long after speaking
RELEASE_FRAMES = 3  # after an interrupt the mouth closes over this many frames
FADE_S = 0.005  # and the voice fades out over this long instead of clicking


@dataclass
class _Placed:
    segment: SpeechSegment
    first_frame: int
    n_frames: int
    audio: np.ndarray  # padded to the frames' windows
    track: MouthTrack


class Timeline:
    def __init__(self, clock: MediaClock, expression: Expression | None = None, listener: SpeechListener | None = None):
        """*listener*: a face engine that wants the speech itself (see talker_stream.face.SpeechListener)."""
        self.clock = clock
        self.expression = expression or Expression()
        self.listener = listener
        self.playhead = 0  # index of the next frame to pull
        self._queue: deque[_Placed] = deque()
        self._mood = "neutral"
        self._mood_until = -1.0
        self._release: tuple[float, int] = (0.0, 0)  # (jaw when cut, frames left to close it)
        self._fade = np.zeros(0, dtype=np.float32)  # voice tail to fade out after a cut
        self._last_jaw = 0.0
        self._spoken: list[tuple[int | None, str]] = []  # (utterance, sentence) that started playing

    @property
    def end_frame(self) -> int:
        """The first frame after everything queued."""
        return self._queue[-1].first_frame + self._queue[-1].n_frames if self._queue else self.playhead

    @property
    def queued_frames(self) -> int:
        return self.end_frame - self.playhead

    def append(self, segment: SpeechSegment) -> None:
        """Place *segment* right after what is queued (or at the playhead when idle)."""
        clock = self.clock
        if segment.audio.sample_rate != clock.sample_rate:
            raise ValueError("segments must be at the clock's sample rate (the Speaker resamples)")
        first = self.end_frame
        pcm = segment.audio.pcm
        n = max(1, clock.frames_to_cover(first, len(pcm)))
        start = clock.frame_start(first)
        bounds = np.array([clock.frame_start(first + j) for j in range(n + 1)]) - start
        audio = np.zeros(bounds[-1], dtype=np.float32)
        audio[: len(pcm)] = pcm
        centres = (bounds[:-1] + bounds[1:]) / 2
        track = mouth_track(audio, clock.sample_rate, centres, segment.audio.phonemes)
        self._queue.append(_Placed(segment, first, n, audio, track))
        if self.listener is not None:
            self.listener.speech_placed(first, audio, clock)  # before any of its frames is pulled

    def next_frame(self) -> FramePlan:
        """The frame at the playhead; advances it by one."""
        k = self.playhead
        self.playhead += 1
        clock = self.clock
        a, b = clock.frame_window(k)
        t = (a + b) / 2 / clock.sample_rate
        while self._queue and self._queue[0].first_frame + self._queue[0].n_frames <= k:
            self._queue.popleft()
        placed = self._queue[0] if self._queue and self._queue[0].first_frame <= k else None
        if placed is None:
            emotion = self._mood if t < self._mood_until else "neutral"
            params = self.expression.step(t, emotion, 0.0)
            audio = np.zeros(b - a, dtype=np.float32)
            jaw, left = self._release
            if left > 0:
                params.jaw_open += jaw * (left - 1) / RELEASE_FRAMES
                self._release = (jaw, left - 1)
            if len(self._fade):
                n = min(len(self._fade), len(audio))
                audio[:n] = self._fade[:n]
                self._fade = self._fade[n:]
            self._last_jaw = params.jaw_open
            return FramePlan(k, a, audio, params)
        j = k - placed.first_frame
        seg_start = clock.frame_start(placed.first_frame)
        audio = placed.audio[a - seg_start : b - seg_start]
        tr = placed.track
        sentence = placed.segment.sentence
        utterance = placed.segment.utterance
        if j == 0:
            self._spoken.append((utterance, sentence.text))
            del self._spoken[:-200]
        self._mood = sentence.emotion
        self._mood_until = t + MOOD_HOLD_S
        params = self.expression.step(t, self._mood, float(tr.jaw_open[j]))
        params.jaw_open += float(tr.jaw_open[j])
        params.mouth_wide += float(tr.mouth_wide[j])
        params.mouth_round += float(tr.mouth_round[j])
        if tr.tongue is not None:  # the tip up to the teeth on L, N, T, D, TH (Piper's phonemes)
            params.tongue += float(tr.tongue[j])
        self._last_jaw = params.jaw_open
        first = j == 0 and placed.segment.first
        finished = None
        if j == placed.n_frames - 1 and placed.segment.last:
            finished = Spoken(utterance, self.heard(utterance))
        return FramePlan(k, a, audio, params, sentence.text, True, utterance, first, finished)

    def heard(self, utterance: int | None) -> list[str]:
        """Sentences of *utterance* that have started playing."""
        return [text for u, text in self._spoken if u == utterance]

    def queued_utterances(self) -> list[int]:
        """Utterances with frames still to play (or playing), in order."""
        out: list[int] = []
        for placed in list(self._queue):
            utt = placed.segment.utterance
            if utt is not None and utt not in out:
                out.append(utt)
        return out

    def mark_last(self, utterance: int) -> bool:
        """Flag the utterance's last queued segment; False when none is left to play."""
        for placed in reversed(self._queue):
            if placed.segment.utterance == utterance and placed.first_frame + placed.n_frames > self.playhead:
                placed.segment.last = True
                return True
        return False

    def interrupt(self) -> Spoken:
        """Cut everything from the playhead on: the next frame is already idle.

        The voice fades out over a few milliseconds and the mouth closes over a few
        frames, so the cut is immediate but not jarring. Returns what was heard.
        """
        k = self.playhead
        clock = self.clock
        current = self._queue[0] if self._queue and self._queue[0].first_frame < k else None
        spoken = Spoken(None, [])
        if current is not None:
            utt = current.segment.utterance
            spoken.utterance = utt
            heard = self.heard(utt)
            spoken.sentences, spoken.partial = heard[:-1], heard[-1] if heard else ""
            spoken.partial_fraction = (k - current.first_frame) / current.n_frames
            at = clock.frame_start(k) - clock.frame_start(current.first_frame)
            tail = current.audio[at : at + int(FADE_S * clock.sample_rate)]
            self._fade = tail * np.linspace(1.0, 0.0, len(tail), dtype=np.float32)
            self._release = (self._last_jaw, RELEASE_FRAMES)
        self._queue.clear()
        if self.listener is not None:
            self.listener.speech_cut(k)
        return spoken
