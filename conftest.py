"""Shared fixtures (the sample portrait, settings, one real render reused by many tests),
the rule that a missing service fails its tests, and the per-area summary at the end.

One file at the root serves the core's tests (tests/) and each plugin's (plugins/NAME/tests/):
the core's test helpers (tests/services.py, tests/adapter_harness.py) and each plugin's fakes
are importable from any of them (tests/test_flood.py drives all four chat plugins).

A missing service is a failure, not a skip: a test that needs OBS, nginx-rtmp, Chromium and
Playwright, ngircd, PulseAudio, PortAudio or a plugin calls ``need()`` / ``need_module()``
(or carries ``requires(...)``), which FAILS it when the thing is missing, so a half-failed
set-up cannot pass by skipping. Skips happen only on an explicit opt-out:
``TALKER_TEST_ALLOW_SKIP=1`` in the environment or ``pytest --allow-skip``. Any other skip
(a stray ``pytest.skip``, ``skipif`` or ``importorskip``) is turned into a failure too,
except the platform-inherent ones listed in ``PLATFORM_SKIPS``.
"""
from __future__ import annotations

import importlib
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

ROOT = Path(__file__).resolve().parent
for _folder in [ROOT / "tests", *sorted(ROOT.glob("plugins/*/tests"))]:
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
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
    from talker_stream.face.portrait import load_portrait

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
    from talker_stream.offline import render

    out = tmp_path_factory.mktemp("render") / "clip.mp4"
    result = render(make_settings(), out, text=[SIX_SECONDS])
    return out, result


@pytest.fixture(scope="session")
def piper_clip_report(piper_clip):
    from talker_stream.face.lipsync import measure_file

    return measure_file(piper_clip[0])


def engines_as_services(url: str, **llm: object) -> str:
    """config.toml tables that put the LLM, the ear and the voice behind *url* (``.../v1``),
    with extra ``[llm]`` keys (``max_tokens = 20``): what `talker-stream engines` prints."""
    from talker_stream.server.engines import client_config

    return client_config(url, **llm)


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


# -- a missing service is a failure ----------------------------------------------------------

ALLOW_SKIP_ENV = "TALKER_TEST_ALLOW_SKIP"

# Skips that say something about the platform, not about a half-done set-up: allowed even
# without the opt-out. Key: the skip's reason; value: where it is and why it is inherent.
PLATFORM_SKIPS = {
    "x86-64 instruction sets": "tests/test_crash.py: reads llama.cpp's x86-64 machine code with objdump; "
                               "there is nothing to read on another architecture",
}

_allow_skip = os.environ.get(ALLOW_SKIP_ENV, "") not in ("", "0")


def pytest_addoption(parser):
    parser.addoption("--allow-skip", action="store_true", default=False,
                     help=f"skip (instead of failing) tests whose service or plugin is missing; "
                          f"same as {ALLOW_SKIP_ENV}=1")


def pytest_configure(config):
    global _allow_skip
    _allow_skip = _allow_skip or config.getoption("--allow-skip", False)
    config.addinivalue_line("markers", "missing_service(why): set by requires(); the test fails (or skips "
                                       f"with {ALLOW_SKIP_ENV}=1) because a service or plugin it needs is missing")
    # a module whose plugin cannot be imported fails to collect; the other files still run
    config.option.continue_on_collection_errors = True


def skips_allowed() -> bool:
    return _allow_skip


def need(ok, why: str) -> None:
    """In a test, fixture or at module level: go on when *ok*; else FAIL with *why* (what is
    missing and how to install it), or skip under the explicit opt-out."""
    if ok:
        return
    if _allow_skip:
        pytest.skip(f"missing: {why}", allow_module_level=True)
    pytest.fail(f"missing: {why} (a missing service fails the suite; {ALLOW_SKIP_ENV}=1 or --allow-skip "
                "skips instead)", pytrace=False)


def need_module(name: str, how: str = ""):
    """``importorskip`` that fails: the module, or a failure naming it and *how* to install it."""
    try:
        return importlib.import_module(name)
    except (ImportError, OSError) as exc:  # OSError: a module whose native library is missing
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    need(False, f"{name} cannot be imported ({first})" + (f"; {how}" if how else ""))


