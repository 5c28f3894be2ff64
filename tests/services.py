"""Real local services that tests (and benchmarks) start and stop themselves, by PID."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
HAVE_NGINX = Path(NGINX).exists() and RTMP_MODULE.exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtmpServer:
    """nginx in the foreground (one process, ended by its PID), recording into root/<rec>."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"rtmp://127.0.0.1:{self.port}/live"

    def start(self, rec: str) -> Path:
        folder = self.root / rec
        folder.mkdir()
        conf = self.root / "nginx.conf"
        conf.write_text(
            f"load_module {RTMP_MODULE};\n"
            f"daemon off; master_process off; pid {self.root}/nginx.pid; error_log {self.root}/error.log info;\n"
            "events { worker_connections 64; }\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{self.port}; application live {{ live on; record all;\n"
            f"  record_path {folder}; record_unique off; }} }} }}\n"
        )
        with open(self.root / "stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen([NGINX, "-p", str(self.root), "-e", str(self.root / "error.log"),
                                          "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "stderr.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return folder
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"nginx did not open port {self.port} in 10 s")

    def stop(self) -> None:
        end(self.proc)
        self.proc = None


def end(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, seconds: float = 5.0) -> None:
    """Stop a process started by a test: *sig* (SIGINT lets a talker-stream command shut down
    as Ctrl+C does), then SIGKILL after *seconds*."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class PulseAudio:
    """A private PulseAudio daemon on a unix socket in *root* (shared/RECIPES.md), ended by
    its PID. ``env`` is what a client (pactl, paplay, a child process) needs to reach it:
    PULSE_SERVER, and a private HOME/XDG_RUNTIME_DIR so no user session is touched."""

    def __init__(self, root: Path) -> None:
        import os

        self.root = root
        self.sock = root / "pulse.sock"
        self.server = f"unix:{self.sock}"
        self.env = {**os.environ, "HOME": str(root), "XDG_RUNTIME_DIR": str(root), "XDG_CONFIG_HOME": str(root),
                    "PULSE_SERVER": self.server}
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def missing() -> str | None:
        """What is not installed, or None."""
        if not shutil.which("pulseaudio"):
            return "pulseaudio is not installed (Debian: apt-get install pulseaudio pulseaudio-utils)"
        for tool in ("pactl", "pacat", "parec", "paplay"):
            if not shutil.which(tool):
                return f"{tool} is not installed (Debian: apt-get install pulseaudio-utils)"
        return None

    def start(self, *modules: str) -> "PulseAudio":
        """Start it with ``module-always-sink`` and *modules* (e.g. ``"module-null-sink sink_name=mic"``);
        return once ``pactl info`` answers (an AssertionError with its log after 10 s)."""
        log_path = self.root / "pulse.log"
        loads = [f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.sock}",
                 *(f"--load={m}" for m in modules), "--load=module-always-sink"]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([shutil.which("pulseaudio") or "pulseaudio", "--daemonize=no",
                                          "--exit-idle-time=-1", "-n", *loads],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, f"pulseaudio exited with {self.proc.returncode}: {log_path.read_text()[-2000:]}"
            if self.sock.exists() and subprocess.run(["pactl", "info"], capture_output=True, timeout=5,
                                                     env=self.env).returncode == 0:
                return self
            assert time.monotonic() < deadline, f"pulseaudio did not answer in 10 s: {log_path.read_text()[-2000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        end(self.proc)
        self.proc = None
