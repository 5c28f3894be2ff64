"""The network half of the RTMP sink, in a child process: FLV in on stdin, RTMP out.

PyAV opens an output URL (DNS, TCP, the RTMP handshake, the FLV header) while holding
Python's GIL and with no time limit. Inside the avatar's process, every (re)connection
would freeze all threads, the frame loop included, for the handshake's round trips, and
an ingest that accepts but never answers froze the whole process for good (seen here).
So the sink encodes in its own process and pipes FLV to this child, which copies it
packet by packet to the ingest. The parent never waits on the network: it sees the child
exit when the ingest drops, and kills it when it stops draining the pipe.

The target URL holds the stream key, so it travels in the environment (readable only by
this user), never on the command line, which any user can read with ``ps``. The child
says "connected" on stdout once its first packet went out, and its error on stderr;
the parent redacts that before logging it.
"""
from __future__ import annotations

import array
import fcntl
import os
import select
import subprocess
import sys
import termios
import time

ENV = "TALKER_RTMP_TARGET"
START_S = 10.0  # the child may take this long to start Python and PyAV before it reads anything
PIPE_BYTES = 1 << 20  # room for the child's start-up (~0.5 s) at any sane bitrate
# Without limits, probing the piped FLV would hold the stream back by up to 5 s.
PROBE = {"probesize": "4096", "analyzeduration": "0"}


class RelayError(Exception):
    """The child is gone or stuck; the sink reconnects."""


class Relay:
    """Parent side: the child, its stdin as PyAV's output file, and whether it keeps up."""

    def __init__(self, target: str, stall_s: float) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, ENV: target})
        self.fd = self.proc.stdin.fileno()
        os.set_blocking(self.fd, False)
        os.set_blocking(self.proc.stdout.fileno(), False)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (OSError, AttributeError):
            pass  # the default 64 KiB still works; start-up may then block the sink briefly
        self.stall_s = stall_s
        self.connected = False
        self.written = self.drained = 0
        self.progress_at = time.monotonic() + START_S  # the stall clock starts once it could have read

    def write(self, data: bytes) -> None:
        """Called by PyAV with each piece of FLV: all of it goes into the pipe, or this raises."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                n = 0
            except OSError as exc:  # EPIPE: the child has gone
                raise RelayError(self.reason(exc)) from None
            view = view[n:]
            self.written += n
            if not n:
                self.check()
                select.select([], [self.fd], [], 0.1)

    def check(self) -> None:
        """Raise RelayError when the child has exited or has stopped draining the pipe."""
        if not self.connected:
            try:
                self.connected = b"connected" in os.read(self.proc.stdout.fileno(), 64)
            except BlockingIOError:
                pass
        if self.proc.poll() is not None:
            raise RelayError(self.reason())
        drained = self.written - _unread(self.fd)
        now = time.monotonic()
        if drained > self.drained or drained == self.written:
            self.drained, self.progress_at = drained, now
        elif now - self.progress_at > self.stall_s:
            self.kill()
            raise RelayError(f"no answer from the ingest for {self.stall_s:g} s")

    def reason(self, exc: Exception | None = None) -> str:
        """The child's last error line (or the exit status)."""
        self.kill()
        lines = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else str(exc or f"relay exited with status {self.proc.returncode}")

    def close(self, timeout: float) -> None:
        """End of stream: let the child send what it holds and exit; kill it if it does not."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _unread(fd: int) -> int:
    """Bytes in the pipe not yet read by the child (Linux; elsewhere 0: no stall detection)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return 0
    return buf[0]


def _die_with_parent() -> None:
    """A child stuck on a silent ingest must not outlive a parent that was killed (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    """Child side: copy FLV packets from stdin to the URL in $TALKER_RTMP_TARGET."""
    _die_with_parent()
    import av

    target = os.environ.pop(ENV, "")
    if not target:
        print(f"{ENV} is not set", file=sys.stderr)
        return 2
    try:
        stdin = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # short reads: no waiting for 32 KiB
        with av.open(stdin, mode="r", format="flv", options=PROBE) as src, \
                av.open(target, mode="w", format="flv") as dst:
            out = {s.index: dst.add_stream_from_template(s) for s in src.streams}
            said = False
            for packet in src.demux():
                if packet.dts is None or packet.stream.index not in out:
                    continue  # the demuxer's end-of-stream marker
                packet.stream = out[packet.stream.index]
                dst.mux(packet)  # the first one connects and publishes
                if not said:
                    print("connected", flush=True)
                    said = True
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
