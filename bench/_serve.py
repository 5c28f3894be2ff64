"""Start a `talker-stream` server command for a benchmark, as a user would, and read its URL."""
from __future__ import annotations

import re
import subprocess
import sys


def start_cli(*args: str) -> tuple[subprocess.Popen, str]:
    """``python -m talker_stream.cli *args`` (serve, engines: they print their URL first);
    the process and that URL. Stop it with ``proc.send_signal(2)``."""
    proc = subprocess.Popen([sys.executable, "-m", "talker_stream.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    found = re.search(r"http://[\d.]+:\d+/(v1)?", line)
    if found is None:
        proc.kill()
        raise SystemExit(f"talker-stream {args[0] if args else ''} did not start: {line!r}")
    return proc, found.group(0)
