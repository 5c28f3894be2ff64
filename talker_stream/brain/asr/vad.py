"""Streaming voice activity detection: Silero VAD v6 on onnxruntime, no torch.

The ONNX file is the one faster-whisper ships (``faster_whisper/assets/silero_vad_v6.onnx``).
faster-whisper's own ``SileroVADModel.__call__`` restarts the LSTM state on every call, so it
only suits whole files; here the state (h, c) and the 64-sample context that precedes each
512-sample window are carried from one chunk to the next, so audio can arrive in pieces of
any size and the probabilities are the same as for the whole stream at once.

``TurnDetector`` turns those probabilities into the two events a conversation needs:
``SpeechStarted`` (as early as possible: it drives barge-in) and ``TurnEnded`` (after a
configurable silence, with the turn's PCM for ASR).
"""
from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import EngineUnavailable

SAMPLE_RATE = 16000
WINDOW = 512  # samples per VAD decision (32 ms): the size the v6 model was exported for
CONTEXT = 64  # samples of the previous window the model sees before each window


def model_path() -> Path:
    """The Silero v6 ONNX file inside the installed faster-whisper."""
    try:
        from faster_whisper.utils import get_assets_path
    except ImportError as exc:
        raise EngineUnavailable(f"faster-whisper is not installed ({exc}); pip install faster-whisper") from None
    path = Path(get_assets_path()) / "silero_vad_v6.onnx"
    if not path.is_file():
        raise EngineUnavailable(f"Silero VAD model missing: {path}; reinstall faster-whisper (>= 1.2)")
    return path


class SileroVAD:
    """Speech probability per 32 ms window, with state kept across calls."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = threads  # one is plenty: RTF ~0.01 on one core
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(str(model_path()), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
        self.reset()

    def fork(self) -> "SileroVAD":
        """Another stream over the same ONNX session (its own state): many speakers, one model."""
        other = copy.copy(self)
        other.reset()
        return other

    def reset(self) -> None:
        """Forget the past (a new, unrelated stream)."""
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)

    def __call__(self, pcm: np.ndarray) -> np.ndarray:
        """Probabilities for ``len(pcm) // WINDOW`` windows (*pcm*: a multiple of WINDOW)."""
        windows = np.asarray(pcm, np.float32).reshape(-1, WINDOW)
        if not len(windows):
            return np.zeros(0, np.float32)
        contexts = np.concatenate([self._context[None], windows[:-1, -CONTEXT:]])
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self._h, self._c = self.session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, np.float32).reshape(-1)


@dataclass
class SpeechStarted:
    """Someone started speaking. Samples count from the start of the stream at 16 kHz."""

    sample: int  # where the speech begins (start of its first speech window)
    detected_at: int  # how much audio had been fed when this was known (barge-in latency)


@dataclass
class TurnPaused:
    """The speaker has been quiet for ``pause_ms``: probably done, not yet certain.

    A listener may transcribe and even start answering now, holding the answer back until
    TurnEnded confirms it (the same ``end``) or TurnResumed voids it.
    """

    start: int
    end: int
    pcm: np.ndarray
    detected_at: int


@dataclass
class TurnResumed:
    """Speech came back after a TurnPaused: the guess is void, the turn goes on."""

    detected_at: int


