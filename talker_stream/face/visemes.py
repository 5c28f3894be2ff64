"""Mouth shapes from speech: visemes from phonemes when the voice gives them, else from audio.

Both paths produce targets at 100 Hz that are smoothed with a symmetric (zero-phase)
kernel: neighbouring sounds blend into each other (co-articulation) and the lips even
start to move slightly before a sound, as real lips do, without any lag behind the audio.
The render job and the live loop both have a whole sentence of audio before its first
frame is shown, so looking ahead costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..frames import Phoneme

HOP_S = 0.01

# IPA symbol -> (open, wide, round, closed, tongue). Symbols not listed keep the previous
# shape (stress and length marks) or rest (pauses, punctuation). "closed" shuts the lips
# (M, B, P fully, F and V part way); "tongue" lifts its tip to the teeth (L, N, T, D, TH).
VISEME_GROUPS: dict[str, tuple[float, float, float, float, float]] = {
    "pbm": (0.0, 0.0, 0.0, 1.0, 0.0),
    "fv": (0.05, 0.1, 0.0, 0.35, 0.0),
    "θð": (0.2, 0.2, 0.0, 0.0, 1.0),
    "aɑæɐʌ": (1.0, 0.2, 0.0, 0.0, 0.0),
    "ɛeɜ": (0.65, 0.5, 0.0, 0.0, 0.0),
    "ɪiɨᵻj": (0.35, 0.9, 0.0, 0.0, 0.0),
    "ɔɒoɵ": (0.7, 0.0, 0.7, 0.0, 0.0),
    "uʊʉ": (0.3, 0.0, 1.0, 0.0, 0.0),
    "əɚ": (0.45, 0.1, 0.0, 0.0, 0.0),
    "wʍ": (0.15, 0.0, 1.0, 0.0, 0.0),
    "rɹɾɻ": (0.3, 0.0, 0.4, 0.0, 0.2),
    "lɫ": (0.35, 0.2, 0.0, 0.0, 0.9),
    "szç": (0.15, 0.6, 0.0, 0.0, 0.2),
    "ʃʒ": (0.2, 0.0, 0.55, 0.0, 0.0),
    "tdnɗ": (0.25, 0.3, 0.0, 0.0, 0.7),
    "kgɡŋxq": (0.35, 0.1, 0.0, 0.0, 0.0),
    "hɦ": (0.4, 0.1, 0.0, 0.0, 0.0),
}
_VISEMES: dict[str, tuple[float, float, float, float, float]] = {}
for chars, shape in VISEME_GROUPS.items():
    for ch in chars:
        _VISEMES[ch] = shape
_CONTINUE = set("ˈˌːˑ̩̯̃ʰʲ")
_REST = (0.0, 0.0, 0.0, 0.0, 0.0)
CLOSE_DEPTH = 0.45  # how far below 0 a fully closed sound pulls jaw_open (meet at -0.3, press to -0.45)
CLOSE_SIGMA, CLOSE_GAIN, CLOSE_POW = 1.2, 1.0, 3.0  # how closures blend into their neighbours (10 ms hops)
ALIGN_HOPS = 6  # how far (10 ms hops) a closure may move to the loudness dip it belongs to
PAUSE_CLOSE, PAUSE_LEVEL, PAUSE_EDGE = 0.3, 0.15, 0.05  # lips meet in pauses inside a sentence
JAW_LOUD = 0.9  # share of the jaw's opening set by loudness alone; the rest by the vowel


@dataclass
class MouthTrack:
    """Per-frame mouth parameters for one segment."""

    jaw_open: np.ndarray  # below 0 on closed sounds: the lips meet and press (see FaceParams)
    mouth_wide: np.ndarray
    mouth_round: np.ndarray
    tongue: np.ndarray | None = None  # the tip up to the teeth; None without phonemes

    def __len__(self) -> int:
        return len(self.jaw_open)


def _hop_features(pcm: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Loudness (0..1) and spectral centroid (Hz) every 10 ms over 20 ms windows."""
    hop = int(rate * HOP_S)
    win = 2 * hop
    n = max(1, int(np.ceil(len(pcm) / hop)))
    padded = np.pad(pcm, (hop, win))  # window i is centred on sample i * hop
    idx = np.arange(n)[:, None] * hop + np.arange(win)[None, :]
    frames = padded[idx] * np.hanning(win)[None, :]
    rms = np.sqrt(np.mean(frames**2, axis=1)) * np.sqrt(8 / 3)
    db = 20 * np.log10(rms + 1e-6)
    voiced = db > -50
    ref = max(np.percentile(db[voiced], 95) if voiced.any() else -20.0, -35.0)
    level = np.clip((db - (ref - 32.0)) / 32.0, 0.0, 1.0) ** 1.4
    spec = np.abs(np.fft.rfft(frames, axis=1))
    freqs = np.fft.rfftfreq(win, 1 / rate)
    centroid = (spec * freqs).sum(axis=1) / (spec.sum(axis=1) + 1e-9)
    return level, centroid