def requires(ok, why: str):
    """A mark for a test or module that needs a service: nothing when *ok*, else the test
    fails at set-up with *why* (or skips under the opt-out)."""
    return pytest.mark.missing_service(None if ok else why)


def pytest_runtest_setup(item):
    for mark in item.iter_markers("missing_service"):
        if mark.args and mark.args[0] is not None:
            need(False, mark.args[0])


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _refuse_skip(report) -> None:
    """A skip that is neither opted into nor platform-inherent becomes a failure."""
    if _allow_skip or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if reason in PLATFORM_SKIPS:
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped without the opt-out, which counts as a failure: {reason}\n"
                       f"(install what is missing, or run with {ALLOW_SKIP_ENV}=1 / --allow-skip to skip)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _refuse_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _refuse_skip(outcome.get_result())


# -- one line per area at the end of the run --------------------------------------------------

AREAS = {
    "render": ["test_render.py", "test_animator.py", "test_timeline.py", "test_clock.py", "test_bad_input.py",
               "test_text.py", "test_config.py", "test_mouth.py"],
    "live": ["test_live.py", "test_live_cli.py", "test_server.py", "test_web_page.py", "test_webrtc.py",
             "test_cluster.py", "test_speech_output.py", "test_session_app.py"],
    "sinks": ["test_sink_record.py", "test_sink_rtmp.py", "test_sink_obs.py", "test_sink_virtualcam.py"],
    "brain": ["test_llm.py", "test_asr.py", "test_conversation.py", "test_crash.py", "test_chat.py",
              "test_knowledge.py", "test_models.py", "test_services.py", "test_turns.py"],
    "chat": ["test_questions.py", "test_audience.py", "test_flood.py", "test_twitch.py", "test_youtube.py",
             "test_bilibili.py", "test_discord.py"],
    "plugins": ["test_xtts.py", "test_wav2lip.py", "test_voice_choice.py", "test_plugin_sdk.py"],
}
_AREA_OF = {f: area for area, files in AREAS.items() for f in files}
_outcomes: dict[str, str] = {}  # nodeid -> passed / failed / skipped / xfailed / xpassed
_broken_files: set[str] = set()  # files that did not even collect
_skipped_files: set[str] = set()  # files skipped whole (only under the opt-out)


def _area(nodeid: str) -> str:
    return _AREA_OF.get(Path(nodeid.split("::")[0]).name, "other")


def pytest_runtest_logreport(report):
    if hasattr(report, "wasxfail"):
        state = "xfailed" if report.skipped else "xpassed"
    else:
        state = report.outcome
    if report.when == "call" or report.failed or (report.when == "setup" and report.skipped):
        if _outcomes.get(report.nodeid) != "failed":  # a teardown error after a pass is a failure
            _outcomes[report.nodeid] = state


def pytest_collectreport(report):
    if report.nodeid.endswith(".py"):
        if report.failed:
            _broken_files.add(report.nodeid)
        elif report.skipped:
            _skipped_files.add(report.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _outcomes and not _broken_files and not _skipped_files:
        return
    per: dict[str, Counter] = {area: Counter() for area in [*AREAS, "other"]}
    for nodeid, state in _outcomes.items():
        per[_area(nodeid)][state] += 1
    for nodeid in _broken_files:
        per[_area(nodeid)]["broken"] += 1
    for nodeid in _skipped_files:
        per[_area(nodeid)]["skipped files"] += 1
    terminalreporter.section("tests by area")
    for area, c in per.items():
        if area == "other" and not c:
            continue
        ran = c["passed"] + c["failed"] + c["xfailed"] + c["xpassed"]
        line = (f"{area}: {ran} ran, {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
                + (f", {c['xfailed']} xfailed" if c["xfailed"] else "") + (f", {c['xpassed']} xpassed" if c["xpassed"] else "")
                + (f", {c['broken']} file(s) did not collect" if c["broken"] else "")
                + (f", {c['skipped files']} file(s) skipped whole" if c["skipped files"] else ""))
        if area == "other":
            line += " (files missing from AREAS in conftest.py)"
        terminalreporter.write_line(line, red=bool(c["failed"] or c["broken"]))
    if _allow_skip:
        terminalreporter.write_line(f"{ALLOW_SKIP_ENV}=1 / --allow-skip: missing services were skipped, not failed")
