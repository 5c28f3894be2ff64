"""The avatar in OBS Studio: an MPEG-TS feed over local UDP, set up through obs-websocket 5.

Why MPEG-TS over UDP: it carries H.264 *and* AAC in one container with both streams
stamped on our one clock, so OBS's media source plays picture and voice in sync and
the voice arrives as an OBS audio source (mixable, monitorable, streamable). An MJPEG
feed over HTTP starts a little faster in OBS but has no audio, so the voice would need a
second path with its own latency. The virtual camera needs the v4l2loopback kernel module
(root, often absent in containers and CI), carries no audio, and a device is usually held
by one consumer at a time. UDP also never blocks the sender: with OBS closed the packets
just fall on the floor, and when OBS comes back its source picks the stream up at the
next keyframe.

Latency: OBS's media source starts playing from the data it probed the stream with, so
whatever it buffered before the first keyframe stays as delay for the whole session.
Measured with OBS 29 here (sink write to OBS's audio meter): with the source's
buffering_mb 1, about 1.0 s whatever the keyframe interval; with buffering_mb 0 (ffmpeg's
NOBUFFER) 1.2-2.2 s at the encoder's usual 2-s keyframes, and 0.3 s with a keyframe every
0.5 s, so the feed uses both. The caption, pushed over the websocket, leads by that 0.3 s.

The websocket side runs on its own thread: `write()` only encodes and notes the caption,
so a slow, absent or restarting OBS can never stall the avatar. That thread connects
(waiting for the port to accept first, because obsws-python prints a traceback for every
refused connection), builds the scene idempotently, pushes caption changes at most a few
times a second, pings to notice OBS going away, and on reconnect rebuilds whatever is
missing. It logs one line per state change, never one per retry.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from talker_stream.plugin import MediaClock
from talker_stream.plugin import opt
from talker_stream.plugin import OutFrame
from talker_stream.plugin import AVEncoder

from .scene import caption_text, ensure_scene, set_caption

log = logging.getLogger(__name__)

KEYFRAME_SECONDS = 0.5  # OBS's media source starts at a keyframe: this bounds its start-up and its latency
CAPTION_MIN_INTERVAL = 0.3  # seconds between caption updates: OBS re-renders text on every change
REQUEST_TIMEOUT = 5.0  # a hung OBS counts as lost after this long


class _QuietObsws(logging.Filter):
    """obsws-python logs its connect parameters, password included, at INFO, and an error on
    every failed login: hide the parameters, and say a message again only after another one."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Connecting with parameters"):
            record.msg, record.args = "Connecting (parameters not logged)", ()
        message = record.getMessage()
        if message == self.last:
            return False
        self.last = message
        return True


for _name in ("obsws_python.baseclient.ObsClient", "obsws_python.reqs.ReqClient"):
    logging.getLogger(_name).addFilter(_QuietObsws())


