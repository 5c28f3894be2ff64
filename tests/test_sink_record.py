"""The built-in recording sink in a real live session (Piper voice, mesh animator, x264 + AAC).

The session also runs the preview sink, as `talker-stream live` does by default, so the
recording is made while another sink shares the frames.
"""
from __future__ import annotations

import re
import time
from datetime import datetime

from conftest import PORTRAIT, SIX_SECONDS

FRAME_S = 0.04  # one frame at the default 25 fps


def test_session_recording_is_complete_lip_synced_and_where_the_config_says(tmp_path, monkeypatch):
    from talker_stream.config import load_settings
    from talker_stream.face.lipsync import measure_file
    from talker_stream.live import LiveAvatar
    from talker_stream.outputs import open_sinks
    from talker_stream.outputs.encoder import probe

    home = tmp_path / "project"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[avatar]\nportrait = "{PORTRAIT}"\n\n[live]\nsinks = ["record", "preview"]\n\n'
        '[sinks.record]\npath = "recordings/session-{time}.mp4"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative path must resolve against the config's folder, not here
    settings = load_settings(home / "config.toml")
    sinks = open_sinks(settings)
    recordings = home / "recordings"

    avatar = LiveAvatar(settings, sinks)
    started_wall = time.time()
    started = time.monotonic()
    avatar.start()
    avatar.say(SIX_SECONDS)
    try:
        time.sleep(3.0)
        midway = sorted(p.name for p in recordings.iterdir())
        time.sleep(3.0)
    finally:
        stopped = time.monotonic()
        avatar.stop()
    session_s = stopped - started

    assert len(midway) == 1 and ".partial" in midway[0], f"while recording only a partial file exists: {midway}"
    files = sorted(p.name for p in recordings.iterdir())
    assert len(files) == 1 and not list(elsewhere.iterdir()), f"one finished file, no partial left: {files}"
    m = re.fullmatch(r"session-(\d{8}-\d{6})\.mp4", files[0])
    assert m, files[0]
    stamped = datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").timestamp()
    assert started_wall - 2 <= stamped <= started_wall + 2, "{time} is the session's start time"

    path = recordings / files[0]
    info = probe(path)
    v, a = info["video"], info["audio"]
    assert v["codec"] == "h264" and a["codec"] == "aac"
    v_len, a_len = v["end"] - v["first_pts"], a["end"] - a["first_pts"]
    assert abs(v_len - a_len) <= FRAME_S, f"video {v_len:.3f} s vs audio {a_len:.3f} s"
    assert abs(v_len - session_s) <= 0.5, f"recorded {v_len:.2f} s of a {session_s:.2f} s session"
    report = measure_file(path)
    assert abs(report.lag_frames) <= 1 and report.correlation > 0.4, (report.lag_frames, report.correlation)
    assert report.mouth.size >= 0.9 * session_s * 25

    _, jpeg = sinks[1].latest(timeout=0)
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8", "the preview sink ran alongside"
