"""PCM in Discord's shape: 48 kHz, stereo, signed 16-bit little-endian, 20 ms frames."""
from __future__ import annotations

import threading
from collections.abc import Callable

import discord
import numpy as np

RATE = 48000
CHANNELS = 2
FRAME_SAMPLES = RATE // 50  # 20 ms: the only frame size discord.py's player sends
FRAME_BYTES = FRAME_SAMPLES * CHANNELS * 2  # 3840
SILENCE = bytes(FRAME_BYTES)


def to_discord(mono: np.ndarray) -> bytes:
    """Mono float32 at 48 kHz -> interleaved stereo s16le."""
    pcm = np.clip(np.asarray(mono, np.float32), -1.0, 1.0)
    return np.repeat((pcm * 32767).astype("<i2"), CHANNELS).tobytes()


def from_discord(pcm: bytes) -> np.ndarray:
    """Interleaved stereo s16le (what opus decodes to) -> mono float32 at 48 kHz."""
    usable = len(pcm) // (2 * CHANNELS) * 2 * CHANNELS
    frames = np.frombuffer(pcm[:usable], "<i2").reshape(-1, CHANNELS).astype(np.float32)
    return frames.mean(axis=1) / 32768.0


class SpeechSource(discord.AudioSource):
    """An answer being spoken: the core's SpeechOutput feeds PCM while discord.py's player
    reads it (the output's player: feed, finish, cancel, wait, played).

    ``read()`` never blocks the player: while synthesis is behind it returns a silent frame
    (the answer starts as soon as the first sentence exists, not when the last one does),
    and ``b""`` once the answer is finished and played, or cancelled by barge-in. The
    buffer holds at most ``max_seconds`` of audio; ``feed()`` waits for room, so a fast TTS
    engine cannot run ahead with unbounded memory. *alive*: whether the player can still
    read (the voice connection is up); ``wait()`` gives up on one that cannot.
    """

    def __init__(self, max_seconds: float = 10.0, alive: Callable[[], bool] = lambda: True) -> None:
        self._buf = bytearray()
        self._cap = int(max_seconds * 50) * FRAME_BYTES
        self._cond = threading.Condition()
        self._finished = False
        self._ended = threading.Event()  # discord.py's player is done with it (or never started)
        self.alive = alive
        self.cancelled = False
        self.frames = 0  # frames handed to the player (sound and padding)
        self.silent_frames = 0  # frames of padding while synthesis was behind

    def feed(self, mono48k: np.ndarray) -> bool:
        """Queue audio; False once cancelled (the producer should stop synthesising)."""
        data = to_discord(mono48k)
        with self._cond:
            while len(self._buf) + len(data) > self._cap and len(self._buf) and not self.cancelled:
                self._cond.wait(0.5)
            if self.cancelled:
                return False
            self._buf += data
            return True

    def finish(self) -> None:
        """No more audio will come: play out what is left, then end."""
        with self._cond:
            self._finished = True

    def cancel(self) -> None:
        """Barge-in: drop everything; the next read() ends playback."""
        with self._cond:
            self.cancelled = True
            self._buf.clear()
            self._cond.notify_all()

    def done(self) -> None:
        """discord.py's player has stopped playing this (its ``after``), or never will."""
        self._ended.set()

    def wait(self, timeout: float) -> bool:
        """True once the player is done with it; one that cannot read any more is cancelled."""
        if self._ended.wait(timeout):
            return True
        if not self.alive():
            self.cancel()
            return True
        return False

    @property
    def played(self) -> int:
        """Samples of the answer handed to the player (padding not counted)."""
        return (self.frames - self.silent_frames) * FRAME_SAMPLES

    @property
    def buffered_seconds(self) -> float:
        return len(self._buf) / (FRAME_BYTES * 50)

    def read(self) -> bytes:
        with self._cond:
            if self.cancelled:
                return b""
            if len(self._buf) >= FRAME_BYTES or (self._finished and self._buf):
                frame = bytes(self._buf[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\0")
                del self._buf[:FRAME_BYTES]
                self._cond.notify_all()
            elif self._finished:
                return b""
            else:
                frame = SILENCE
                self.silent_frames += 1
            self.frames += 1
            return frame

    def is_opus(self) -> bool:
        return False

    def cleanup(self) -> None:
        self.cancel()