@dataclass
class ObsOptions:
    host: str = "127.0.0.1"  # where OBS runs; the feed is sent to the same host
    port: int = opt(4455, 1, 65535)  # OBS websocket server port (Tools > WebSocket Server Settings)
    password_env: str = "OBS_WEBSOCKET_PASSWORD"  # environment variable holding the websocket password
    scene: str = "talker-stream"  # scene created (or updated) and made the program scene
    feed_port: int = opt(5600, 1, 65535)  # UDP port of the MPEG-TS feed
    caption: bool = True  # show what the avatar says (and who asked) as a text source
    reconnect_seconds: float = opt(2.0, 0.1, 300.0)  # retry period while OBS is down; also the ping period


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ObsSink:
    """Feeds OBS and keeps an OBS scene showing that feed, across OBS restarts."""

    name = "obs"
    Options = ObsOptions

    def __init__(self, options: ObsOptions | None = None, base_dir=None) -> None:
        self.options = options or ObsOptions()
        self.feed_url = f"udp://{self.options.host}:{self.options.feed_port}"
        self.encoder: AVEncoder | None = None
        self.state = "idle"  # waiting | connected | lost | failed
        self.connects = 0
        self._want = ""  # caption text the avatar is showing now
        self._shown: str | None = None  # caption text OBS shows (None: unknown)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said = ""  # last state line logged
        self._fails = 0  # failed connects in a row since the port opened

    @classmethod
    def check(cls) -> str | None:
        try:
            import obsws_python  # noqa: F401
        except ImportError:
            return "obsws-python is not installed: pip install -e plugins/obs"
        return None

    def open(self, size: tuple[int, int], clock: MediaClock) -> None:
        # pkt_size: 7 TS packets per datagram, under any MTU, as OBS/ffmpeg expect
        self.encoder = AVEncoder(f"{self.feed_url}?pkt_size=1316", size, clock, "mpegts", live=True)
        gop = max(1, round(float(clock.fps) * KEYFRAME_SECONDS))  # applied when the codec opens, at the first frame
        self.encoder.video.options = dict(self.encoder.video.options, g=str(gop))
        self._thread = threading.Thread(target=self._control, name="obs-websocket", daemon=True)
        self._thread.start()

    def write(self, frame: OutFrame) -> None:
        self.encoder.write(frame.image, frame.audio, frame.pts)
        if self.options.caption:
            text = caption_text(frame.caption, frame.question)
            if text != self._want:
                self._want = text
                self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT + 1)
        if self.encoder is not None:
            self.encoder.finish()
            self.encoder = None

    # -- the websocket thread ------------------------------------------------------------------
    def _note(self, state: str, level: int, line: str) -> None:
        """Log *line* only when it differs from the last one: one line per state change."""
        self.state = state
        if line != self._said:
            self._said = line
            log.log(level, "obs: %s", line)

    def _connect(self):
        import obsws_python as obsws

        o = self.options
        where = f"OBS at {o.host}:{o.port}"
        if not _port_open(o.host, o.port):
            if self.state == "idle":  # lost and failed were already said
                self._note("waiting", logging.INFO, f"waiting for {where} (its websocket server must be enabled); "
                           f"retrying every {o.reconnect_seconds:g} s")
            return None
        client = None
        try:
            client = obsws.ReqClient(host=o.host, port=o.port, password=os.environ.get(o.password_env, ""),
                                     timeout=REQUEST_TIMEOUT)
            version = ensure_scene(client, o.scene, self.feed_url, self._want if o.caption else None)
        except Exception as exc:  # noqa: BLE001 - any failure here means: try again later
            if client is not None:
                _disconnect(client)
            self._fails += 1
            # a starting or stopping OBS resets connections for a moment: only say so if it lasts
            if isinstance(exc, obsws.error.OBSSDKError) or self._fails >= 3:
                hint = f" (is ${o.password_env} right?)" if "identif" in str(exc) or "password" in str(exc) else ""
                self._note("failed", logging.WARNING, f"cannot set up {where}: {exc or type(exc).__name__}{hint}")
            return None
        self._fails = 0
        self._shown = self._want if o.caption else None
        again = self.connects > 0
        self.connects += 1
        self._note("connected", logging.INFO, f"{'reconnected to' if again else 'connected to'} {where} "
                   f"(OBS {version}): scene {o.scene!r} shows {self.feed_url}")
        return client

    def _control(self) -> None:
        client = None
        next_ping = last_caption = 0.0
        period = self.options.reconnect_seconds
        while not self._stop.is_set():
            if client is None:
                client = self._connect()
                if client is None:
                    self._stop.wait(period)
                    continue
                next_ping = time.monotonic() + period
            try:
                now = time.monotonic()
                timeout = next_ping - now
                if self.options.caption and self._want != self._shown:
                    due = last_caption + CAPTION_MIN_INTERVAL - now
                    if due <= 0:
                        text = self._want
                        set_caption(client, text)
                        self._shown, last_caption = text, now
                        continue
                    timeout = min(timeout, due)
                if timeout <= 0:
                    client.send("GetVersion", raw=True)  # a ping: notices OBS quitting or hanging
                    next_ping = now + period
                    continue
                self._wake.wait(timeout)
                self._wake.clear()
            except Exception as exc:  # noqa: BLE001 - OBS went away (or a source was deleted): rebuild
                _disconnect(client)
                client = None
                self._note("lost", logging.WARNING, f"lost OBS at {self.options.host}:{self.options.port} "
                           f"({exc or type(exc).__name__}); the feed keeps running, "
                           f"retrying every {period:g} s")
        if client is not None:
            try:
                if self.options.caption:
                    set_caption(client, "")  # no stale sentence left on screen
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            _disconnect(client)


def _disconnect(client) -> None:
    try:
        client.disconnect()
    except Exception:  # noqa: BLE001
        pass
