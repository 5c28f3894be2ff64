"""Measuring lip-sync and blinks on finished video, the way a viewer would see them.

The face is found again on every output frame by an independent tracker (MediaPipe in
video mode); how far the lips are apart is compared with how loud the audio is during
that frame. The lag that best lines the two up is the lip-sync offset. Tests use this to
hold the animator to "at most one frame late", and benchmarks use it to compare engines.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..speech.audio import frame_loudness, read_audio
from ..speech.clock import MediaClock
from .landmarks import import_mediapipe

UPPER_LIP, LOWER_LIP = 13, 14
EYES = ((159, 145), (386, 374))
EYE_CORNERS = (33, 263)


@dataclass
class SyncReport:
    lag_frames: int  # > 0: the mouth moves after the sound
    correlation: float  # at that lag
    mouth: np.ndarray  # lip gap per frame / eye distance
    eyes: np.ndarray  # eye opening per frame / eye distance
    loudness: np.ndarray  # audio RMS per frame
    fps: float

    @property
    def blinks(self) -> int:
        return count_blinks(self.eyes)


def track_face(frames) -> tuple[np.ndarray, np.ndarray]:
    """Mouth and eye opening, per frame, normalised by the distance between the eyes."""
    mp = import_mediapipe()

    mouth, eyes = [], []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as mesh:
        for rgb in frames:
            res = mesh.process(np.ascontiguousarray(rgb))
            if not res.multi_face_landmarks:
                mouth.append(np.nan)
                eyes.append(np.nan)
                continue
            h, w = rgb.shape[:2]
            p = np.array([[q.x * w, q.y * h] for q in res.multi_face_landmarks[0].landmark])
            scale = np.linalg.norm(p[EYE_CORNERS[0]] - p[EYE_CORNERS[1]])
            mouth.append(np.linalg.norm(p[UPPER_LIP] - p[LOWER_LIP]) / scale)
            eyes.append(np.mean([np.linalg.norm(p[a] - p[b]) for a, b in EYES]) / scale)
    return np.array(mouth), np.array(eyes)


def best_lag(follower: np.ndarray, leader: np.ndarray, max_lag: int = 6) -> tuple[int, float]:
    """The shift (in frames) of *follower* behind *leader* with the highest correlation."""
    ok = ~(np.isnan(follower) | np.isnan(leader))
    f = np.where(ok, follower, np.nanmean(follower))
    g = np.where(ok, leader, np.nanmean(leader))
    f = (f - f.mean()) / (f.std() + 1e-12)
    g = (g - g.mean()) / (g.std() + 1e-12)
    best = (0, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        a = f[lag:] if lag >= 0 else f[:lag]
        b = g[: len(g) - lag] if lag >= 0 else g[-lag:]
        c = float(np.mean(a * b))
        if c > best[1]:
            best = (lag, c)
    return best


def count_blinks(eyes: np.ndarray, depth: float = 0.6) -> int:
    """Dips of the eye opening below *depth* of its typical (median) value."""
    typical = np.nanmedian(eyes)
    closed = np.nan_to_num(eyes, nan=typical) < depth * typical
    return int(np.sum(closed[1:] & ~closed[:-1]) + closed[0])


def decode_frames(path: str | Path, fps: float | None = None):
    """Pictures on the stream's frame grid, as a viewer sees them.

    *fps*: the grid to put them on, from the file's time zero (a browser's recording has
    variable frame timing and a millisecond time base, so it names no useful rate).

    A live recording has gaps where the frame loop dropped a picture (its pts jump); the
    viewer keeps seeing the previous picture, so it is repeated here, keeping frame *k*
    aligned with audio frame window *k*. ``guessed_rate`` is the nominal rate: the
    average rate of a file with gaps is lower than the rate its clock runs at.
    """
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        grid = fps is not None
        fps = fps or float(stream.guessed_rate or stream.average_rate)
        frames, t0 = [], None
        for f in c.decode(stream):
            if f.time is not None:
                t0 = (0.0 if grid else f.time) if t0 is None else t0
                if not frames and grid:  # the first picture stands in for the time before it
                    frames += [f.to_ndarray(format="rgb24")] * round(f.time * fps)
                while frames and len(frames) < round((f.time - t0) * fps):
                    frames.append(frames[-1])
            frames.append(f.to_ndarray(format="rgb24"))
    return frames, fps


def measure_file(path: str | Path, sample_rate: int = 48000, fps: float | None = None) -> SyncReport:
    """Lip-sync and blink measures of a rendered mp4 (both streams decoded from the file);
    *fps* puts a variable-rate recording (a browser's WebM) on that frame grid."""
    frames, fps = decode_frames(path, fps)
    pcm = np.concatenate([c.pcm for c in read_audio(path, sample_rate)])
    clock = MediaClock(sample_rate, fps)
    starts = np.array([clock.frame_start(k) for k in range(len(frames) + 1)])
    pcm = np.pad(pcm, (0, max(0, starts[-1] - len(pcm))))
    loud = frame_loudness(pcm, starts)
    mouth, eyes = track_face(frames)
    lag, corr = best_lag(mouth, loud)
    return SyncReport(lag, corr, mouth, eyes, loud, fps)