def _phoneme_targets(phonemes: list[Phoneme], n: int, rate: int, level: np.ndarray | None = None) -> np.ndarray:
    targets = np.zeros((n, 5))
    closures = []
    shape = _REST
    for p in phonemes:
        sym = p.symbol
        if sym in _VISEMES:
            shape = _VISEMES[sym]
        elif sym not in _CONTINUE:
            shape = _REST
        a = int(p.start / rate / HOP_S)
        b = int(np.ceil((p.start + p.length) / rate / HOP_S))
        targets[a:b] = shape
        if shape[3] > 0 and b > a:
            closures.append((a, b, shape[3]))
    if level is not None and ALIGN_HOPS:
        # Piper's timings drift by tens of ms; a closure is quieter than the vowels around
        # it (B and P are silent, M hums), so each one is moved onto the loudness dip nearest
        # to where the phonemes put it, within ALIGN_HOPS
        targets[:, 3] = 0.0
        for a, b, amount in closures:
            lo, hi = max(a - ALIGN_HOPS, 0), min(b + ALIGN_HOPS, n)
            if hi - lo <= b - a:
                targets[a:b, 3] = amount
                continue
            width = b - a
            window = np.convolve(level[lo:hi], np.ones(width), mode="valid")
            start = lo + int(np.argmin(window + 0.02 * np.abs(np.arange(len(window)) + lo - a)))
            targets[start : start + width, 3] = np.maximum(targets[start : start + width, 3], amount)
    return targets


def _pauses(speech: np.ndarray) -> np.ndarray:
    """0..1 per hop: how much this is a pause inside the speech (the lips come together),
    eased in and out, and 0 near both ends of the segment, where the face joins the idle
    face (jaw at rest) and the next sentence without a jump."""
    n = len(speech)
    quiet = gaussian_filter1d(np.clip(1 - speech / PAUSE_LEVEL, 0.0, 1.0), sigma=4.0, mode="nearest")
    edge = np.minimum(np.arange(n), np.arange(n)[::-1]) * HOP_S
    return quiet * np.clip((edge - PAUSE_EDGE) / 0.12, 0.0, 1.0)


def mouth_track(
    pcm: np.ndarray, rate: int, frame_centres: np.ndarray, phonemes: list[Phoneme] | None = None
) -> MouthTrack:
    """Mouth parameters at *frame_centres* (sample offsets into *pcm*)."""
    level, centroid = _hop_features(pcm, rate)
    n = len(level)
    speech = gaussian_filter1d(level, sigma=2.0, mode="nearest")
    voiced = np.clip(speech * 3, 0, 1)
    if phonemes:
        # Piper's phoneme timings drift by tens of ms, the audio never does: loudness sets
        # when and how far the jaw opens, the phonemes shape the lips around it.
        t = _phoneme_targets(phonemes, n, rate, level)
        vis = gaussian_filter1d(t[:, :3], sigma=3.0, axis=0, mode="nearest")  # 30 ms co-articulation
        closed = np.clip(CLOSE_GAIN * gaussian_filter1d(t[:, 3], sigma=CLOSE_SIGMA, mode="nearest"), 0.0, 1.0)
        # a closed sound shuts the lips whatever its loudness (M is loud and closed): the jaw
        # eases down through zero, where the lips meet, into a press; then eases open again
        jaw = speech * (JAW_LOUD + (1 - JAW_LOUD) * vis[:, 0]) * (1 - closed) - CLOSE_DEPTH * closed**CLOSE_POW
        wide, rnd = vis[:, 1] * voiced * (1 - closed), vis[:, 2] * voiced
        tongue = gaussian_filter1d(t[:, 4], sigma=2.5, mode="nearest") * voiced
        jaw = jaw - PAUSE_CLOSE * _pauses(speech)
    else:
        cen = gaussian_filter1d(centroid, sigma=3.0, mode="nearest")
        tongue = None
        jaw = speech
        wide = np.clip((cen - 1800) / 1800, 0, 1) * voiced * 0.8
        rnd = np.clip((1300 - cen) / 700, 0, 1) * voiced * 0.7
    at = np.asarray(frame_centres, dtype=np.float64) / rate / HOP_S
    grid = np.arange(n)

    def sample(curve: np.ndarray, low: float = 0.0) -> np.ndarray:
        return np.clip(np.interp(at, grid, curve), low, 1.0)

    return MouthTrack(sample(jaw, -CLOSE_DEPTH), sample(wide), sample(rnd),
                      None if tongue is None else sample(tongue))


_VOWELS = set("aɑæɐʌɛeɜɪiɨᵻɔɒoɵuʊʉəɚ")
_QUIET = {**{c: 0.45 for c in "mnŋlɫrɹɾɻwʍj"}, **{c: 0.3 for c in "vðzʒbdgɡɗ"},
          **{c: 0.15 for c in "ptkfθsʃçxqhɦ"}}


def in_context(symbol: str, rate: int = 16000) -> tuple[float, float, float, float]:
    """(jaw_open, mouth_wide, mouth_round, tongue) in the middle of *symbol* said between two
    "a" vowels (a vowel alone, held), at a loudness typical of its kind: what ``mouth_track``
    makes of it. For contact sheets and tests."""
    from ..frames import Phoneme

    seg = [("_", 0.15, 0.0), ("a", 0.25, 1.0), (symbol, 0.2, 1.0 if symbol in _VOWELS else _QUIET.get(symbol, 0.3)),
           ("a", 0.25, 1.0), ("_", 0.15, 0.0)]
    pcm, phonemes, at = [], [], 0
    for sym, dur, level in seg:
        k = int(dur * rate)
        t = np.arange(k) / rate
        pcm.append((0.3 * level * np.sin(2 * np.pi * 150 * t)).astype(np.float32))
        phonemes.append(Phoneme(sym, at, k))
        at += k
    centre = phonemes[2].start + phonemes[2].length / 2
    tr = mouth_track(np.concatenate(pcm), rate, np.array([centre]), phonemes)
    return float(tr.jaw_open[0]), float(tr.mouth_wide[0]), float(tr.mouth_round[0]), float(tr.tongue[0])
