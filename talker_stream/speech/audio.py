"""Audio in: any file, any rate, any channel count, resampled once to the clock's rate."""
from __future__ import annotations

from collections.abc import Iterator
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from ..errors import InputError
from ..frames import AudioChunk, Phoneme


def resample(chunk: AudioChunk, rate: int) -> AudioChunk:
    """The one resampling step between an engine's rate and the clock's; phonemes follow."""
    if chunk.sample_rate == rate:
        return chunk
    g = gcd(chunk.sample_rate, rate)
    up, down = rate // g, chunk.sample_rate // g
    pcm = resample_poly(chunk.pcm, up, down).astype(np.float32) if len(chunk.pcm) else chunk.pcm
    phonemes = None
    if chunk.phonemes is not None:
        scale = rate / chunk.sample_rate
        phonemes = [Phoneme(p.symbol, round(p.start * scale), round(p.length * scale)) for p in chunk.phonemes]
    return AudioChunk(np.clip(pcm, -1.0, 1.0), rate, phonemes)


def read_audio(path: str | Path, rate: int, block_seconds: float = 20.0) -> Iterator[AudioChunk]:
    """Decode a file in blocks of mono float32 at *rate*; never the whole file in memory.

    Raises InputError (before yielding anything) when the file cannot be decoded or holds
    no audio, so a render never starts on a file it cannot finish.
    """
    import av  # deferred: PyAV is heavy and not every command needs it

    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read audio file {path}: {exc}; use wav, mp3, ogg, flac or m4a") from None
    with container:
        if not container.streams.audio:
            raise InputError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        # rematrix_maxval=1 scales the downmix so it cannot exceed full scale: without it
        # FFmpeg adds the channels up (stereo x1.41, 6 unlabelled channels x3.4) and the
        # clip below turns any loud multi-channel recording into distortion.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate, options={"rematrix_maxval": "1.0"})
        block = int(block_seconds * rate)
        pending: list[np.ndarray] = []
        have = 0
        total = 0

        def decoded() -> Iterator[np.ndarray]:
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        yield out.to_ndarray().reshape(-1)
            except av.error.FFmpegError as exc:
                if total == 0:
                    raise InputError(f"cannot decode audio in {path}: {exc}") from None
                return  # a damaged tail: keep what decoded
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)

        for pcm in decoded():
            pending.append(pcm)
            have += len(pcm)
            total += len(pcm)
            if have >= block:
                data = np.concatenate(pending)
                yield AudioChunk(np.clip(data[:block], -1, 1), rate)
                pending, have = [data[block:]], len(data) - block
        if total == 0:
            raise InputError(f"{path} holds no audio samples (empty or silent-length file)")
        if have:
            yield AudioChunk(np.clip(np.concatenate(pending), -1, 1), rate)


def frame_loudness(pcm: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """RMS of each frame's audio window [starts[i], starts[i+1]) — the lip-sync reference."""
    out = np.zeros(len(starts) - 1, dtype=np.float64)
    for i in range(len(out)):
        w = pcm[starts[i] : starts[i + 1]]
        out[i] = float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))) if len(w) else 0.0
    return out
