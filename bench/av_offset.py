"""Lips and voice at the browser after a long session: the A/V offset after N minutes.

Starts `talker-stream serve` as a user does, opens one session in headless Chromium (Debian's,
driven by Playwright; the browser lines audio and video up from the RTCP sender reports,
as any visitor's does), asks a question every 15 s for --minutes, and records the last
minute of what the page received (MediaRecorder). The project's lip-sync measure
(talker_stream.face.lipsync.measure_file on a 25 fps grid) gives the lag between the mouth's
opening and the sound's loudness in frames; one frame is 40 ms. Also run at the start
(--minutes 1) for comparison.

Usage:
  .venv/bin/python bench/av_offset.py --minutes 10
"""
from __future__ import annotations

import argparse
import base64
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _load import OtherLoad
from _serve import start_cli

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["What is your favourite colour?", "Can you tell me a joke?", "Why is the sky blue?",
             "What games do you play?", "Where do you live?", "Do you like music?", "How are you today?"]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


def main() -> int:
    from playwright.sync_api import sync_playwright

    from talker_stream.face.lipsync import measure_file

    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-av-"))
    cfg = folder / "config.toml"
    cfg.write_text(f'[avatar]\nportrait = "{ROOT / "examples/portrait.png"}"\n[llm]\nmax_tokens = 60\n'
                   f'[serve]\nidle_timeout = {a.minutes * 60 + 120}\n')
    proc, url = start_cli("-c", str(cfg), "serve", "--port", "0")
    pw = sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(str(folder / "profile"), executable_path="/usr/bin/chromium",
                                               headless=True, args=FLAGS)
    load = OtherLoad().start()
    try:
        page = ctx.new_page()
        page.goto(url)
        assert page.evaluate("talker.start(false)") == 201
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        recording, asked = False, 0
        while time.monotonic() < end:
            if not recording and end - time.monotonic() <= 60:
                page.evaluate("talker.record()")
                recording = True
            page.evaluate(f"talker.ask({QUESTIONS[asked % len(QUESTIONS)]!r})")
            asked += 1
            time.sleep(min(15.0, max(0.0, end - time.monotonic())))
        path = folder / "last-minute.webm"
        path.write_bytes(base64.b64decode(page.evaluate("talker.recorded()")))
        report = measure_file(path, fps=25.0)
    finally:
        ctx.close()
        pw.stop()
        proc.send_signal(2)
        proc.wait(30)
        other = load.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"after {a.minutes:g} min ({asked} questions): lip-sync lag {report.lag_frames} frames "
          f"({report.lag_frames * 40} ms; > 0: mouth after sound), correlation {report.correlation:.2f}, "
          f"measured on the last minute received by Chromium")
    print(other)
    return 0


if __name__ == "__main__":
    sys.exit(main())
