"""The virtualcam sink: the avatar as a webcam that Zoom, Meet, Teams or OBS can pick.

Video goes through pyvirtualcam: v4l2loopback (/dev/videoN) on Linux, the OBS Virtual
Camera on Windows and macOS. The voice goes to a virtual microphone (see mic.py), since
a webcam has no sound. Every frame slot is sent, the held picture included when the frame
loop dropped one, so the camera never stalls and apps never see it freeze or time out.
"""
from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talker_stream.plugin import opt
from talker_stream.plugin import ConfigError, EngineUnavailable

from .mic import PulseMic

log = logging.getLogger(__name__)

LINUX_FIX = ("load the v4l2loopback kernel module (Debian/Ubuntu package v4l2loopback-dkms): "
             "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=talker")
OBS_FIX = ("install OBS Studio 26 or newer and start its virtual camera once (Start Virtual Camera, "
           "then stop it); on macOS 13+ also allow the OBS camera extension in System Settings")


@dataclass
class Options:
    device: str = ""  # /dev/videoN on Linux, "OBS Virtual Camera" elsewhere; empty: the first free one
    backend: str = ""  # pyvirtualcam backend: v4l2loopback | obs | unitycapture; empty: try each
    audio_sink: str = "talker_mic"  # PulseAudio/PipeWire sink that gets the voice; empty: no sound
    create_audio_sink: bool = True  # create it as a null sink when missing (and remove it on close)
    audio_latency_ms: int = opt(100, 10, 2000)  # sound-server buffer: less is closer to the lips, more rides out stalls


def v4l2loopback_devices() -> list[tuple[str, str]]:
    """(/dev/videoN, card label) of each v4l2loopback device; real cameras are not virtual."""
    out = []
    for node in sorted(Path("/sys/class/video4linux").glob("video*")):
        if "/virtual/" in str(node.resolve()):
            name = node / "name"
            out.append((f"/dev/{node.name}", name.read_text().strip() if name.is_file() else ""))
    return out


def _fix() -> str:
    return LINUX_FIX if sys.platform.startswith("linux") else OBS_FIX


class VirtualCamSink:
    """Frames to a virtual webcam, audio to a virtual microphone."""

    name = "virtualcam"
    Options = Options

    def __init__(self, options: Options | None = None, base_dir: Path | None = None) -> None:
        self.options = options or Options()
        self.camera = None
        self.mic: PulseMic | None = None
        self._last: np.ndarray | None = None

    @classmethod
    def check(cls) -> str | None:
        """pyvirtualcam must import; on Linux a v4l2loopback device (or another backend) must exist."""
        try:
            import pyvirtualcam
        except ImportError as exc:
            return f"pyvirtualcam cannot be imported ({exc}); pip install pyvirtualcam"
        if sys.platform.startswith("linux"):
            devices = v4l2loopback_devices()
            others = set(pyvirtualcam.camera.BACKENDS) - {"v4l2loopback"}
            if devices:
                log.info("v4l2loopback devices: %s", ", ".join(f"{d} ({label})" for d, label in devices))
            elif not others:
                return f"no v4l2loopback device (/dev/videoN) on this machine; {LINUX_FIX}"
        return None

    def open(self, size: tuple[int, int], clock) -> None:
        import pyvirtualcam
        from pyvirtualcam import PixelFormat

        o = self.options
        if o.audio_sink and not re.fullmatch(r"[A-Za-z0-9_.\-]+", o.audio_sink):
            raise ConfigError(f"sinks.virtualcam.audio_sink: {o.audio_sink!r} is not a sink name "
                              "(letters, digits, '_', '-', '.')")
        if o.backend and o.backend not in pyvirtualcam.camera.BACKENDS:
            raise EngineUnavailable(f"sinks.virtualcam.backend: no pyvirtualcam backend named {o.backend!r} here; "
                                    f"available: {', '.join(pyvirtualcam.camera.BACKENDS) or 'none'}")
        w, h = size
        try:
            self.camera = pyvirtualcam.Camera(w, h, float(clock.fps), fmt=PixelFormat.RGB,
                                              device=o.device or None, backend=o.backend or None)
        except Exception as exc:  # noqa: BLE001 - each backend raises its own type
            where = f" {o.device}" if o.device else ""
            raise EngineUnavailable(f"no virtual camera{where} could be opened ({' / '.join(str(exc).splitlines())}); "
                                    f"{_fix()}") from None
        log.info("virtual camera %s (%s backend) %dx%d at %.2f fps", self.camera.device, self.camera.backend,
                 w, h, float(clock.fps))
        if o.audio_sink:
            if not sys.platform.startswith("linux") and not _has_pactl():
                log.warning("virtual microphone: no PulseAudio here; on Windows/macOS route the voice with a "
                            "virtual audio cable (see plugins/virtualcam/README.md); video only for now")
                return
            self.mic = PulseMic(o.audio_sink, clock.sample_rate, o.audio_latency_ms, o.create_audio_sink)
            try:
                self.mic.open()
            except Exception:
                self.mic = None
                self.camera.close()
                raise

    def write(self, frame) -> None:
        if self.mic is not None:
            self.mic.write(frame.audio)  # never blocks: see mic.py
        image = frame.image if frame.image is not None else self._last  # dropped picture: hold the last one
        if image is None:
            return
        self.camera.send(image)
        self._last = image
        # No camera.sleep_until_next_frame(): the core's frame loop already ticks on the audio
        # clock and this thread gets one slot per tick. Sleeping here as well would pace twice,
        # so the queue would grow, pictures would be dropped and the voice would lag the lips.

    def close(self) -> None:
        try:
            if self.mic is not None:
                self.mic.close()
        finally:
            self.mic = None
            if self.camera is not None:
                self.camera.close()
                self.camera = None


def _has_pactl() -> bool:
    import shutil

    return shutil.which("pactl") is not None
