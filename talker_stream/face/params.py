"""What a face does in one frame, as a handful of numbers every face engine understands.

Mouth shape comes from speech, the rest from expression; the split lets a neural mouth
(Wav2Lip) and the built-in mesh share blinks, brows and head motion.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class FaceParams:
    # mouth (speech). jaw_open is 0..1; below 0 the lips close over whatever the photo
    # shows between them (they meet at -0.3) and then press together (M, B, P; -0.45)
    jaw_open: float = 0.0
    mouth_wide: float = 0.0
    mouth_round: float = 0.0
    tongue: float = 0.0  # 0..1: the tip rises to the upper teeth (L, N, T, D, TH)
    # expression, 0..1
    smile: float = 0.0
    frown: float = 0.0
    brow_raise: float = 0.0
    brow_furrow: float = 0.0
    brow_sad: float = 0.0
    eye_wide: float = 0.0
    squint: float = 0.0
    blink_l: float = 0.0
    blink_r: float = 0.0
    # head pose in degrees, and a small lift in face heights (breathing)
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    lift: float = 0.0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def vector(self, names: list[str]) -> np.ndarray:
        return np.array([getattr(self, n) for n in names], dtype=np.float64)

    def plus(self, other: "FaceParams") -> "FaceParams":
        return FaceParams(**{n: getattr(self, n) + getattr(other, n) for n in self.names()})
