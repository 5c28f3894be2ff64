"""Real local services that tests (and benchmarks) start and stop themselves, by PID."""
from __future__ import annotations

import shutil
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
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
