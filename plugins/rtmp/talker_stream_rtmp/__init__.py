"""RTMP push sink: the live avatar as H.264 + AAC in FLV to an ingest (Twitch, YouTube, nginx-rtmp).

Why it is shaped like this:
- The avatar's process never touches the network. ``AVEncoder`` encodes FLV into a pipe
  and a child process (``relay.py``) pushes it: PyAV connects while holding the GIL and
  without a timeout, which would freeze the frame loop on every handshake (see relay.py).
- It runs on its own SinkRunner thread. While the connection is down, ``write`` returns at
  once (the slot is dropped) until the backoff delay has passed; then the next slot starts
  a new connection (child and encoder).
- Each connection is a new RTMP publish, and its timestamps restart at zero: the first
  slot sent on it is t = 0 and every later slot is ``pts - offset`` on the same media
  clock, audio and video alike, so lip-sync is exact. Ingests (nginx-rtmp, YouTube,
  Twitch) treat a re-publish as a fresh stream, and players and recorders expect a fresh
  stream to start near zero; one that opened at t = 2 h makes some of them wait or
  mis-size their timeline.
- A picture the frame loop dropped (``image is None``) is sent again as the previous
  picture while the sink keeps up, so the stream stays constant-frame-rate (ingests warn
  about gaps); when the sink is behind it sends the audio only, to catch up.
- The stream key is a secret: it is read from the environment and replaced by ``****``
  in every message this module logs or raises.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talker_stream.plugin import MediaClock
from talker_stream.plugin import opt
from talker_stream.plugin import TalkerError
from talker_stream.plugin import OutFrame
from talker_stream.plugin import AVEncoder

from .relay import Relay

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")


@dataclass
class Options:
    url: str = "rtmp://127.0.0.1:1935/live"  # ingest URL without the key; the key is appended as /KEY
    key_env: str = "RTMP_STREAM_KEY"  # environment variable holding the stream key
    crf: int = opt(23, 0, 51)  # H.264 quality: lower is better and bigger
    video_kbps: int = opt(0, 0, 100000)  # 0: quality (crf) only; > 0 caps the video rate
    preset: str = opt("veryfast", choices=PRESETS)  # x264 speed/size trade-off
    audio_bitrate: int = opt(128000, 32000, 320000)  # AAC bits per second
    reconnect_seconds: float = opt(2.0, 0.1, MAX_BACKOFF_S)  # first retry delay; doubles up to 30 s
    stall_seconds: float = opt(10.0, 1.0, 300.0)  # an ingest silent this long is dropped and retried


class RtmpSink:
    """Pushes every slot to ``url/KEY``; reconnects with backoff when the ingest goes away."""

    name = "rtmp"
    Options = Options

    def __init__(self, options: Options | None = None, base_dir: Path | None = None) -> None:
        self.options = options or Options()
        env = self.options.key_env
        self.key = os.environ.get(env, "") if env else ""
        url = self.options.url.rstrip("/")
        self.target = f"{url}/{self.key}" if self.key else url
        self.enc: AVEncoder | None = None
        self.relay: Relay | None = None
        self.size: tuple[int, int] = (0, 0)
        self.clock: MediaClock | None = None
        self.state = "closed"  # closed | connecting | streaming | down
        self.connects = 0  # publishes the ingest accepted
        self.sent = 0  # slots sent
        self.skipped = 0  # slots dropped while the connection was down
        self._delay = self.options.reconnect_seconds
        self._retry_at = 0.0
        self._down_since = 0.0
        self._skipped_at_down = 0
        self._offset = 0  # clock pts of the first slot on the current connection
        self._last_image: np.ndarray | None = None

    @classmethod
    def check(cls) -> str | None:
        """PyAV must carry the libx264 and aac encoders and the flv muxer."""
        try:
            import av
        except ImportError:
            return "PyAV is not installed: pip install av"
        missing = []
        for codec in ("libx264", "aac"):
            try:
                av.codec.Codec(codec, "w")
            except Exception:  # noqa: BLE001 - any failure means the encoder is unusable
                missing.append(f"the {codec} encoder")
        try:
            av.format.ContainerFormat("flv", "w")
        except Exception:  # noqa: BLE001
            missing.append("the flv muxer")
        if missing:
            return (f"PyAV lacks {' and '.join(missing)}: install the PyAV wheel from PyPI "
                    "(pip install --force-reinstall av), which bundles them")
        return None

    def redact(self, text: str) -> str:
        """*text* with the stream key (and any user:password@ in the URL) replaced by ****."""
        if self.key:
            text = text.replace(self.key, "****")
        return re.sub(r"(\w+://)[^/@\s]+@", r"\1****@", text)

    @property
    def shown_url(self) -> str:
        return self.redact(self.target)

    # -- sink interface ----------------------------------------------------------------------
    def open(self, size: tuple[int, int], clock: MediaClock) -> None:
        if not re.match(r"rtmps?://", self.options.url):
            raise TalkerError(f"sinks.rtmp.url must start with rtmp:// or rtmps://; got {self.redact(self.options.url)}")
        self.size, self.clock = size, clock
        if not self.key:
            log.warning("rtmp: %s is not set: pushing to %s as given, without a stream key",
                        self.options.key_env or "key_env", self.shown_url)
        self.state = "connecting"

    def write(self, frame: OutFrame) -> None:
        if frame.image is not None:
            self._last_image = frame.image
        now = time.monotonic()
        if self.enc is None and now < self._retry_at:
            self.skipped += 1
            return
        try:
            if self.enc is None:
                self._connect(frame.pts)
            image = frame.image
            fresh = now - frame.made_at < 2 * self.clock.frame_period
            if image is None and (fresh or self.enc.frames == 0):
                image = self._last_image  # hold the picture (a new connection must start with one)
            self.enc.write(image, frame.audio, frame.pts - self._offset)
            self.relay.check()
        except Exception as exc:  # noqa: BLE001 - any failure of the push means: reconnect
            self._went_down(exc)
            return
        self.sent += 1
        if self.relay.connected and self.state != "streaming":
            self._came_up()

    def close(self) -> None:
        if self.enc is not None:
            try:
                self.enc.finish()
                self.enc = None
                self.relay.close(timeout=min(3.0, self.options.stall_seconds))
            except Exception as exc:  # noqa: BLE001 - the ingest may already be gone
                log.debug("rtmp: closing: %s", self.redact(str(exc)))
            self._drop_connection()
        if self.state != "closed":
            log.info("rtmp: stopped pushing to %s: %d frames sent, %d dropped while disconnected, %d connections",
                     self.shown_url, self.sent, self.skipped, self.connects)
        self.state = "closed"

    # -- connection states ---------------------------------------------------------------------
    def _connect(self, pts: int) -> None:
        """A new publish: a relay child, and an encoder writing FLV into its stdin."""
        o = self.options
        self.relay = Relay(self.target, o.stall_seconds)
        self.enc = AVEncoder(self.relay, self.size, self.clock, "flv", o.crf, o.preset, o.audio_bitrate, live=True,
                             container_options={"flvflags": "no_duration_filesize"})
        if o.video_kbps:
            self.enc.video.options = {**self.enc.video.options, "maxrate": f"{o.video_kbps}k",
                                      "bufsize": f"{2 * o.video_kbps}k"}
        self._offset = pts

    def _drop_connection(self) -> None:
        if self.relay is not None:
            self.relay.kill()  # first: the encoder's close below then fails fast instead of writing
        if self.enc is not None:
            self.enc.discard()
        self.enc = self.relay = None

    def _came_up(self) -> None:
        self.connects += 1
        self._delay = self.options.reconnect_seconds
        if self.state == "down":
            log.info("rtmp: reconnected to %s after %.1f s (%d frames dropped meanwhile)", self.shown_url,
                     time.monotonic() - self._down_since, self.skipped - self._skipped_at_down)
        else:
            log.info("rtmp: streaming to %s", self.shown_url)
        self.state = "streaming"

    def _went_down(self, exc: Exception) -> None:
        self._drop_connection()
        why = self.redact(str(exc)) or type(exc).__name__
        now = time.monotonic()
        self._retry_at = now + self._delay
        if self.state == "down":  # another failed attempt: not a new state, so not a new line
            log.debug("rtmp: still cannot reach %s: %s; next try in %.1f s", self.shown_url, why, self._delay)
        else:
            what = "lost the connection to" if self.state == "streaming" else "cannot connect to"
            log.warning("rtmp: %s %s: %s; dropping frames and retrying in %.1f s (backoff up to %.0f s)",
                        what, self.shown_url, why, self._delay, MAX_BACKOFF_S)
            self.state, self._down_since, self._skipped_at_down = "down", now, self.skipped
        self._delay = min(self._delay * 2, MAX_BACKOFF_S)
