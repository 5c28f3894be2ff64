"""The preview sink: keeps the latest frame as a JPEG for the web page's live preview."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from ..speech.clock import MediaClock
from ..frames import OutFrame


class PreviewSink:
    name = "preview"

    @dataclass
    class Options:
        max_width: int = 640  # preview frames are scaled down to this width

    def __init__(self, options: "PreviewSink.Options | None" = None, base_dir: Path | None = None,
                 fps: float = 12.0, quality: int = 80) -> None:
        self.options = options or self.Options()
        self.interval = 1.0 / fps
        self.quality = quality
        self._jpeg: bytes | None = None
        self._seq = 0
        self._last = 0.0
        self._cond = threading.Condition()

    @classmethod
    def check(cls) -> str | None:
        return None

    def open(self, size: tuple[int, int], clock: MediaClock) -> None:
        w, h = size
        scale = min(1.0, self.options.max_width / w)
        self.size = (max(2, round(w * scale)), max(2, round(h * scale)))

    def write(self, frame: OutFrame) -> None:
        now = time.monotonic()
        if frame.image is None or now - self._last < self.interval:
            return
        self._last = now
        img = frame.image
        if img.shape[1] != self.size[0]:
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            with self._cond:
                self._jpeg = buf.tobytes()
                self._seq += 1
                self._cond.notify_all()

    def latest(self, after: int = -1, timeout: float = 2.0) -> tuple[int, bytes | None]:
        """The newest JPEG, waiting up to *timeout* for one newer than sequence *after*."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq > after, timeout)
            return self._seq, self._jpeg

    def close(self) -> None:
        with self._cond:
            self._seq += 1
            self._cond.notify_all()
