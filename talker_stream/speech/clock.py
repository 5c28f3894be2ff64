"""The one media clock.

Audio samples are the time base. A video frame index maps to a sample index with exact
rational arithmetic, so frame *k* always starts at the same sample no matter how long the
stream runs: lips cannot drift from the voice, even at fractional rates such as 29.97 fps.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class MediaClock:
    sample_rate: int
    fps: Fraction

    def __init__(self, sample_rate: int, fps: float | Fraction | str) -> None:
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        fps_q = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        if fps_q <= 0:
            raise ValueError("fps must be positive")
        object.__setattr__(self, "sample_rate", int(sample_rate))
        object.__setattr__(self, "fps", fps_q)

    @property
    def time_base(self) -> Fraction:
        """Every pts, audio or video, counts samples in this time base."""
        return Fraction(1, self.sample_rate)

    def frame_start(self, k: int) -> int:
        """First audio sample shown by video frame *k* (its pts)."""
        return (k * self.sample_rate * self.fps.denominator) // self.fps.numerator

    def frame_window(self, k: int) -> tuple[int, int]:
        """Audio samples [start, end) that play while frame *k* is on screen."""
        return self.frame_start(k), self.frame_start(k + 1)

    def frame_at_sample(self, sample: int) -> int:
        """The frame on screen while *sample* plays."""
        num, den = self.fps.numerator, self.sample_rate * self.fps.denominator
        return -(-(sample + 1) * num // den) - 1

    def frames_to_cover(self, first_frame: int, n_samples: int) -> int:
        """How many whole frames, starting at *first_frame*, hold *n_samples* of audio."""
        start = self.frame_start(first_frame)
        end_frame = self.frame_at_sample(start + n_samples - 1) + 1 if n_samples > 0 else first_frame
        return end_frame - first_frame

    def seconds(self, samples: int) -> float:
        return samples / self.sample_rate

    @property
    def frame_period(self) -> float:
        return float(1 / self.fps)
