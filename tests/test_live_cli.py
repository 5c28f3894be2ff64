"""`talker-stream live` as a user runs it: a real process (`python -m talker_stream.cli live`)
with the real Piper voice, mesh face, preview and record sinks and the control server on
127.0.0.1. What it says (from --say, from lines on stdin, from the HTTP API with the token
it printed) is checked by transcribing the recording it made with Whisper tiny.en; the
status line, --duration and the two ways of getting the token are checked on its output."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import PORTRAIT

CONFIG = """
[avatar]
portrait = "{portrait}"

[live]
sinks = ["preview", "record"]

[sinks.record]
path = "session.mp4"

[server]
port = 0
"""

# what the final status line on stdout looks like: "25.0/25 fps  dropped 0  queue 0 (0.0 s)  latency 41 ms  preview:25fps/0d ..."
STATUS = re.compile(r"\d+\.\d/25 fps  dropped \d+  queue \d+ \(\d+\.\d s\)  latency (\d+ ms|-)  "
                    r"preview:\d+fps/\d+d record:\d+fps/\d+d")
PAGE = re.compile(r"control page: (http://127\.0\.0\.1:\d+/)(#token=(\S+))?$")


class Live:
    """`talker-stream live ...` in the background; its stdout and stderr collected line by line."""

    def __init__(self, tmp_path: Path, *args: str, env: dict | None = None, sinks: str | None = None) -> None:
        cfg = tmp_path / "config.toml"
        cfg.write_text(CONFIG.format(portrait=PORTRAIT))
        cmd = [sys.executable, "-m", "talker_stream.cli", "-c", str(cfg), "live", *args]
        if sinks:
            cmd += ["--sinks", sinks]
        self.out: list[str] = []
        self.err: list[str] = []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=tmp_path, env=env)
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, ls=lines: ls.extend(line.rstrip("\n") for line in s),
                             daemon=True).start()

    def wait_for(self, pattern: re.Pattern, seconds: float) -> re.Match:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for line in list(self.err):
                if m := pattern.search(line):
                    return m
            assert self.proc.poll() is None, f"live exited with {self.proc.returncode}:\n" + "\n".join(self.err[-30:])
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern.pattern!r} in {seconds} s:\n" + "\n".join(self.err[-30:]))

    def finish(self, seconds: float) -> int:
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("live did not stop by itself:\n" + "\n".join(self.err[-30:])) from None
        finally:
            time.sleep(0.2)  # the reader threads take the last lines


def post(url: str, token: str, body: dict) -> int:
    req = urllib.request.Request(url + "api/say", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def env_without_token(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TALKER_TOKEN"}
    return env | {"GLOG_minloglevel": "2"} | extra


def transcript(path: Path) -> str:
    """What Whisper tiny.en hears in the recording's sound track."""
    from talker_stream.brain.asr import WhisperASR
    from talker_stream.speech.audio import read_audio

    pcm = np.concatenate([c.pcm for c in read_audio(path, 16000)])
    return WhisperASR(threads=2).transcribe(pcm).lower()


@pytest.mark.slow
def test_live_says_the_say_option_stdin_lines_and_api_lines_then_stops_at_duration(tmp_path):
    duration = 16.0
    live = Live(tmp_path, "--say", "The weather is sunny today.", "--duration", str(duration), env=env_without_token())
    page = live.wait_for(PAGE, 180)
    url, token = page.group(1), page.group(3)
    assert token and len(token) >= 20, "without TALKER_TOKEN a random token is printed as the #token= link"
    live.proc.stdin.write("My favourite colour is green.\n\n")
    live.proc.stdin.close()  # the end of stdin does not end the session: --duration does
    assert post(url, "not-" + token, {"text": "This must never be said."}) == 401
    assert post(url, token, {"text": "Thank you for watching."}) == 202, "the printed token is the one the API takes"
    started = time.monotonic()
    rc = live.finish(duration + 90)
    assert rc == 0, "\n".join(live.err[-30:])
    assert time.monotonic() - started < duration + 30, "--duration ends the session"

    out = [line for line in live.out if line.strip()]
    assert out and STATUS.match(out[-1].strip()), ("the last line on stdout is the status line", out)
    running = [line for line in live.err if line.startswith("status: ") and STATUS.search(line)]
    assert running, ("while running (stderr not a terminal) the status line is printed every 10 s", live.err)
    assert not any(line.startswith("WARNING: ") and STATUS.search(line) for line in live.err), "a status, not a warning"
    assert not any("TensorFlow Lite" in line or "absl::InitializeLog" in line for line in live.err), \
        "no C++ start-up chatter on a newcomer's terminal"
    others = live.out + [line for line in live.err if not PAGE.search(line)]
    assert not any(token in line for line in others), "the token is printed once, in the link"

    from talker_stream.outputs.encoder import probe

    info = probe(tmp_path / "session.mp4")
    assert abs(info["video"]["end"] - duration) < 2.0, ("the recording lasts --duration seconds", info["video"]["end"])
    heard = transcript(tmp_path / "session.mp4")
    assert "weather" in heard and "sunny" in heard, ("--say was said", heard)
    assert "green" in heard, ("the line on stdin was said", heard)
    assert "watching" in heard, ("the API line with the printed token was said", heard)
    assert "never" not in heard, ("the line sent with a wrong token was not said", heard)
    assert heard.index("sunny") < heard.index("green"), ("--say lines are queued before stdin is read", heard)


@pytest.mark.slow
def test_live_takes_the_token_from_talker_token_and_does_not_print_it(tmp_path):
    secret = "env-token-for-the-live-test-Zq81"  # pragma: allowlist secret - a throwaway for this test server
    live = Live(tmp_path, "--duration", "6", "--no-stdin", env=env_without_token(TALKER_TOKEN=secret), sinks="preview")
    page = live.wait_for(PAGE, 180)
    assert page.group(2) is None, ("with TALKER_TOKEN set the link carries no token", page.group(0))
    url = page.group(1)
    assert post(url, secret, {"text": ""}) == 400, "the token from the environment is accepted (then the empty text refused)"
    assert post(url, "a-random-guess", {"text": "Hello."}) == 401
    rc = live.finish(90)
    assert rc == 0, "\n".join(live.err[-30:])
    assert not any(secret in line for line in live.out + live.err), "the token never appears in the output"
    assert re.match(r"^\s*\d+\.\d/25 fps  dropped \d+", [line for line in live.out if line.strip()][-1])
