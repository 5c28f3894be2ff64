"""Shared fixtures: the sample portrait, settings, and one real render reused by many tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "examples" / "portrait.png"
SIX_SECONDS = (
    "Hello, and welcome to the stream. Today we are going to build a talking avatar "
    "from a single photo, and it will speak every word you type."
)


@pytest.fixture(scope="session")
def portrait_path() -> Path:
    return PORTRAIT


@pytest.fixture(scope="session")
def portrait():
    from talker_stream.portrait import load_portrait

    return load_portrait(PORTRAIT)


@pytest.fixture(scope="session")
def animator():
    from talker_stream.face.animator import MeshAnimator

    a = MeshAnimator()
    yield a
    a.close()


@pytest.fixture(scope="session")
def avatar(animator, portrait):
    return animator.prepare(portrait)


def make_settings(**overrides):
    from talker_stream.config import load_settings

    return load_settings(None, {"avatar.portrait": str(PORTRAIT), **overrides})


@pytest.fixture(scope="session")
def piper_clip(tmp_path_factory):
    """A real render: Piper voice, MediaPipe mesh, H.264 + AAC through PyAV."""
    from talker_stream.render import render

    out = tmp_path_factory.mktemp("render") / "clip.mp4"
    result = render(make_settings(), out, text=[SIX_SECONDS])
    return out, result


@pytest.fixture(scope="session")
def piper_clip_report(piper_clip):
    from talker_stream.lipsync import measure_file

    return measure_file(piper_clip[0])


def wait_for(predicate, seconds: float, step: float = 0.02) -> bool:
    """Poll *predicate* until it holds (True) or *seconds* pass (False)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def lip_brightness(avatar, grab, n: int, pause: float = 0.12) -> list[float]:
    """Mean brightness of the lips' box over *n* frames from *grab()* (a grey image of the
    live avatar, e.g. a preview JPEG): it drops when the mouth opens."""
    import time

    lips = avatar.avatar.face.points[avatar.avatar.face.groups["lips"], :2]
    (x0, y0), (x1, y1) = lips.min(0).astype(int), lips.max(0).astype(int) + 1
    out = []
    for _ in range(n):
        out.append(float(grab()[y0:y1, x0:x1].mean()))
        time.sleep(pause)
    return out
