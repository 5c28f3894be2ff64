"""Which voice speaks: the voice-cloning consent gate and the TTS fallback, through the CLI.

- ``[tts] engine = "xtts"`` without the speaker's consent stops `render` and `live` with the
  consent message and a non-zero exit, and never falls back to another voice. The rule is
  checked before torch is imported, so it holds on a machine without coqui-tts too (the
  first test proves no torch is loaded on the way to the refusal).
- A selected voice that cannot run here (espeak-ng not installed: the real binary is left
  off PATH) falls back to ``[tts] fallback`` (Piper) with a warning, and the output speaks.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import PORTRAIT, need_module

need_module("talker_stream_xtts", "pip install -e plugins/xtts")  # the plugin itself needs no torch

CONSENT = "needs its speaker's consent"


def write_config(tmp_path: Path, tts: str) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[avatar]\nportrait = "{PORTRAIT}"\n\n[live]\nsinks = ["record"]\n\n'
                   f'[sinks.record]\npath = "session.mp4"\n\n[server]\nport = 0\n\n{textwrap.dedent(tts)}')
    return cfg


def cli(tmp_path: Path, cfg: Path, *args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "talker_stream.cli", "-c", str(cfg), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path, env={**(env or os.environ), "GLOG_minloglevel": "2"},
                          stdin=subprocess.DEVNULL)


def no_consent(tmp_path: Path, consent: str = "") -> Path:
    clip = tmp_path / "someone.wav"
    clip.write_bytes(b"RIFF")  # never read: the rule refuses before any file is opened
    (tmp_path / "XTTS-v2").mkdir()
    return write_config(tmp_path, f"""
        [tts]
        engine = "xtts"
        fallback = "piper"

        [tts.xtts]
        model_dir = "XTTS-v2"
        reference = "someone.wav"
        consent = "{consent}"
        """)


def test_the_consent_rule_refuses_before_torch_is_imported(tmp_path):
    """In a fresh interpreter: open_tts on xtts without consent (and with the consent of a
    different clip) raises ConfigError naming the rule, and torch/coqui-tts were never
    imported, so the refusal cannot depend on them being installed."""
    script = textwrap.dedent(f"""
        import sys
        from talker_stream.config import load_settings
        from talker_stream.errors import ConfigError
        from talker_stream.speech.tts import open_tts
        for consent in ("", "{tmp_path / 'another-person.wav'}"):
            settings = load_settings(None, {{"tts.engine": "xtts", "tts.xtts.model_dir": "{tmp_path}",
                                            "tts.xtts.reference": "{tmp_path / 'someone.wav'}",
                                            "tts.xtts.consent": consent}})
            for live in (False, True):
                try:
                    open_tts(settings, live=live)
                except ConfigError as exc:
                    print("refused:", exc)
                else:
                    print("NOT REFUSED")
        print("torch imported:", "torch" in sys.modules, "TTS imported:", "TTS" in sys.modules)
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len([line for line in lines if line.startswith("refused:") and CONSENT in line]) == 4, proc.stdout
    assert "NOT REFUSED" not in proc.stdout
    assert lines[-1] == "torch imported: False TTS imported: False", proc.stdout
    assert "fallback" not in proc.stderr, proc.stderr


def test_render_without_consent_stops_with_the_consent_message(tmp_path):
    cfg = no_consent(tmp_path)
    proc = cli(tmp_path, cfg, "render", "-t", "Hello there.", "-o", "out.mp4", "-q")
    assert proc.returncode == 2, (proc.stdout, proc.stderr[-2000:])
    assert CONSENT in proc.stderr and "consent = 'someone.wav'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "piper" not in proc.stderr.lower() and "fallback" not in proc.stderr.lower(), "no other voice was used"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["XTTS-v2", "config.toml", "someone.wav"], "nothing was written"


def test_render_with_the_consent_of_another_clip_stops_too(tmp_path):
    cfg = no_consent(tmp_path, consent="someone-else.wav")
    proc = cli(tmp_path, cfg, "render", "-t", "Hello there.", "-o", "out.mp4", "-q")
    assert proc.returncode == 2 and CONSENT in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out.mp4").exists()


def test_live_without_consent_stops_with_the_consent_message(tmp_path):
    cfg = no_consent(tmp_path)
    proc = cli(tmp_path, cfg, "live", "--duration", "3", "--no-stdin", "--say", "Hello there.")
    assert proc.returncode == 2, (proc.stdout, proc.stderr[-2000:])
    assert CONSENT in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "speaking with piper" not in proc.stderr and "fallback" not in proc.stderr.lower(), proc.stderr
    assert not (tmp_path / "session.mp4").exists(), "the avatar never started"


def path_without_espeak() -> dict:
    """The environment with only the virtualenv's bin on PATH: espeak-ng is really absent for
    the child (its check() looks it up on PATH), nothing is faked."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent)
    return env


def speech_seconds(path: Path) -> float:
    from talker_stream.speech.audio import read_audio

    pcm = np.concatenate([c.pcm for c in read_audio(path, 16000)])
    blocks = np.abs(pcm[: len(pcm) // 1600 * 1600]).reshape(-1, 1600).max(axis=1)
    return float((blocks > 0.05).sum() / 10)


@pytest.mark.slow
def test_render_falls_back_to_piper_with_a_warning_when_the_voice_cannot_run(tmp_path):
    cfg = write_config(tmp_path, '[tts]\nengine = "espeak"\nfallback = "piper"\n')
    env = path_without_espeak()
    proc = cli(tmp_path, cfg, "render", "-t", "The fallback voice reads this sentence aloud.", "-o", "out.mp4", "-q",
               env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TTS engine espeak unavailable: espeak-ng is not installed" in proc.stderr, proc.stderr
    assert "using fallback TTS engine piper" in proc.stderr, proc.stderr
    assert speech_seconds(tmp_path / "out.mp4") > 1.5, "the fallback voice spoke"
    # and with no fallback configured it is an error, not silence
    cfg = write_config(tmp_path, '[tts]\nengine = "espeak"\nfallback = ""\n')
    proc = cli(tmp_path, cfg, "render", "-t", "Nobody can say this.", "-o", "none.mp4", "-q", env=env)
    assert proc.returncode == 2 and "no TTS engine can run: espeak: espeak-ng is not installed" in proc.stderr, proc.stderr
    assert not (tmp_path / "none.mp4").exists()


@pytest.mark.slow
def test_live_falls_back_to_piper_with_a_warning_when_the_voice_cannot_run(tmp_path):
    cfg = write_config(tmp_path, '[tts]\nengine = "espeak"\nfallback = "piper"\n')
    proc = cli(tmp_path, cfg, "live", "--duration", "6", "--no-stdin", "--say", "The fallback voice is speaking live.",
               env=path_without_espeak())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "espeak-ng is not installed" in proc.stderr and "piper" in proc.stderr, proc.stderr
    assert speech_seconds(tmp_path / "session.mp4") > 1.5, "the fallback voice spoke"
