"""MP4 out (H.264 + AAC through PyAV): both streams stamped from the one audio clock.

The file is written under a temporary name beside the target and renamed only when the
render succeeds, so a failed or interrupted render never leaves a half-written video
where the user expects a finished one.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from .clock import MediaClock
from .errors import TalkerError


class Mp4Writer:
    def __init__(
        self,
        path: str | Path,
        size: tuple[int, int],
        clock: MediaClock,
        crf: int = 20,
        preset: str = "veryfast",
        audio_bitrate: int = 128000,
    ) -> None:
        import av

        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TalkerError(f"cannot create the output folder {self.path.parent}: {exc}") from None
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix or '.mp4'}")
        self.clock = clock
        try:
            self.container = av.open(str(self.tmp), mode="w", format="mp4")
        except (OSError, av.error.FFmpegError) as exc:
            raise TalkerError(f"cannot write {self.path}: {exc}") from None
        w, h = size
        tb = clock.time_base
        self.video = self.container.add_stream("libx264", rate=clock.fps)
        self.video.width, self.video.height = w, h
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = tb
        self.video.codec_context.time_base = tb
        self.video.options = {"crf": str(crf), "preset": preset}
        self.audio = self.container.add_stream("aac", rate=clock.sample_rate)
        self.audio.layout = "mono"
        self.audio.bit_rate = audio_bitrate
        self.audio.time_base = tb
        self.frames = 0
        self.samples = 0
        self._av = av

    def write(self, image: np.ndarray, audio: np.ndarray, pts: int) -> None:
        av = self._av
        vf = av.VideoFrame.from_ndarray(image, format="rgb24")
        vf.pts = pts
        vf.time_base = self.clock.time_base
        self.container.mux(self.video.encode(vf))
        if len(audio):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32)[None, :], format="flt", layout="mono")
            af.sample_rate = self.clock.sample_rate
            af.pts = pts
            af.time_base = self.clock.time_base
            self.container.mux(self.audio.encode(af))
            self.samples += len(audio)
        self.frames += 1

    def close(self) -> Path:
        """Flush, close and move the finished file into place."""
        self.container.mux(self.video.encode(None))
        self.container.mux(self.audio.encode(None))
        self.container.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is being discarded anyway
            pass
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def probe(path: str | Path) -> dict:
    """Stream durations and counts of a media file (used by tests and benchmarks)."""
    import av

    info: dict = {}
    with av.open(str(path)) as c:
        for s in c.streams:
            kind = s.type
            info[kind] = {"codec": s.codec_context.name, "time_base": s.time_base, "first_pts": None, "end": 0.0, "count": 0}
        for packet in c.demux():
            if packet.pts is None:
                continue
            d = info[packet.stream.type]
            t0 = float(packet.pts * packet.time_base)
            t1 = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            d["first_pts"] = t0 if d["first_pts"] is None else min(d["first_pts"], t0)
            d["end"] = max(d["end"], t1)
            d["count"] += 1
    return info
