"""Sinks: where live frames and audio go (virtual webcam, OBS, RTMP, a recording, the preview).

Each sink runs behind a :class:`SinkRunner`: its own thread and bounded queue. The frame
loop only ever puts into queues, so a slow or dead sink can drop its own frames but can
never slow the loop or another sink. When a sink falls behind, it gets the audio of the
frames it missed but not their pictures: sound stays continuous, video holds a frame.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from typing import Any, Protocol

from ..frames import OutFrame
from ..speech.clock import MediaClock

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What a sink plugin implements. ``Options`` (a dataclass) declares its config table."""

    name: str

    def open(self, size: tuple[int, int], clock: MediaClock) -> None: ...

    def write(self, frame: OutFrame) -> None: ...

    def close(self) -> None: ...


class SinkRunner:
    """A sink on its own thread behind a bounded queue."""

    def __init__(self, sink: Any, max_backlog: int = 6, hard_cap: int = 500) -> None:
        self.sink = sink
        self.name = getattr(sink, "name", type(sink).__name__)
        self.max_backlog = max_backlog  # frames queued before pictures are dropped
        self.hard_cap = hard_cap  # frames queued before even audio is dropped (sink is stuck)
        self._q: queue.Queue[OutFrame | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self.written = 0
        self.dropped = 0  # pictures not shown (audio kept)
        self.lost = 0  # whole slots lost because the sink was stuck
        self.errors = 0
        self.last_error = ""
        self.first_frame_at: dict[int, float] = {}  # utterance -> when its first frame was written
        self.write_times: list[float] = []  # monotonic time of each write (for fps stats)

    def start(self) -> None:
        self._thread.start()

    def put(self, frame: OutFrame) -> None:
        backlog = self._q.qsize()
        if backlog >= self.hard_cap:
            self.lost += 1
            return
        if backlog >= self.max_backlog and frame.image is not None:
            frame = replace(frame, image=None)
            self.dropped += 1
        self._q.put(frame)

    @property
    def backlog(self) -> int:
        return self._q.qsize()

    def stop(self, timeout: float = 5.0) -> None:
        self._q.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            frame = self._q.get()
            if frame is None:
                break
            try:
                self.sink.write(frame)
            except Exception as exc:  # noqa: BLE001 - one sink's failure must not stop the others
                self.errors += 1
                if str(exc) != self.last_error:
                    log.warning("sink %s: %s", self.name, exc)
                self.last_error = str(exc)
                continue
            now = time.monotonic()
            self.written += 1
            self.write_times.append(now)
            if len(self.write_times) > 600:
                del self.write_times[:300]
            if frame.first_of_utterance and frame.utterance is not None:
                self.first_frame_at[frame.utterance] = now
        try:
            self.sink.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("sink %s did not close cleanly: %s", self.name, exc)

    def stats(self) -> dict:
        now = time.monotonic()
        recent = [t for t in self.write_times if now - t <= 2.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 2 else 0.0
        return {"name": self.name, "fps": round(fps, 2), "written": self.written, "dropped": self.dropped,
                "lost": self.lost, "errors": self.errors, "backlog": self.backlog,
                "last_error": self.last_error}


def open_sinks(settings) -> list:
    """Instantiate the sinks named in [live] sinks, each with its [sinks.NAME] options."""
    from ..engines import registry

    sinks = []
    for name in settings.live.sinks:
        cls = registry.load_ready("sink", name, "sink")
        extra = {}
        if name == "preview":
            extra = {"fps": settings.server.preview_fps, "quality": settings.server.preview_quality}
        sinks.append(cls(settings.sinks.get(name), base_dir=settings.base_dir, **extra))
    return sinks
