"""XTTS-v2 voice cloning (plugins/xtts) on a small checkpoint the tests write themselves.

What is real: coqui-tts's Xtts model class, its loader (load_checkpoint on a folder in the
published layout), its streaming GPT and HiFi-GAN decoder, our consent rule, the voice
cache, and the render job speaking through the engine. What is not: the weights. XTTS-v2's
are a 1.8 GB download no package ships, so tests/xtts_checkpoint.py writes a one-layer
model with random weights; the voice is noise, and nothing here judges how it sounds.
"""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from conftest import need, need_module  # noqa: E402

need_module("talker_stream_xtts", "pip install -e plugins/xtts")
need((why := __import__("talker_stream_xtts").XttsTTS.check()) is None, str(why))

from talker_stream.config import load_settings  # noqa: E402
from talker_stream.errors import ConfigError, EngineUnavailable, InputError  # noqa: E402
from talker_stream_xtts import XttsOptions, XttsTTS  # noqa: E402

from conftest import make_settings  # noqa: E402
from xtts_checkpoint import write_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("xtts") / "XTTS-tiny")


@pytest.fixture(scope="module")
def reference(piper_clip):
    return piper_clip[0]  # six seconds of Piper's voice, in an mp4: any format PyAV reads works


def options(model_dir, reference, tmp_path, **kw) -> XttsOptions:
    base = dict(model_dir=str(model_dir), reference=str(reference), consent=str(reference),
                cache_dir=str(tmp_path / "voices"), chunk_tokens=4)
    return XttsOptions(**(base | kw))


@pytest.fixture(scope="module")
def engine(model_dir, reference, tmp_path_factory):
    return XttsTTS(options(model_dir, reference, tmp_path_factory.mktemp("cache")), threads=2)


def test_cloning_needs_consent_for_that_very_clip(model_dir, reference, tmp_path):
    with pytest.raises(ConfigError, match="consent"):
        XttsTTS(options(model_dir, reference, tmp_path, consent=""))
    other = tmp_path / "someone-else.wav"
    other.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"consent = .*clip\.mp4"):
        XttsTTS(options(model_dir, reference, tmp_path, consent=str(other)))
    assert not (tmp_path / "voices").exists()  # nothing was computed from the voice


def test_streams_24khz_audio_in_several_chunks(engine):
    import torch

    torch.manual_seed(1)
    chunks = list(engine.stream("Hello there, how are you today?"))
    assert engine.sample_rate == 24000
    assert len(chunks) >= 2  # chunk_tokens=4: audio arrives before the sentence is finished
    for c in chunks:
        assert c.sample_rate == 24000 and c.pcm.dtype == np.float32 and c.pcm.ndim == 1
        assert np.isfinite(c.pcm).all() and np.abs(c.pcm).max() <= 1.0
    assert sum(len(c.pcm) for c in chunks) > 1024
    assert list(engine.stream("   ")) == []


def test_the_voice_is_computed_once_and_kept_private(model_dir, reference, engine, tmp_path):
    opts = options(model_dir, reference, tmp_path)
    first = XttsTTS(opts)
    second = XttsTTS(opts)
    assert not first.voice_from_cache and second.voice_from_cache
    assert np.allclose(first.voice.speaker_embedding.numpy(), second.voice.speaker_embedding.numpy())
    (cached,) = (tmp_path / "voices").iterdir()
    assert stat.S_IMODE(os.stat(cached).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "voices").st_mode) == 0o700


def test_missing_or_wrong_weights_say_what_to_do(model_dir, reference, tmp_path):
    with pytest.raises(EngineUnavailable, match="lacks config.json, model.pth, vocab.json.*XTTS-v2"):
        XttsTTS(options(tmp_path, reference, tmp_path))
    import shutil

    import torch

    wrong = tmp_path / "wrong"
    shutil.copytree(model_dir, wrong)
    torch.save({"model": {"gpt.nothing": torch.zeros(1)}}, wrong / "model.pth")
    with pytest.raises(EngineUnavailable, match="not an XTTS checkpoint"):
        XttsTTS(options(wrong, reference, tmp_path))


def test_a_short_or_broken_reference_is_refused(model_dir, tmp_path):
    short = tmp_path / "short.wav"
    import soundfile

    soundfile.write(short, (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    with pytest.raises(InputError, match="at least 3 s"):
        XttsTTS(options(model_dir, short, tmp_path))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    with pytest.raises(InputError, match="cannot read audio"):
        XttsTTS(options(model_dir, broken, tmp_path))


def test_config_checks_the_xtts_table(tmp_path):
    cfg = tmp_path / "talker.toml"
    cfg.write_text('[tts]\nengine = "xtts"\n\n[tts.xtts]\nlanguage = "en"\ntemprature = 0.5\n')
    with pytest.raises(ConfigError, match=r"talker.toml:6: tts.xtts.temprature: unknown setting \(did you mean temperature"):
        load_settings(cfg)
    cfg.write_text('[tts]\nengine = "xtts"\n\n[tts.xtts]\nlanguage = "klingon"\n')
    with pytest.raises(ConfigError, match=r":5: tts.xtts.language: must be one of"):
        load_settings(cfg)
    cfg.write_text('[tts]\nengine = "xtts"\n\n[tts.xtts]\nspeed = 1.5\n')
    assert load_settings(cfg).tts.options("xtts").speed == 1.5


def test_render_speaks_with_the_cloned_voice(model_dir, reference, tmp_path):
    import av
    import torch

    from talker_stream.offline import render

    torch.manual_seed(2)
    settings = make_settings(**{
        "tts.engine": "xtts", "tts.xtts.model_dir": str(model_dir), "tts.xtts.reference": str(reference),
        "tts.xtts.consent": str(reference), "tts.xtts.cache_dir": str(tmp_path / "voices"),
    })
    result = render(settings, tmp_path / "cloned.mp4", text=["Hi there."])
    assert result.frames > 0
    with av.open(str(tmp_path / "cloned.mp4")) as c:
        assert c.streams.video[0].width == 352 and len(c.streams.audio) == 1
