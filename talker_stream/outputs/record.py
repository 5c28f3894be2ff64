"""Session recording: everything the avatar shows and says, to an mp4."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..speech.clock import MediaClock
from .encoder import Mp4Writer
from ..frames import OutFrame


class RecordingSink:
    """Writes the live session to a file that appears, complete, when the session ends."""

    name = "record"

    @dataclass
    class Options:
        path: str = "out/session-{time}.mp4"  # {time} becomes the start time, YYYYmmdd-HHMMSS
        crf: int = 23
        preset: str = "veryfast"

    def __init__(self, options: "RecordingSink.Options | None" = None, base_dir: Path | None = None) -> None:
        self.options = options or self.Options()
        self.base_dir = base_dir or Path.cwd()
        self.writer: Mp4Writer | None = None
        self.path: Path | None = None
        self._last = None

    @classmethod
    def check(cls) -> str | None:
        return None

    def open(self, size: tuple[int, int], clock: MediaClock) -> None:
        p = Path(self.options.path.replace("{time}", time.strftime("%Y%m%d-%H%M%S"))).expanduser()
        self.path = p if p.is_absolute() else self.base_dir / p
        self.writer = Mp4Writer(self.path, size, clock, self.options.crf, self.options.preset)

    def write(self, frame: OutFrame) -> None:
        # a dropped picture is written as the previous one again: a constant frame rate
        # file is what video editors expect (x264 codes a repeated frame in a few bytes)
        if frame.image is not None:
            self._last = frame.image
        self.writer.write(self._last, frame.audio, frame.pts)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