@dataclass
class TurnEnded:
    """A turn is over: its audio (with pre-roll and a short tail) is ready for ASR."""

    start: int  # sample of pcm[0] (pre-roll included)
    end: int  # sample where the last speech window ends
    pcm: np.ndarray
    detected_at: int
    reason: str  # "silence" | "max_length" | "flush" (the stream ended mid-turn)

    @property
    def seconds(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


# Of a barge-in's budget, what is not spent confirming speech: Silero's probability rises a
# window or two after the onset, and the live avatar cuts at its next audio block and fades
# for 5 ms. The barge-in test measures 35-75 ms for these together; this keeps twice that,
# so the default budget of 200 ms confirms speech after 64 ms (two windows).
BARGE_IN_OVERHEAD_MS = 136


class TurnDetector:
    """Feed 16 kHz float32 PCM in chunks of any size; get SpeechStarted / TurnEnded events.

    Speech starts after ``start_ms`` of consecutive windows above ``threshold - 0.15``, the
    last of them above ``threshold`` (two windows, 64 ms: clicks are ignored, and the rising
    edge of Silero's probability counts, so barge-in keeps most of its 200 ms). In a turn, a window
    counts as speech above ``threshold``, or above ``threshold - 0.15`` while no silence has
    begun (Silero's own hysteresis); ``end_of_turn_ms`` of silence ends the turn. A turn
    longer than ``max_turn_seconds`` is cut there and a new one begins without a new
    SpeechStarted. Memory is bounded by the longest turn plus the pre-roll.

    With ``pause_ms`` (shorter than ``end_of_turn_ms``), a TurnPaused comes first, after that
    much silence, so the answer can be prepared during the rest of the wait; TurnResumed
    follows if the speaker goes on.
    """

    def __init__(self, end_of_turn_ms: int = 500, threshold: float = 0.5, max_turn_seconds: float = 30.0,
                 pre_roll_ms: int = 200, start_ms: int = 64, tail_ms: int = 300, vad: SileroVAD | None = None,
                 pause_ms: int = 0) -> None:
        self.vad = vad or SileroVAD()
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        ms = SAMPLE_RATE // 1000
        self.end_of_turn = end_of_turn_ms * ms
        self.pause = pause_ms * ms if 0 < pause_ms < end_of_turn_ms else 0
        self.max_turn = max(int(max_turn_seconds * SAMPLE_RATE), WINDOW)
        self.start_windows = max(1, -(-start_ms * ms // WINDOW))
        self.pre_windows = -(-pre_roll_ms * ms // WINDOW)
        self.tail = tail_ms * ms
        self.reset()

    @classmethod
    def from_settings(cls, asr, **kwargs) -> "TurnDetector":
        """A detector as [asr] configures it. ``barge_in_ms`` is the whole budget from the
        first voiced sample to the avatar's silence; Silero's rising edge, the speech thread's
        cut at the playhead and the fade take up to BARGE_IN_OVERHEAD_MS of it, and the rest is
        how long speech must last to count as speech (longer: coughs interrupt less)."""
        start_ms = max(WINDOW * 1000 // SAMPLE_RATE, asr.barge_in_ms - BARGE_IN_OVERHEAD_MS)
        return cls(end_of_turn_ms=asr.end_of_turn_ms, threshold=asr.vad_threshold,
                   max_turn_seconds=asr.max_turn_seconds, start_ms=start_ms, **kwargs)

    def reset(self) -> None:
        self.vad.reset()
        self._pending = np.zeros(0, np.float32)  # fewer than WINDOW samples
        self.position = 0  # samples turned into windows so far
        self._recent: deque[np.ndarray] = deque(maxlen=self.pre_windows + self.start_windows)
        self._run = 0  # consecutive speech windows while idle
        self._turn: list[np.ndarray] | None = None
        self._turn_start = 0
        self._last_speech = 0
        self._silence = 0
        self._paused = False

    @property
    def in_turn(self) -> bool:
        return self._turn is not None

    def feed(self, pcm: np.ndarray) -> list[SpeechStarted | TurnEnded]:
        pcm = np.asarray(pcm, np.float32).reshape(-1)
        data = np.concatenate([self._pending, pcm]) if len(self._pending) else pcm
        n = len(data) // WINDOW * WINDOW
        self._pending = data[n:].copy()
        events: list[SpeechStarted | TurnEnded] = []
        for at in range(0, n, 1024 * WINDOW):  # bounded batches for very long chunks
            block = data[at:min(n, at + 1024 * WINDOW)]
            for window, prob in zip(block.reshape(-1, WINDOW), self.vad(block)):
                self._step(window, float(prob), events)
        return events

    def flush(self) -> list[SpeechStarted | TurnEnded]:
        """End of stream: close the open turn, if any."""
        events: list[SpeechStarted | TurnEnded] = []
        if self._turn is not None:
            events.append(self._close("flush", self.position))
        return events

    def _step(self, window: np.ndarray, prob: float, events: list) -> None:
        self.position += WINDOW
        if self._turn is None:
            self._recent.append(window)
            self._run = self._run + 1 if prob >= self.neg_threshold else 0
            if self._run >= self.start_windows and prob >= self.threshold:
                onset = self.position - self._run * WINDOW
                self._turn = list(self._recent)
                self._turn_start = self.position - len(self._turn) * WINDOW
                self._last_speech, self._silence, self._run = self.position, 0, 0
                events.append(SpeechStarted(onset, self.position))
            return
        self._turn.append(window)
        if prob >= self.threshold or (prob >= self.neg_threshold and self._silence == 0):
            self._last_speech, self._silence = self.position, 0
            if self._paused:
                self._paused = False
                events.append(TurnResumed(self.position))
        else:
            self._silence += WINDOW
        if self.pause and not self._paused and self.pause <= self._silence < self.end_of_turn:
            self._paused = True
            events.append(TurnPaused(self._turn_start, self._last_speech, self._turn_pcm(), self.position))
        if self._silence >= self.end_of_turn:
            events.append(self._close("silence", self.position))
        elif self.position - self._turn_start >= self.max_turn:
            events.append(self._close("max_length", self.position))
            self._turn, self._turn_start = [], self.position  # still speaking: carry on
            self._last_speech, self._silence = self.position, 0
            self._paused = False

    def _turn_pcm(self) -> np.ndarray:
        """The turn's audio up to its last speech plus the tail (what there is of it)."""
        assert self._turn is not None
        pcm = np.concatenate(self._turn) if self._turn else np.zeros(0, np.float32)
        return pcm[: self._last_speech - self._turn_start + self.tail]

    def _close(self, reason: str, now: int) -> TurnEnded:
        event = TurnEnded(self._turn_start, self._last_speech, self._turn_pcm(), now, reason)
        # the end of this turn is the pre-roll of the next one, should it follow at once
        self._recent = deque(self._turn[-self.pre_windows:] if self.pre_windows else [], maxlen=self._recent.maxlen)
        self._turn, self._run, self._silence, self._paused = None, 0, 0, False
        return event
