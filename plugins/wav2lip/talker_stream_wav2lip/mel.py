"""Wav2Lip's audio front end, re-implemented with numpy and scipy (librosa is not a dependency).

The network only understands the exact features it was trained on, so this follows the
original ``audio.py``/``hparams.py`` step by step: 16 kHz audio, pre-emphasis 0.97, a
centred STFT (n_fft 800, hop 200, periodic Hann window of 800, reflect padding as in
librosa 0.7), magnitudes through librosa's Slaney-style mel filterbank (80 bands,
55-7600 Hz, area-normalised), 20*log10 with a -100 dB floor, minus ref_level_db 20, and
the symmetric clipped normalisation to [-4, 4]. Mel frames run at 80 per second; frame t
is centred on sample 200*t.
"""
from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np
from scipy import signal

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS = 4.0
WINDOW_STEPS = 16  # mel frames per network input: 0.2 s
MEL_FPS = SAMPLE_RATE / HOP


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log_part, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """80 x 401 triangular filters, each scaled to unit area (librosa's norm='slaney')."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return signal.get_window("hann", WIN, fftbins=True)


def to_16k(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample to the network's 16 kHz (polyphase: exact ratio, no drift)."""
    if sample_rate == SAMPLE_RATE:
        return np.asarray(pcm, dtype=np.float64)
    g = gcd(SAMPLE_RATE, sample_rate)
    return signal.resample_poly(np.asarray(pcm, dtype=np.float64), SAMPLE_RATE // g, sample_rate // g)


def melspectrogram(wav16k: np.ndarray) -> np.ndarray:
    """80 x (1 + len // 200) normalised log-mel frames of 16 kHz audio, as Wav2Lip was trained on."""
    y = signal.lfilter([1.0, -PREEMPHASIS], [1.0], np.asarray(wav16k, dtype=np.float64))
    if len(y) < 2:
        y = np.pad(y, (0, 2 - len(y)))
    y = np.pad(y, N_FFT // 2, mode="reflect")
    n = 1 + (len(y) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(y, (n, N_FFT), (y.strides[0] * HOP, y.strides[0]), writeable=False)
    magnitude = np.abs(np.fft.rfft(frames * _window(), axis=1)).T
    db = 20 * np.log10(np.maximum(10 ** (MIN_LEVEL_DB / 20), mel_basis() @ magnitude)) - REF_LEVEL_DB
    return np.clip(2 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS, -MAX_ABS, MAX_ABS)


def windows_at(mel: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """N x 80 x 16 windows of *mel*, each 0.2 s centred on a time in mel frames.

    Windows that reach past either end are padded with the quietest value, i.e. silence.
    """
    starts = np.round(np.asarray(centres, dtype=np.float64)).astype(int) - WINDOW_STEPS // 2
    pad = WINDOW_STEPS
    padded = np.pad(mel, ((0, 0), (pad, pad)), constant_values=-MAX_ABS)
    idx = starts[:, None] + pad + np.arange(WINDOW_STEPS)[None, :]
    idx = np.clip(idx, 0, padded.shape[1] - 1)
    return np.ascontiguousarray(padded[:, idx].transpose(1, 0, 2), dtype=np.float32)
