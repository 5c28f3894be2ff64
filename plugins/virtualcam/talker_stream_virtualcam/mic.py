"""The virtual microphone: the avatar's voice played into a PulseAudio/PipeWire null sink.

A webcam carries no sound, so meeting apps take the voice from a microphone: the monitor
source of a null sink ("Monitor of talker-mic"). A ``pacat`` child process plays into
that sink. pacat speaks to PulseAudio and to PipeWire's pulse server alike, and as a child
process behind a non-blocking pipe it can never stall the sink thread: what does not fit
into the pipe is held for a moment, then the oldest of it is dropped. When pacat dies
(the sound server restarted, the sink was removed), the outage is logged once and pacat
is started again every few seconds until it stays up.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time

import numpy as np

from talker_stream.plugin import EngineUnavailable

log = logging.getLogger(__name__)

RETRY_S = 2.0  # after pacat died, wait this long before starting it again
MAX_PENDING_S = 0.5  # audio held while the pipe is full; older audio is dropped beyond this
PACTL_TIMEOUT_S = 5.0  # pactl answers in milliseconds; longer means the server hangs
VIDEO_ONLY = 'set [sinks.virtualcam] audio_sink = "" for a webcam without sound'


def pactl(*args: str, timeout: float = PACTL_TIMEOUT_S) -> str:
    """Run pactl and return its output; failures become errors that say what to do."""
    try:
        r = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise EngineUnavailable("the virtual microphone needs pactl and pacat: install pulseaudio-utils "
                                f"(they work with PipeWire's pipewire-pulse too), or {VIDEO_ONLY}") from None
    except subprocess.TimeoutExpired:
        raise EngineUnavailable(f"pactl {args[0]} got no answer in {timeout:.0f} s: the sound server hangs; "
                                f"restart PulseAudio/PipeWire, or {VIDEO_ONLY}") from None
    if r.returncode != 0:
        raise EngineUnavailable(f"pactl {args[0]} failed ({r.stderr.strip() or r.returncode}): is PulseAudio or "
                                f"PipeWire (pipewire-pulse) running for this user? Otherwise {VIDEO_ONLY}")
    return r.stdout


def sink_exists(name: str, timeout: float = PACTL_TIMEOUT_S) -> bool:
    """Whether the sound server has a sink called *name* (ours from a crashed run counts)."""
    listing = pactl("list", "short", "sinks", timeout=timeout)
    return any(line.split("\t")[1:2] == [name] for line in listing.splitlines())


class PulseMic:
    """Plays float32 mono audio into the sound-server sink *sink_name* through pacat."""

    def __init__(self, sink_name: str, sample_rate: int, latency_ms: int, create: bool) -> None:
        self.sink_name = sink_name
        self.sample_rate = sample_rate
        self.latency_ms = latency_ms
        self.create = create
        self.module_id: int | None = None  # the null sink we loaded (and unload on close)
        self.proc: subprocess.Popen | None = None
        self._pending = bytearray()
        self._retry_at = 0.0
        self._down = False  # an outage has been logged and not yet ended
        self.restarts = 0
        self.dropped_samples = 0

    def open(self) -> None:
        self._ensure_sink()
        self._start()

    def _ensure_sink(self, timeout: float = PACTL_TIMEOUT_S) -> None:
        if sink_exists(self.sink_name, timeout):
            return
        if not self.create:
            raise EngineUnavailable(f"there is no sound sink named {self.sink_name!r} and create_audio_sink is off: "
                                    f"create it (pactl load-module module-null-sink sink_name={self.sink_name}), "
                                    f"turn create_audio_sink on, or {VIDEO_ONLY}")
        label = self.sink_name.replace("_", "-")
        out = pactl("load-module", "module-null-sink", f"sink_name={self.sink_name}", f"rate={self.sample_rate}",
                    f"sink_properties=device.description={label}", timeout=timeout)
        self.module_id = int(out.strip())
        log.info("created the null sink %s (module %d); meeting apps pick 'Monitor of %s' as microphone",
                 self.sink_name, self.module_id, label)

    def _start(self) -> None:
        cmd = ["pacat", "--playback", f"--device={self.sink_name}", "--format=float32le", f"--rate={self.sample_rate}",
               "--channels=1", f"--latency-msec={self.latency_ms}", "--client-name=talker-stream",
               "--stream-name=avatar voice"]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise EngineUnavailable(f"pacat not found: install pulseaudio-utils, or {VIDEO_ONLY}") from None
        os.set_blocking(self.proc.stdin.fileno(), False)  # the sink thread must never wait on the server
        self._pending.clear()

    def _reason(self) -> str:
        """Why pacat stopped, from its exit code and what it printed."""
        code = self.proc.poll() if self.proc else None
        lines: list[str] = []
        if self.proc and self.proc.stderr and code is not None:
            os.set_blocking(self.proc.stderr.fileno(), False)
            lines = (self.proc.stderr.read() or b"").decode(errors="replace").strip().splitlines()
        return f"pacat exited with code {code}" + (f": {lines[-1]}" if lines else "")

    def _lost(self, why: str) -> None:
        if not self._down:
            log.warning("virtual microphone %s: %s; the voice is not heard until it comes back "
                        "(retrying every %.0f s)", self.sink_name, why, RETRY_S)
        self._down = True
        self._stop_proc(wait=0.0)
        self._retry_at = time.monotonic() + RETRY_S

    def _revive(self) -> bool:
        """Start pacat again after an outage, at most once every RETRY_S."""
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._ensure_sink(timeout=1.0)  # the server may have restarted without our null sink
            self._start()
        except EngineUnavailable as exc:
            self._lost(str(exc))
            return False
        self.restarts += 1
        return True

    def write(self, audio: np.ndarray) -> None:
        """Queue *audio* (float32 mono) for pacat without ever blocking for long."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._lost(self._reason())
            if not self._revive():
                return
        self._pending += np.ascontiguousarray(audio, dtype="<f4").tobytes()
        excess = len(self._pending) - int(MAX_PENDING_S * self.sample_rate) * 4
        if excess > 0:  # pacat is not reading: drop the oldest whole samples, keep the newest
            excess = -(-excess // 4) * 4
            del self._pending[:excess]
            self.dropped_samples += excess // 4
        try:
            n = os.write(self.proc.stdin.fileno(), self._pending)
        except BlockingIOError:
            return
        except OSError as exc:  # BrokenPipeError: pacat is gone
            self._lost(f"{self._reason()} ({exc.strerror or exc})")
            return
        del self._pending[:n]
        if self._down and n:
            self._down = False
            log.warning("virtual microphone %s: playing again", self.sink_name)

    def _stop_proc(self, wait: float) -> None:
        """End pacat: EOF, then up to *wait* s for it to play what it has, then terminate."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if wait and self._pending and proc.poll() is None:
                os.write(proc.stdin.fileno(), self._pending)  # best effort: a stuck pacat must not hang close()
        except OSError:
            pass
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            if proc.stderr:
                proc.stderr.close()
        self._pending.clear()

    def close(self) -> None:
        """Let pacat play what it has, then remove the null sink if this sink created it."""
        self._stop_proc(wait=self.latency_ms / 1000 + 1.0)
        if self.module_id is not None:
            try:
                pactl("unload-module", str(self.module_id))
            except EngineUnavailable as exc:
                log.warning("could not remove the null sink %s (module %d): %s", self.sink_name, self.module_id, exc)
            self.module_id = None
