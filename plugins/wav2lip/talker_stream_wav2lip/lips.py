"""Mouths rendered ahead of the playhead, on a thread of their own.

The timeline announces each piece of speech as it is laid out (frames first..first+n,
with its audio), before any of its frames is shown. The worker turns it into mel
windows, one per frame, and runs the network on them in batches, oldest first, keeping
the generated lower faces (48 x 96 RGB, uint8) by frame index.

The render job asks for a frame's mouth and waits for it: the result is the same
however fast the machine is. The live loop must never wait, so it takes what is ready,
and a frame whose mouth is not ready gets the mesh animator's mouth. Speech usually
starts at the playhead, so the worker aims ahead of it: the first batch after a pause is
small (a short start-up gap), and frames that will have been shown before a batch can
finish are skipped (it lands ahead once instead of trailing for ever). When more than a
fifth of the speaking frames past the start of speech find no mouth, or the network
fails, it cannot keep real time here: it stops for good, with a warning, and every
frame gets the mesh mouth (what everyone gets without this plugin).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from talker_stream.plugin import MediaClock
from talker_stream.plugin import EngineUnavailable

from .mel import MEL_FPS, melspectrogram, to_16k, windows_at

log = logging.getLogger(__name__)

JUDGE_FRAMES = 50  # live, the share of missed mouths is judged over this many speaking frames
MAX_MISSED = 0.2  # missing more of them than this is not keeping real time
GRACE_FRAMES = 12  # the first frames of speech are not judged: the worker is only starting on them
COLD_DIVISOR = 4  # the first batch after a pause is this much smaller, to start sooner
WAIT_S = 120.0  # the render job waits this long for one batch before calling the network hung


@dataclass
class _Speech:
    first: int
    audio: np.ndarray
    clock: MediaClock
    generation: int


class LipWorker:
    """Speech in, mouths out, one portrait. ``add()``/``cut()`` from the timeline, ``mouth()`` per frame."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], batch_size: int, name: str = "") -> None:
        self._run = run
        self.batch_size = batch_size
        self.name = name
        self._cond = threading.Condition()
        self._speech: deque[_Speech] = deque()  # announced, mel not computed yet
        self._todo: deque[tuple[int, np.ndarray, int]] = deque()  # (frame, mel window, generation)
        self._ready: dict[int, np.ndarray] = {}
        self._spans: list[tuple[int, int]] = []  # [first, end) of speech still to be shown
        self._busy = False
        self._generation = 0
        self._cuts: dict[int, int] = {}  # generation -> the frame it was cut at
        self._playhead = 0
        self._realtime = False
        self._mouth_s = 0.0  # seconds per mouth in the last batch
        self._fps = 25.0  # of the clock the speech comes on
        self._judged: deque[bool] = deque(maxlen=JUDGE_FRAMES)  # live: was the mouth ready in time?
        self._cold = True  # nothing rendered since the last pause
        self.error: BaseException | None = None
        self.gave_up = False
        self.neural_frames = 0
        self.missed_frames = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="wav2lip", daemon=True)
        self._thread.start()

    # -- the timeline's side --------------------------------------------------------------
    def add(self, first_frame: int, audio: np.ndarray, clock: MediaClock) -> None:
        """Speech laid out from *first_frame* on (its audio padded to whole frames). Cheap."""
        n = clock.frames_to_cover(first_frame, len(audio))
        with self._cond:
            if self.gave_up or self._stopped:
                return
            self._speech.append(_Speech(first_frame, audio, clock, self._generation))
            self._fps = float(clock.fps)
            self._spans.append((first_frame, first_frame + max(1, n)))
            self._cond.notify_all()

    def cut(self, frame: int) -> None:
        """Everything from *frame* on was withdrawn (an interrupt): forget its mouths.

        Work already under way for earlier frames stays valid; work for later ones is
        recognised by its generation and dropped, even if new speech reuses those frames.
        """
        with self._cond:
            self._generation += 1
            self._cuts[self._generation] = frame
            for old in sorted(self._cuts)[:-100]:
                del self._cuts[old]
            self._speech = deque(s for s in self._speech if s.first < frame)
            self._todo = deque(t for t in self._todo if t[0] < frame)
            self._ready = {k: v for k, v in self._ready.items() if k < frame}
            self._spans = [(a, min(b, frame)) for a, b in self._spans if a < frame]
            self._cond.notify_all()

    def _valid(self, frame: int, generation: int) -> bool:
        """Whether a mouth announced in *generation* for *frame* survived every cut since."""
        return all(frame < at for g, at in self._cuts.items() if g > generation)

    # -- the frame's side -----------------------------------------------------------------
    def mouth(self, frame: int, realtime: bool) -> np.ndarray | None:
        """The generated lower face for *frame*, or None: not speech, or (live) not ready in time."""
        with self._cond:
            self._playhead = frame
            self._realtime = realtime
            for k in [k for k in self._ready if k < frame]:
                del self._ready[k]
            self._spans = [(a, b) for a, b in self._spans if b > frame]
            if self.gave_up or not any(a <= frame < b for a, b in self._spans):
                return None
            if not realtime:
                return self._wait_for(frame)
            found = self._ready.pop(frame, None)
            self._judge(frame, found is not None)
            return found

    def _wait_for(self, frame: int) -> np.ndarray:
        while frame not in self._ready:
            if self.error is not None:
                raise EngineUnavailable(f"wav2lip failed ({self.name}): {self.error}") from self.error
            if not self._cond.wait(WAIT_S) and frame not in self._ready:
                raise EngineUnavailable(f"wav2lip produced nothing for {WAIT_S:.0f} s ({self.name}); is the device hung?")
        self.neural_frames += 1
        return self._ready.pop(frame)

    def _judge(self, frame: int, ready: bool) -> None:
        """Live bookkeeping: give up (for good) when the network failed, or when it missed
        too many frames once past the start of speech (a busy moment elsewhere on the
        machine only eats into the worker's lead; missing frames is what shows)."""
        self.neural_frames += ready
        self.missed_frames += not ready
        if self.error is not None:
            log.warning("wav2lip: it failed (%s): %s. Using the mesh animator's mouth from now on.", self.name, self.error)
            self._give_up()
            return
        if any(a <= frame < a + GRACE_FRAMES for a, _ in self._spans):
            return
        self._judged.append(ready)
        missed = self._judged.count(False)
        if len(self._judged) == JUDGE_FRAMES and missed > MAX_MISSED * JUDGE_FRAMES:
            log.warning("wav2lip: it cannot keep real time (%s: %d of the last %d speaking frames had no mouth in "
                        "time); try device = \"cuda\", backend = \"onnx\" or less other work on this machine. "
                        "Using the mesh animator's mouth from now on.", self.name, missed, JUDGE_FRAMES)
            self._give_up()

    def _give_up(self) -> None:
        self.gave_up = True
        self._speech.clear()
        self._todo.clear()
        self._ready.clear()
        self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(5)

    @property
    def idle(self) -> bool:
        """Nothing announced is still waiting to be rendered (tests and benchmarks poll this)."""
        with self._cond:
            return not (self._speech or self._todo or self._busy)

    # -- the worker -----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self.gave_up and not (self._speech or self._todo):
                    self._cond.wait()
                if self._stopped or self.gave_up:
                    return
                speech = self._speech.popleft() if self._speech else None
                batch = [] if speech else self._take_batch()
                self._busy = True
            try:
                if speech is not None:
                    self._windows(speech)
                elif batch:
                    self._render(batch)
            except Exception as exc:  # noqa: BLE001 - reported by mouth(): raised (render) or a warning (live)
                log.debug("wav2lip worker failed", exc_info=True)
                with self._cond:
                    self.error = exc
                    self._busy = False
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _take_batch(self) -> list[tuple[int, np.ndarray, int]]:
        """The next frames to render. Live, the first batch after a pause is small, so that
        the first neural mouth comes soon, and frames that will have been shown by the
        time the batch is done (at the last batch's seconds per mouth) are skipped."""
        size = max(1, self.batch_size // COLD_DIVISOR) if self._realtime and self._cold else self.batch_size
        horizon = self._playhead + (int(self._mouth_s * size * self._fps) + 1 if self._realtime else 0)
        batch = []
        while self._todo and len(batch) < size:
            item = self._todo.popleft()
            if self._realtime and item[0] <= horizon:
                continue
            batch.append(item)
        return batch

    def _windows(self, speech: _Speech) -> None:
        """One 0.2 s mel window per frame, centred on the middle of the frame."""
        clock = speech.clock
        n = max(1, clock.frames_to_cover(speech.first, len(speech.audio)))
        start = clock.frame_start(speech.first)
        bounds = np.array([clock.frame_start(speech.first + j) for j in range(n + 1)], dtype=np.float64) - start
        centres = (bounds[:-1] + bounds[1:]) / 2 / clock.sample_rate * MEL_FPS
        windows = windows_at(melspectrogram(to_16k(speech.audio, clock.sample_rate)), centres)
        with self._cond:
            self._todo.extend((speech.first + j, windows[j], speech.generation) for j in range(n)
                              if self._valid(speech.first + j, speech.generation))

    def _render(self, batch: list[tuple[int, np.ndarray, int]]) -> None:
        started = time.perf_counter()
        faces = self._run(np.stack([w for _, w, _ in batch]))
        self._mouth_s = (time.perf_counter() - started) / len(batch)
        faces = np.clip(faces * 255.0 + 0.5, 0, 255).astype(np.uint8)
        with self._cond:
            for (frame, _, generation), face in zip(batch, faces):
                if self._valid(frame, generation):
                    self._ready[frame] = face
            self._cold = not self._todo  # a pause follows: the next start is cold again

