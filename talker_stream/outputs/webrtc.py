"""WebRTC out: the avatar's picture and voice as two aiortc tracks, stamped from the one clock.

The frame loop already runs at the wall clock and hands each sink a picture and its 40 ms
of sound together. This sink turns them into a VideoFrame (pts in 90 kHz) and an AudioFrame
(pts in samples at the clock's rate) with the *same* media time, and queues both for the
peer connection's encoders at once. aiortc's sender reports (RTCP SR) tie each track's RTP
time to the wall clock when it is sent, so a browser lines the two up the way the avatar
made them, for as long as the session lasts.

Nothing here waits: ``write`` runs on the sink's own thread and only hands frames to the
event loop. When the network or the encoder falls behind, pictures are dropped (the browser
holds the last one) and sound never is, up to a cap that keeps memory bounded.
"""
from __future__ import annotations

import asyncio
import fractions
import logging
from collections import deque
from typing import Any

import numpy as np

from ..speech.clock import MediaClock
from ..frames import OutFrame

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90000
VIDEO_BACKLOG = 3  # pictures waiting for the encoder; older ones are dropped
AUDIO_BACKLOG = 250  # 10 s of 40 ms frames: past this the peer is gone or stuck


def _tracks():
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class QueuedTrack(MediaStreamTrack):
        """A track whose frames are pushed from outside; ``recv`` waits for the next one."""

        def __init__(self, kind: str, backlog: int) -> None:
            super().__init__()
            self.kind = kind
            self._frames: deque = deque()
            self._backlog = backlog
            self._ready = asyncio.Event()
            self.dropped = 0
            self.sent = 0

        def push(self, frame) -> None:  # on the event loop
            if frame is None:
                self._frames.append(None)
            else:
                while len(self._frames) >= self._backlog and self._frames[0] is not None:
                    self._frames.popleft()
                    self.dropped += 1
                self._frames.append(frame)
            self._ready.set()

        async def recv(self):
            while not self._frames:
                if self.readyState != "live":
                    raise MediaStreamError
                self._ready.clear()
                await self._ready.wait()
            frame = self._frames.popleft()
            if frame is None:
                self.stop()
                raise MediaStreamError
            self.sent += 1
            return frame

    return QueuedTrack


class WebRTCSink:
    """One browser's picture and voice. Give ``video`` and ``audio`` to an RTCPeerConnection
    (``pc.addTrack``) before answering its offer; the avatar's frame loop writes here."""

    name = "webrtc"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        track = _tracks()
        self.loop = loop
        self.video = track("video", VIDEO_BACKLOG)
        self.audio = track("audio", AUDIO_BACKLOG)
        self.clock: MediaClock | None = None
        self.frames = 0
        self.last_caption = ""
        self.on_frame = None  # optional: called with each OutFrame (captions for the page)

    def open(self, size: tuple[int, int], clock: MediaClock) -> None:
        self.clock = clock

    def write(self, frame: OutFrame) -> None:
        import av

        clock = self.clock
        assert clock is not None, "open() first"
        video = None
        if frame.image is not None:
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.image), format="rgb24")
            video.pts = frame.pts * VIDEO_CLOCK // clock.sample_rate
            video.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        pcm = np.clip(frame.audio, -1.0, 1.0)
        audio = av.AudioFrame.from_ndarray((pcm * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        audio.sample_rate = clock.sample_rate
        audio.pts = frame.pts
        audio.time_base = fractions.Fraction(1, clock.sample_rate)
        self.frames += 1
        if self.on_frame is not None:
            self.on_frame(frame)
        try:
            self.loop.call_soon_threadsafe(self._push, video, audio)
        except RuntimeError:  # the event loop is closed: the session is over
            pass

    def _push(self, video: Any, audio: Any) -> None:
        if video is not None:
            self.video.push(video)
        self.audio.push(audio)

    def close(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._end)
        except RuntimeError:
            pass

    def _end(self) -> None:
        self.video.push(None)
        self.audio.push(None)

    def stats(self) -> dict:
        return {"frames": self.frames, "video_sent": self.video.sent, "video_dropped": self.video.dropped,
                "audio_sent": self.audio.sent, "audio_dropped": self.audio.dropped}
