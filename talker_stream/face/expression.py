"""Everything a face does besides talking: blinks, emotion, head motion, breathing, glances.

It steps frame by frame with its own seeded random generator, so a render is repeatable
and the live loop can keep calling it while nothing is being said: the avatar is never a
still photo.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .params import FaceParams

EMOTION_FACES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"smile": 0.8, "squint": 0.25, "brow_raise": 0.15},
    "sad": {"brow_sad": 0.9, "frown": 0.6, "pitch": 2.0},
    "surprised": {"brow_raise": 1.0, "eye_wide": 0.6, "jaw_open": 0.1},
    "angry": {"brow_furrow": 1.0, "squint": 0.5, "frown": 0.4},
    "questioning": {"brow_raise": 0.55, "brow_furrow": 0.15, "roll": 3.0},
}

BLINK_CLOSE, BLINK_HOLD, BLINK_OPEN = 0.06, 0.03, 0.09


@dataclass
class ExpressionSettings:
    blink_min: float = 2.0
    blink_max: float = 6.0
    head_motion: float = 1.0
    emotion_strength: float = 1.0
    seed: int = 0


class Expression:
    """Call :meth:`step` once per frame with the media time and what is being said."""

    def __init__(self, settings: ExpressionSettings | None = None) -> None:
        self.s = settings or ExpressionSettings()
        self._rng = random.Random(self.s.seed)
        self._next_blink = self._rng.uniform(1.0, min(4.0, self.s.blink_max))
        self._blink_start = -10.0
        self._mood = {k: 0.0 for k in FaceParams.names()}
        self._phase = [self._rng.uniform(0, 2 * math.pi) for _ in range(9)]
        self._glance = 0.0
        self._glance_target = 0.0
        self._next_glance = self._rng.uniform(3.0, 8.0)
        self._speech_slow = 0.0
        self._speech_fast = 0.0
        self._t = 0.0

    def blink_amount(self, t: float) -> float:
        if t >= self._next_blink:
            self._blink_start = self._next_blink
            gap = 0.3 if self._rng.random() < 0.1 else self._rng.uniform(self.s.blink_min, self.s.blink_max)
            self._next_blink = self._blink_start + gap
        u = t - self._blink_start
        if u < 0 or u > BLINK_CLOSE + BLINK_HOLD + BLINK_OPEN:
            return 0.0
        if u < BLINK_CLOSE:
            x = u / BLINK_CLOSE
            return x * x
        if u < BLINK_CLOSE + BLINK_HOLD:
            return 1.0
        x = (u - BLINK_CLOSE - BLINK_HOLD) / BLINK_OPEN
        return (1 - x) ** 2

    def step(self, t: float, emotion: str, speech_level: float) -> FaceParams:
        """Expression and head pose for the frame at media time *t* (seconds)."""
        dt = max(0.0, t - self._t) or 0.04
        self._t = t
        target = EMOTION_FACES.get(emotion, {})
        k = 1 - math.exp(-dt / 0.3)
        for name in self._mood:
            goal = target.get(name, 0.0) * self.s.emotion_strength
            self._mood[name] += (goal - self._mood[name]) * k
        self._speech_fast += (speech_level - self._speech_fast) * (1 - math.exp(-dt / 0.12))
        self._speech_slow += (speech_level - self._speech_slow) * (1 - math.exp(-dt / 0.8))
        speaking = self._speech_slow > 0.05

        # idle glances: look aside now and then while silent, back at the viewer when talking
        if t >= self._next_glance:
            self._glance_target = 0.0 if (speaking or self._glance_target) else self._rng.uniform(-2.5, 2.5)
            self._next_glance = t + self._rng.uniform(1.0, 2.0 if self._glance_target else 7.0)
        if speaking:
            self._glance_target = 0.0
        self._glance += (self._glance_target - self._glance) * (1 - math.exp(-dt / 0.12))

        m = self.s.head_motion * (1.6 if speaking else 1.0)
        ph = self._phase

        def wave(i: int, f1: float, f2: float, f3: float) -> float:
            return (
                math.sin(2 * math.pi * f1 * t + ph[3 * i])
                + 0.6 * math.sin(2 * math.pi * f2 * t + ph[3 * i + 1])
                + 0.3 * math.sin(2 * math.pi * f3 * t + ph[3 * i + 2])
            ) / 1.9

        nod = 2.0 * (self._speech_fast - self._speech_slow) * self.s.head_motion
        blink = self.blink_amount(t)
        p = FaceParams(**{n: v for n, v in self._mood.items()})
        p.blink_l += blink
        p.blink_r += blink
        p.yaw += m * 1.2 * wave(0, 0.07, 0.17, 0.31) + self._glance
        p.pitch += m * 0.8 * wave(1, 0.09, 0.23, 0.41) + nod
        p.roll += m * 0.6 * wave(2, 0.05, 0.13, 0.37)
        p.lift += 0.006 * math.sin(2 * math.pi * 0.25 * t + ph[0]) * self.s.head_motion
        return p
