"""The ear: audio source -> 16 kHz -> TurnDetector -> Whisper -> callbacks.

VAD runs in the caller's thread on every chunk, and each finished turn goes to one ASR
worker thread, so a new speaker is noticed (barge-in) even while the last question is
still being transcribed. Sources are plain iterators of AudioChunk at any rate (or of
float32 arrays at 16 kHz): a file, the microphone, or an AudioFeed that another thread
pushes audio into (a browser's microphone, each speaker of a Discord voice channel).
Several listeners may share one ASR engine and one Silero model (``SileroVAD.fork``).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from math import ceil, gcd
from pathlib import Path

import numpy as np

from ...speech.audio import read_audio, resample
from ...errors import EngineUnavailable
from ...frames import AudioChunk, Heard
from .vad import SAMPLE_RATE, SpeechStarted, TurnDetector, TurnEnded, TurnPaused, TurnResumed

log = logging.getLogger(__name__)


class StreamResampler:
    """talker_stream.speech.audio.resample applied chunk by chunk without seams.

    Resampling each small chunk on its own treats the audio outside it as silence, which
    puts a dip at every boundary (50 of them a second for 20 ms network packets). Here each
    block is resampled with ``pad`` real input samples on both sides (longer than the
    polyphase filter's half-length) and only the middle is kept; blocks start on multiples
    of the decimation factor, so the output is the same as resampling the whole stream.
    Latency: ``pad`` input samples (under 1 ms at 48 kHz, 20 ms at 22.05 kHz).
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        g = gcd(rate_in, rate_out)
        self.rate_in, self.rate_out = rate_in, rate_out
        self.up, self.down = rate_out // g, rate_in // g
        half = 10 * max(self.up, self.down) / self.up  # resample_poly's filter half-length, input samples
        self.pad = ceil((half + 2) / self.down) * self.down
        self._buf = np.zeros(self.pad, np.float32)  # the stream starts after silence

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        if self.up == self.down:
            return np.asarray(pcm, np.float32)
        self._buf = np.concatenate([self._buf, np.asarray(pcm, np.float32)])
        n = (len(self._buf) - 2 * self.pad) // self.down * self.down
        if n <= 0:
            return np.zeros(0, np.float32)
        seg = resample(AudioChunk(self._buf[: n + 2 * self.pad], self.rate_in), self.rate_out).pcm
        a = self.pad * self.up // self.down
        self._buf = self._buf[n:]
        return seg[a : a + n * self.up // self.down]

    def flush(self) -> np.ndarray:
        """The audio still held back for padding (end of stream)."""
        rest = len(self._buf) - self.pad
        if rest <= 0 or self.up == self.down:
            return np.zeros(0, np.float32)
        out = self(np.zeros(self.pad + self.down, np.float32))
        return out[: int(rest * self.up / self.down)]


def file_source(path: str | Path, realtime: bool = False, block_ms: int = 32) -> Iterator[AudioChunk]:
    """A file decoded at 16 kHz in small blocks; *realtime* paces it like a live stream.

    Raises InputError at the first ``next()`` when the file cannot be decoded.
    """
    block = SAMPLE_RATE * block_ms // 1000
    t0 = time.monotonic()
    sent = 0
    for chunk in read_audio(path, SAMPLE_RATE, block_seconds=block_ms / 1000):
        for i in range(0, len(chunk.pcm), block):  # read_audio's blocks may come several at once
            piece = chunk.pcm[i : i + block]
            sent += len(piece)
            if realtime:  # a block exists once its last sample would have been recorded
                ahead = sent / SAMPLE_RATE - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            yield AudioChunk(piece, SAMPLE_RATE)


class AudioFeed:
    """A push source for a Listener: ``put()`` audio from any thread (PortAudio's callback,
    a network receiver), and the listener iterates it on its own thread.

    Bounded: past *max_seconds* of audio waiting, the oldest is dropped (``dropped_seconds``,
    logged once per overflow), so a stalled listener never grows memory and ``put()`` never
    blocks. ``close()`` ends the iteration once what is queued has been taken; a listener
    that stops closes its source, and ``put()`` then returns False.
    """

    def __init__(self, max_seconds: float = 10.0, name: str = "audio") -> None:
        self.max_seconds = max_seconds
        self.name = name
        self.closed = False
        self.dropped_seconds = 0.0
        self._chunks: deque[AudioChunk] = deque()
        self._seconds = 0.0
        self._overflowing = False
        self._cond = threading.Condition()

    def put(self, chunk: AudioChunk) -> bool:
        """Queue *chunk*; False once closed."""
        with self._cond:
            if self.closed:
                return False
            self._chunks.append(chunk)
            self._seconds += chunk.seconds
            while self._seconds > self.max_seconds and len(self._chunks) > 1:
                old = self._chunks.popleft()
                self._seconds -= old.seconds
                self.dropped_seconds += old.seconds
                if not self._overflowing:
                    self._overflowing = True
                    log.warning("%s: the listener is %.0f s behind; the oldest audio is dropped", self.name,
                                self.max_seconds)
            self._cond.notify()
            return True

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __iter__(self) -> Iterator[AudioChunk]:
        while True:
            with self._cond:
                while not self._chunks and not self.closed:
                    self._cond.wait()
                if not self._chunks:
                    return
                chunk = self._chunks.popleft()
                self._seconds -= chunk.seconds
                if not self._chunks:
                    self._overflowing = False  # caught up
            yield chunk


def microphone_source(device: int | str | None = None, block_ms: int = 32, max_seconds_queued: float = 10.0
                      ) -> Iterator[AudioChunk]:
    """The microphone at 16 kHz mono through sounddevice (PortAudio).

    An AudioFeed sits between PortAudio's callback and the consumer; if the consumer falls
    more than *max_seconds_queued* behind, the oldest audio is dropped (logged).
    """
    try:
        import sounddevice as sd
    except ImportError:
        raise EngineUnavailable("microphone input needs sounddevice: pip install sounddevice") from None
    except OSError as exc:  # sounddevice raises OSError when libportaudio is absent
        raise EngineUnavailable(f"microphone input needs PortAudio ({exc}): apt-get install libportaudio2") from None
    blocksize = SAMPLE_RATE * block_ms // 1000
    feed = AudioFeed(max_seconds_queued, "microphone")

    def callback(indata, frames, _time, status) -> None:  # PortAudio's thread
        if status:
            log.debug("microphone: %s", status)
        feed.put(AudioChunk(indata[:, 0].copy(), SAMPLE_RATE))

    try:
        stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=blocksize,
                                device=device, callback=callback)
    except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError for bad device names
        raise EngineUnavailable(f"cannot open microphone {device!r}: {exc}; list devices with "
                                "`python -m sounddevice`") from None
    with stream:
        yield from feed


class Listener:
    """Pulls PCM from a source and reports speech starts and transcribed questions.

    ``on_speech_start()`` runs in the source thread the moment speech is confirmed (only
    when *barge_in* is on); ``speech_started_at`` then holds its stream time in seconds.
    ``on_question(text, start, end)`` runs in the ASR thread for each non-empty turn.

    Speculation (the detector's ``pause_ms``): after a short silence the turn is transcribed
    at once and ``on_guess(text, start, end)`` lets the caller start answering; when the
    turn then ends with no more speech, the same transcript is reused (no second Whisper
    run) and ``on_question`` gets the same start and end. ``on_resumed()`` (source thread)
    says a guess is void because the speaker went on.

    A turn that cannot be transcribed (Whisper's worker crashed) is lost and listening goes
    on; any other failure in the ASR thread (the engine, ``on_question``) ends ``run()`` with
    that error, unless ``on_error(exc)`` is given: then that turn alone is lost. At most
    *max_waiting_turns* finished turns wait for ASR; then VAD waits too (bounded memory).
    """

    def __init__(self, asr, detector: TurnDetector | None = None,
                 on_question: Callable[[str, float, float], None] | None = None,
                 on_speech_start: Callable[[], None] | None = None,
                 language: str | None = None, barge_in: bool = True,
                 on_guess: Callable[[str, float, float], None] | None = None,
                 on_resumed: Callable[[], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None, max_waiting_turns: int = 8) -> None:
        self.asr = asr
        self.detector = detector or TurnDetector()
        self.on_question = on_question
        self.on_speech_start = on_speech_start
        self.language = language
        self.barge_in = barge_in
        self.on_guess = on_guess
        self.on_resumed = on_resumed
        self.on_error = on_error
        self._guess: tuple[int, int, str] | None = None  # (start, end, text) of the last paused turn
        self.heard: deque[Heard] = deque(maxlen=1000)
        self.lost_turns = 0  # turns whose transcription failed (Whisper's worker crashed)
        self.speech_starts: deque[SpeechStarted] = deque(maxlen=1000)
        self.speech_started_at: float | None = None
        self._turns: queue.Queue[TurnEnded | TurnPaused | None] = queue.Queue(maxsize=max_waiting_turns)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings, asr=None, vad=None, speculate: bool = True, **kwargs) -> Listener:
        """A listener configured from [asr]; *asr* reuses an already loaded model, *vad* a
        Silero stream (``SileroVAD.fork()``: many listeners over one model). Without
        *speculate* a turn is transcribed only once it has ended (nobody drafts answers)."""
        from . import open_asr

        a = settings.asr
        detector = TurnDetector.from_settings(a, pause_ms=a.speculate_ms if speculate else 0, vad=vad)
        return cls(asr or open_asr(settings), detector, barge_in=a.barge_in, **kwargs)

    def run(self, source: Iterable[AudioChunk | np.ndarray]) -> list[Heard]:
        """Listen until the source ends or stop() is called; returns what was heard."""
        self._stop.clear()
        worker = threading.Thread(target=self._asr_loop, name="asr", daemon=True)
        worker.start()
        resampler: StreamResampler | None = None
        try:
            for chunk in source:
                if isinstance(chunk, AudioChunk) and chunk.sample_rate != SAMPLE_RATE:
                    if resampler is None or resampler.rate_in != chunk.sample_rate:
                        resampler = StreamResampler(chunk.sample_rate)
                    pcm = resampler(chunk.pcm)
                else:
                    pcm = chunk.pcm if isinstance(chunk, AudioChunk) else np.asarray(chunk, np.float32)
                self._handle(self.detector.feed(pcm))
                if self._stop.is_set() or self._error:
                    break
            else:
                if not self._stop.is_set():  # the source ended (not stop()): its last turn is heard
                    if resampler is not None:
                        self._handle(self.detector.feed(resampler.flush()))
                    self._handle(self.detector.flush())
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()  # a generator source releases its device or file now
            self._turns.put(None)
            worker.join()
        if self._error:
            raise self._error
        return list(self.heard)

    def start(self, source: Iterable[AudioChunk | np.ndarray]) -> None:
        """run() in a background thread (a microphone, a live call)."""
        self._thread = threading.Thread(target=self._run_logged, args=(source,), name="listener", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run_logged(self, source) -> None:
        try:
            self.run(source)
        except Exception:  # noqa: BLE001 - a background listener has nobody else to tell
            log.exception("listener stopped")

    def _handle(self, events: list) -> None:
        for ev in events:
            if isinstance(ev, SpeechStarted):
                self.speech_starts.append(ev)
                self.speech_started_at = ev.sample / SAMPLE_RATE
                if self.barge_in and self.on_speech_start is not None:
                    self.on_speech_start()
            elif isinstance(ev, TurnResumed):
                if self.on_resumed is not None:
                    self.on_resumed()
            else:
                self._turns.put(ev)  # blocks when ASR is 8 turns behind: bounded memory

    def _asr_loop(self) -> None:
        while (turn := self._turns.get()) is not None:
            if self._error:
                continue  # drain until the sentinel
            try:
                t0 = time.perf_counter()
                if isinstance(turn, TurnPaused):
                    text = self.asr.transcribe(turn.pcm, self.language)
                    self._guess = (turn.start, turn.end, text)
                    if text.strip(" .,!?-") and self.on_guess is not None:
                        self.on_guess(text, turn.start / SAMPLE_RATE, turn.end / SAMPLE_RATE)
                    continue
                guess, self._guess = self._guess, None
                if guess is not None and guess[:2] == (turn.start, turn.end):
                    text = guess[2]  # nothing was said since the pause: the guess was right
                else:
                    text = self.asr.transcribe(turn.pcm, self.language)
                heard = Heard(text, turn.start / SAMPLE_RATE, turn.end / SAMPLE_RATE, turn.seconds,
                              time.perf_counter() - t0, turn.reason)
                self.heard.append(heard)
                if text.strip(" .,!?-") and self.on_question is not None:
                    self.on_question(text, heard.start, heard.end)
            except EngineUnavailable as exc:  # Whisper's worker crashed or is restarting: this turn is lost
                self.lost_turns += 1
                log.warning("a spoken turn was lost: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the caller's to judge: on_error, or run() re-raises it
                if self.on_error is None:
                    self._error = exc
                    self._stop.set()
                    continue
                self.lost_turns += 1
                try:
                    self.on_error(exc)
                except Exception:  # noqa: BLE001 - a failing error handler must not end listening
                    log.exception("the listener's on_error failed")
            except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the caller's thread
                self._error = exc
                self._stop.set()
