"""Engines as services: the avatar's LLM, voice and ear behind OpenAI-compatible HTTP APIs.

The server is real: `talker-stream engines` in its own process, serving this project's own
engines (SmolLM2 through llama.cpp, Piper, Whisper tiny.en) on 127.0.0.1. The clients are
the product's `openai` engines, configured as a user would in config.toml. Nothing is faked.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PORTRAIT, engines_as_services, wait_for
from talker_stream.config import load_settings
from talker_stream.errors import EngineUnavailable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    folder = tmp_path_factory.mktemp("engines")
    proc = subprocess.Popen([sys.executable, "-m", "talker_stream.cli", "engines", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=open(folder / "engines.log", "w"), text=True, cwd=folder)
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+/v1", line)
    assert match, f"engines printed {line!r}: {(folder / 'engines.log').read_text()[-2000:]}"
    try:
        yield match.group(0)
    finally:
        proc.send_signal(2)
        proc.wait(20)


def remote_settings(tmp_path: Path, url: str):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[avatar]
portrait = "{PORTRAIT}"
{engines_as_services(url, temperature=0.0, max_tokens=30)}""")
    return load_settings(cfg)


@pytest.fixture(scope="module")
def question_16k():
    from talker_stream.speech.audio import resample
    from talker_stream.frames import AudioChunk
    from talker_stream.speech.tts.piper import PiperTTS

    chunks = list(PiperTTS().stream("What is the capital of France?"))
    return resample(AudioChunk(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate), 16000).pcm


def test_the_remote_llm_streams_an_answer(engines, tmp_path):
    from talker_stream.brain.conversation import open_conversation
    from talker_stream.frames import Question

    conv = open_conversation(remote_settings(tmp_path, engines))
    assert type(conv.llm).__name__ == "OpenAICompatLLM"
    pieces = list(conv.reply(Question("What is the capital of France?")))
    assert len(pieces) >= 2 and "".join(pieces).strip(), pieces


def test_the_remote_voice_speaks_words_whisper_can_hear(engines, tmp_path):
    from talker_stream.brain.asr.whisper import WhisperASR
    from talker_stream.speech.audio import resample
    from talker_stream.frames import AudioChunk
    from talker_stream.speech.tts import open_tts

    tts = open_tts(remote_settings(tmp_path, engines), live=True)
    assert type(tts).__name__ == "OpenAISpeechTTS" and tts.sample_rate == 24000
    chunks = list(tts.stream("The weather is lovely today."))
    assert len(chunks) > 3, "streamed in pieces as it arrives"
    pcm = resample(AudioChunk(np.concatenate([c.pcm for c in chunks]), 24000), 16000).pcm
    assert 1.0 < len(pcm) / 16000 < 4.0
    words = WhisperASR().transcribe(pcm, "en").lower()
    assert "weather" in words and "lovely" in words, words


def test_the_remote_ear_transcribes_a_turn(engines, tmp_path, question_16k):
    from talker_stream.brain.asr import open_asr

    asr = open_asr(remote_settings(tmp_path, engines))
    assert type(asr).__name__ == "OpenAITranscribeASR"
    text = asr.transcribe(question_16k, "en").lower()
    assert "capital" in text and "france" in text, text
    assert asr.last_language == "en"


def test_a_service_that_is_down_is_a_clear_error_and_the_avatar_idles(tmp_path, animator):
    from test_live import MemorySink

    from talker_stream.live import LiveAvatar
    from talker_stream.speech.tts import open_tts

    settings = remote_settings(tmp_path, "http://127.0.0.1:9/v1")  # the discard port: nothing listens
    tts = open_tts(settings, live=True)
    t0 = time.monotonic()
    with pytest.raises(EngineUnavailable, match=r"no speech server at http://127.0.0.1:9/v1 .*base_url"):
        list(tts.stream("Hello."))
    assert time.monotonic() - t0 < 5, "a few quick retries, not a hang"
    sink = MemorySink()
    live = LiveAvatar(settings, [sink], tts=tts, engine=animator).start()
    try:
        done = []
        live.say("Nobody will hear this.", on_done=done.append)
        assert wait_for(lambda: done, 15)
        time.sleep(1)
    finally:
        live.stop()
    assert live.tts_errors >= 1 and not any(f.speaking for f in sink.frames), "idle, saying nothing wrong"
    gaps = np.diff(sink.times)
    assert len(sink.frames) > 25 and gaps.max() < 0.25, "the feed never froze"


@pytest.mark.parametrize("down", ["all engines", "the voice only"])
def test_chat_questions_wait_out_an_engine_server_outage(tmp_path, animator, down):
    """The engine server is down when three chat questions arrive (serving every engine, or
    only the voice while the LLM is the local one): the avatar idles and says nothing, no
    question is dropped or reported failed, and once `talker-stream engines` starts (on the
    port the config names) all three are answered, in order.
    ForgetfulChat stands in for a chat platform's servers (a remote service)."""
    from services import free_port
    from test_audience import ForgetfulChat
    from test_live import MemorySink

    from talker_stream.audience.queue import QuestionQueue
    from talker_stream.audience.runner import Audience
    from talker_stream.brain.conversation import open_conversation
    from talker_stream.live import LiveAvatar
    from talker_stream.speech.tts import open_tts

    port = free_port()
    settings = remote_settings(tmp_path, f"http://127.0.0.1:{port}/v1")
    if down == "the voice only":
        settings.llm.engine = "llamacpp"
    sink, chat = MemorySink(), ForgetfulChat("twitch")
    live = LiveAvatar(settings, [sink], tts=open_tts(settings, live=True), engine=animator).start()
    audience = Audience(live, open_conversation(settings), [chat], QuestionQueue(max_age_seconds=600)).start()
    server = None
    try:
        for who, text in (("ana", "What is the capital of France?"), ("bob", "What colour is the sky?"),
                          ("cy", "How many legs does a spider have?")):
            chat.send(who, text)
        assert wait_for(lambda: audience.outages >= 2, 30), (audience.outages, audience.failed, audience.errors)
        assert audience.failed == 0 and not chat.dropped_calls and audience.answered == 0
        assert not any(f.speaking for f in sink.frames), "idle during the outage: no apology, nothing wrong said"
        server = subprocess.Popen([sys.executable, "-m", "talker_stream.cli", "engines", "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / "engines.log", "w"), cwd=tmp_path)
        assert wait_for(lambda: audience.answered == 3, 180), (audience.outages, chat.dropped_calls)
    finally:
        audience.stop()
        live.stop()
        if server is not None:
            server.send_signal(2)
            server.wait(20)
    assert not chat.dropped_calls and audience.failed == 0
    assert [q.author for q in audience.asked][-3:] == ["ana", "bob", "cy"], "in the order asked"
    assert any(f.speaking for f in sink.frames), "the answers were spoken once the server was back"
