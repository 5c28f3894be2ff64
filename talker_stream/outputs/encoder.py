"""Encoded A/V out through PyAV: mp4 files, and the same encoder for live streams.

Both streams are stamped in the one clock's time base (audio samples), so whatever the
container (mp4, flv for RTMP, MPEG-TS for OBS), lips and voice stay where the timeline
put them. Files are written under a temporary name beside the target and renamed only
on success: a failed render never leaves a half-written video where the user expects a
finished one.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..speech.clock import MediaClock
from ..errors import TalkerError


class AVEncoder:
    """H.264 + AAC into any container PyAV can open (a path or a URL)."""

    def __init__(
        self,
        target: str,
        size: tuple[int, int],
        clock: MediaClock,
        format: str,
        crf: int = 20,
        preset: str = "veryfast",
        audio_bitrate: int = 128000,
        live: bool = False,
        container_options: dict | None = None,
    ) -> None:
        import av

        self._av = av
        self.clock = clock
        self.target = target
        try:
            self.container = av.open(target, mode="w", format=format, options=container_options or {})
        except (OSError, av.error.FFmpegError) as exc:
            raise TalkerError(f"cannot open {format} output {target}: {exc}") from None
        w, h = size
        tb = clock.time_base
        self.video = self.container.add_stream("libx264", rate=clock.fps)
        self.video.width, self.video.height = w, h
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = tb
        self.video.codec_context.time_base = tb
        options = {"crf": str(crf), "preset": preset}
        if live:  # no B-frames or lookahead: a frame leaves the encoder as soon as it enters
            options |= {"tune": "zerolatency", "g": str(max(1, round(2 * float(clock.fps))))}
        self.video.options = options
        self.audio = self.container.add_stream("aac", rate=clock.sample_rate)
        self.audio.layout = "mono"
        self.audio.bit_rate = audio_bitrate
        self.audio.time_base = tb
        self.frames = 0
        self.samples = 0

    def write(self, image: np.ndarray | None, audio: np.ndarray, pts: int) -> None:
        """One frame slot: *image* may be None (a dropped frame): the audio still goes out."""
        av = self._av
        if image is not None:
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
            vf.pts = pts
            vf.time_base = self.clock.time_base
            self.container.mux(self.video.encode(vf))
            self.frames += 1
        if len(audio):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio, dtype=np.float32)[None, :], format="flt", layout="mono"
            )
            af.sample_rate = self.clock.sample_rate
            af.pts = pts
            af.time_base = self.clock.time_base
            self.container.mux(self.audio.encode(af))
            self.samples += len(audio)

    def finish(self) -> None:
        """Flush both encoders and close the container."""
        self.container.mux(self.video.encode(None))
        self.container.mux(self.audio.encode(None))
        self.container.close()

    def discard(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the output is being thrown away anyway
            pass


class Mp4Writer(AVEncoder):
    """An mp4 file that appears only when it is complete."""

    def __init__(self, path: str | Path, size: tuple[int, int], clock: MediaClock, crf: int = 20,
                 preset: str = "veryfast", audio_bitrate: int = 128000) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TalkerError(f"cannot create the output folder {self.path.parent}: {exc}") from None
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix or '.mp4'}")
        super().__init__(str(self.tmp), size, clock, "mp4", crf, preset, audio_bitrate,
                         container_options={"movflags": "+faststart"})

    def close(self) -> Path:
        """Flush, close and move the finished file into place."""
        self.finish()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        self.discard()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def probe(path: str | Path) -> dict:
    """Stream durations and counts of a media file or URL (used by tests and benchmarks)."""
    import av

    info: dict = {}
    with av.open(str(path)) as c:
        for s in c.streams:
            info[s.type] = {"codec": s.codec_context.name, "time_base": s.time_base, "first_pts": None,
                            "end": 0.0, "count": 0}
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
