"""A native engine that crashes never takes the stream down, and is found before it is trusted.

The crashing engine is ``tests/standins/segv_llm.py``: a STAND-IN for llama.cpp built for
another CPU, which sends itself a real SIGSEGV in the middle of an answer. Everything else is
the real product: the worker process and its supervisor, the conversation, the question
queue and audience, the live avatar (Piper voice, mesh face), preflight, doctor and the CLI.
The last tests check the real llama.cpp build the project installs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PORTRAIT, ROOT, make_settings, wait_for
from talker_stream.engines.isolation import EngineCrashed, IsolatedEngine
from talker_stream.brain.llm import GenerationParams, open_llm

STANDINS = Path(__file__).resolve().parent / "standins"
PARAMS = GenerationParams(0.0, 1.0, 16)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def segv(monkeypatch, tmp_path):
    """The ``segv`` engine importable here and in every child process; crashes once."""
    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(STANDINS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SEGV_LLM_MODE", "once")
    monkeypatch.setenv("SEGV_LLM_MARKER", str(tmp_path / "crashed-once"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # preflight's memory of passed probes
    return tmp_path


def test_a_crash_mid_answer_raises_a_named_error_and_the_worker_comes_back(segv):
    llm = open_llm(make_settings(**{"llm.engine": "segv"}))
    try:
        assert llm.model == "segv-standin" and llm.worker.alive
        pieces = []
        with pytest.raises(EngineCrashed) as crash:
            for piece in llm.stream(QUESTION, PARAMS):
                pieces.append(piece)
        assert pieces == ["Paris is "], "what was written before the crash arrived"
        assert crash.value.signal_name == "SIGSEGV"
        assert "the local LLM (segv) crashed (SIGSEGV)" in str(crash.value)
        assert llm.count_tokens("one two three") == 3, "a count while restarting is estimated, never an error"
        # the next answer waits for the restart and is whole
        assert "".join(llm.stream(QUESTION, PARAMS)) == "Paris is the capital of France, my friend."
        assert llm.worker.crashes == 1 and llm.worker.restarts == 1
    finally:
        llm.close()


def test_an_answer_closed_early_cancels_in_the_worker_and_leaves_nothing_behind(segv, monkeypatch):
    monkeypatch.setenv("SEGV_LLM_MODE", "never")
    llm = open_llm(make_settings(**{"llm.engine": "segv"}))
    try:
        for _ in range(3):
            it = llm.stream(QUESTION, PARAMS)
            assert next(it) == "Paris is "
            it.close()  # interrupted: the worker stops writing
        assert "".join(llm.stream(QUESTION, PARAMS)) == "Paris is the capital of France, my friend.", \
            "no piece of a cancelled answer leaks into the next one"
        assert llm.count_tokens("a b") == 2
        assert llm.worker.crashes == 0
    finally:
        llm.close()


def test_an_engine_that_cannot_load_fails_with_its_own_message(segv):
    with pytest.raises(Exception, match="GGUF model not found: .*nowhere.gguf"):
        open_llm(make_settings(**{"llm.llamacpp.model": str(segv / "nowhere.gguf")}))


def test_the_worker_ends_with_its_parent_connection():
    worker = IsolatedEngine("a dict", "builtins:dict", a=1)
    proc = worker._child.proc
    assert worker.call("get", "a") == 1
    worker.close()
    assert proc.poll() is not None, "closing the engine ends its process"


@pytest.mark.slow
def test_the_feed_keeps_25_fps_through_a_crash_and_the_question_is_answered_after_the_restart(segv, animator):
    from test_audience import CaptionSink, LocalChat

    from talker_stream.audience.runner import Audience
    from talker_stream.brain.conversation import Conversation
    from talker_stream.live import LiveAvatar
    from talker_stream.brain.moderation import Moderator
    from talker_stream.audience.queue import QuestionQueue
    from talker_stream.speech.tts.piper import PiperTTS

    sink, chat = CaptionSink(), LocalChat("twitch")
    llm = open_llm(make_settings(**{"llm.engine": "segv"}))
    conv = Conversation(llm, "You are Tess.", PARAMS, Moderator(), 1200)
    live = LiveAvatar(make_settings(**{"live.sinks": []}), [sink], tts=PiperTTS(threads=1), engine=animator).start()
    audience = Audience(live, conv, [chat], QuestionQueue(), reply_in_chat=True).start()
    try:
        assert wait_for(lambda: len(sink.frames) > 25, 20), "the feed started"
        chat.send("ana", "What is the capital of France?")
        assert wait_for(lambda: audience.answered >= 1 and chat.replies, 90), audience.stats()
        time.sleep(0.5)
    finally:
        audience.stop()
        live.stop()
        llm.close()
    assert llm.worker.crashes == 1 and llm.worker.restarts == 1
    stats = audience.stats()
    assert stats["requeued"] == 1 and stats["failed"] == 0 and stats["answered"] == 1, stats
    # the same question, asked once more after the restart, answered and replied in chat
    assert sink.questions_spoken() == ["ana asks: What is the capital of France?"]
    (message, text), = chat.replies
    assert message.author == "ana" and text == "Paris is the capital of France, my friend."
    # the apology was spoken in between, and the feed never stopped
    captions = " ".join(dict.fromkeys(c for _, speaking, _, c, _ in sink.frames if speaking and c))
    assert "lost my train of thought" in captions, captions
    times = [t for t, *_ in sink.frames]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # the restart alone takes over 0.5 s (its backoff, then the model load): a feed that waited
    # for it would show a gap that long. Under the full suite on 2 busy cores one gap of 0.30 s
    # was seen once (in 5 runs alone the largest was under 0.25 s; its cause is not established)
    assert max(gaps) < 0.45, f"the feed froze for {max(gaps):.2f} s"
    fps = (len(times) - 1) / (times[-1] - times[0])
    assert 23.5 <= fps <= 26.0, fps
    # memory keeps the real answer only: the failed attempt left no trace
    assert [m["content"] for m in conv.history("twitch:room")] == [
        'ana asks: "What is the capital of France?"', "Paris is the capital of France, my friend."]


def test_an_answer_that_keeps_crashing_is_reported_failed_to_its_platform(segv, monkeypatch, animator):
    from test_audience import CaptionSink, LocalChat

    from talker_stream.audience.runner import Audience
    from talker_stream.brain.conversation import Conversation
    from talker_stream.live import LiveAvatar
    from talker_stream.brain.moderation import Moderator
    from talker_stream.audience.queue import QuestionQueue
    from talker_stream.speech.tts.piper import PiperTTS

    class Told(LocalChat):
        def __init__(self, *a) -> None:
            super().__init__(*a)
            self.told: list[tuple[str, str]] = []

        def dropped(self, message, why) -> None:
            self.told.append((message.author, why))

    monkeypatch.setenv("SEGV_LLM_MODE", "always")
    sink, chat = CaptionSink(), Told("youtube")
    llm = open_llm(make_settings(**{"llm.engine": "segv"}))
    live = LiveAvatar(make_settings(**{"live.sinks": []}), [sink], tts=PiperTTS(threads=1), engine=animator).start()
    audience = Audience(live, Conversation(llm, "You are Tess.", PARAMS, Moderator(), 1200), [chat],
                        QuestionQueue(), reply_in_chat=True).start()
    try:
        chat.send("bo", "Where is Paris?")
        assert wait_for(lambda: chat.told, 90), audience.stats()
    finally:
        audience.stop()
        live.stop()
        llm.close()
    assert chat.told == [("bo", "failed")] and chat.replies == []
    assert audience.stats()["requeued"] == 1 and audience.failed == 1 and llm.worker.crashes == 2
    captions = " ".join(dict.fromkeys(c for _, speaking, _, c, _ in sink.frames if speaking and c))
    assert "lost my train of thought" in captions, "an apology each time, never silence"
    assert "1 dropped" in live.status_line()


# -- preflight, doctor and the CLI --------------------------------------------------------------
CONFIG = """
[avatar]
portrait = "{portrait}"

[live]
sinks = []

[server]
enabled = false

[llm]
engine = "segv"
"""


def run_cli(tmp_path: Path, *args: str, stdin: str = "", timeout: float = 180) -> subprocess.CompletedProcess:
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(portrait=PORTRAIT))
    return subprocess.run([sys.executable, "-m", "talker_stream.cli", "-c", str(cfg), *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, "COLUMNS": "250"})  # doctor's table on one line a row


def test_doctor_names_the_engine_that_crashes_on_this_cpu(segv, monkeypatch):
    monkeypatch.setenv("SEGV_LLM_MODE", "always")
    out = run_cli(segv, "doctor")
    assert out.returncode == 1, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert re.search(r"llm run .*segv .*selected .*crashed on this CPU \(SIGSEGV\)", text), out.stdout
    assert re.search(r"tts run .*piper .*selected .*ok", text) and re.search(r"face run .*mesh .*ok", text), out.stdout


def test_chat_refuses_to_start_on_an_llm_that_crashes_and_says_why(segv, monkeypatch):
    monkeypatch.setenv("SEGV_LLM_MODE", "always")
    out = run_cli(segv, "chat", stdin="hello\n")
    assert out.returncode == 2, out.stderr
    assert "error: the local LLM (segv): crashed on this CPU (SIGSEGV)" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_passed_probe_is_remembered_until_the_engine_changes(segv, monkeypatch):
    from talker_stream.engines import preflight

    monkeypatch.setenv("SEGV_LLM_MODE", "never")
    settings = make_settings(**{"llm.engine": "segv"})
    target = preflight.Target("llm", "segv")
    first = preflight.probe(settings, target)
    assert first.ok and not first.cached and first.seconds > 0
    assert preflight.probe(settings, target).cached
    monkeypatch.setenv("SEGV_LLM_MODE", "always")
    assert preflight.probe(settings, target).cached, "remembered: the engine and the CPU did not change"
    crashed = preflight.probe(settings, target, use_cache=False)
    assert crashed.crashed and "SIGSEGV" in crashed.problem


# -- the llama.cpp build ---------------------------------------------------------------------
def test_setup_builds_llama_cpp_with_the_portable_flags_the_code_names():
    from talker_stream.brain.llm.llamacpp import PORTABLE_CMAKE_ARGS

    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert f'LLAMA_CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}"' in script
    assert "-DGGML_NATIVE=OFF" in PORTABLE_CMAKE_ARGS and "-DGGML_AMX_INT8=OFF" in PORTABLE_CMAKE_ARGS
    assert "--no-cache-dir" in script, "a native wheel in pip's cache must never be reused"


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 instruction sets")
def test_the_installed_llama_cpp_uses_no_instruction_beyond_avx2():
    """What crashed on Sapphire Rapids was the AMX kernel; AVX-512 is missing on many x86-64
    CPUs. The installed library's machine code must have neither (zmm registers, AMX tiles)."""
    import llama_cpp

    assert shutil.which("objdump"), "binutils' objdump is needed to read the machine code"
    libs = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu*.so*"))
    assert libs, "llama.cpp's CPU backend library"
    for lib in libs:
        code = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True,
                              check=True).stdout
        assert len(code) > 100_000, "disassembled"
        assert "ymm" in code, "AVX2 kernels are there"
        assert not re.search(r"%zmm\d|%k[1-7]\b", code), f"{lib.name} has AVX-512 instructions"
        assert not re.search(r"\b(tileloadd|tdpb[su][su]d|tdpbf16ps|ldtilecfg)\b", code), f"{lib.name} has AMX"


# -- the voice and the ear -------------------------------------------------------------------
@pytest.mark.slow
def test_a_voice_that_crashes_mid_sentence_costs_that_sentence_only(segv, animator):
    from test_live import MemorySink

    from talker_stream.live import LiveAvatar

    sink = MemorySink()
    live = LiveAvatar(make_settings(**{"live.sinks": [], "tts.engine": "segv"}), [sink], engine=animator).start()
    try:
        assert type(live.speaker.tts).__name__ == "IsolatedTTS", "the live voice runs in its worker"
        heard = []
        live.say("This sentence dies halfway.", on_done=heard.append)
        assert wait_for(lambda: heard, 30), "the broken utterance still ends"
        live.say("This one is whole.", on_done=heard.append)
        assert wait_for(lambda: len(heard) == 2, 30)
        time.sleep(0.3)
    finally:
        live.stop()
    worker = live.speaker.tts.worker
    assert worker.crashes == 1 and worker.restarts == 1 and live.tts_errors == 1
    per_utterance = {u: sum(1 for f in sink.frames if f.speaking and f.utterance == u) for u in (1, 2)}
    # 0.5 s of tone before the crash (12.5 frames), then 2 x 0.5 s for the whole sentence
    assert 11 <= per_utterance[1] <= 15 and 24 <= per_utterance[2] <= 28, per_utterance
    gaps = [b - a for a, b in zip(sink.times, sink.times[1:])]
    # the restart alone takes over 0.5 s (its backoff, then the model load): a feed that waited
    # for it would show a gap that long. Under the full suite on 2 busy cores one gap of 0.30 s
    # was seen once (in 5 runs alone the largest was under 0.25 s; its cause is not established)
    assert max(gaps) < 0.45, f"the feed froze for {max(gaps):.2f} s"
    assert not worker.alive, "stop() closed the voice's worker"


def test_whisper_killed_mid_turn_loses_that_turn_and_hears_the_next(piper_question):
    import signal
    import threading

    from talker_stream.brain.asr import open_asr

    asr = open_asr(make_settings())
    try:
        assert type(asr).__name__ == "IsolatedASR" and asr.model_name
        pcm = piper_question
        pid = asr.worker._child.proc.pid
        threading.Timer(0.05, os.kill, (pid, signal.SIGSEGV)).start()
        with pytest.raises(EngineCrashed, match=r"speech recognition \(whisper\) crashed \(SIGSEGV\)"):
            asr.transcribe(np.concatenate([pcm] * 6), "en")
        text = asr.transcribe(pcm, "en")  # waits for the restart
        assert "capital" in text.lower() and "france" in text.lower(), text
        assert asr.last_language == "en" and asr.worker.restarts == 1
    finally:
        asr.close()


@pytest.fixture(scope="module")
def piper_question():
    from talker_stream.speech.audio import resample
    from talker_stream.frames import AudioChunk
    from talker_stream.speech.tts.piper import PiperTTS

    chunks = list(PiperTTS().stream("What is the capital of France?"))
    pcm = np.concatenate([c.pcm for c in chunks])
    return resample(AudioChunk(pcm, chunks[0].sample_rate), 16000).pcm


HASWELL_PROBE = """
import time
from llama_cpp import Llama
from talker_stream.brain.llm.llamacpp import bundled_model
llm = Llama(model_path=str(bundled_model()), n_ctx=512, n_threads=2, verbose=False)
out = llm.create_chat_completion(messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0)
print("ANSWER", repr(out["choices"][0]["message"]["content"]))
"""


@pytest.mark.slow  # about 30 s: the whole Python process runs under CPU emulation
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 instruction sets")
def test_the_installed_llama_cpp_answers_on_an_emulated_avx2_only_cpu(tmp_path):
    """A CPU of another kind, for real: QEMU's user-mode emulation of an Intel Haswell
    (AVX2, FMA, F16C; no AVX-512, no AMX) runs the installed llama.cpp on the bundled model.
    A -march=native build from this machine dies there with SIGILL (bench/llm_builds.sh)."""
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-user (scripts/setup.sh test installs it) emulates the other CPU"
    script = tmp_path / "probe.py"
    script.write_text(HASWELL_PROBE)
    out = subprocess.run([qemu, "-cpu", "Haswell", sys.executable, str(script)], capture_output=True, text=True,
                         timeout=400, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    answer = re.search(r"ANSWER '(.*)'", out.stdout)
    assert answer and answer.group(1).strip(), out.stdout


def test_a_slowly_spoken_answer_does_not_hold_the_model_for_the_next_caller(segv, monkeypatch):
    """An answer is consumed as fast as it is spoken (seconds); the model finished writing it
    long before. Another session's question (or memory's token count, on the frame loop)
    must get the model as soon as it is free, not when the first answer has been spoken."""
    monkeypatch.setenv("SEGV_LLM_MODE", "never")
    llm = open_llm(make_settings(**{"llm.engine": "segv"}))
    try:
        slow = llm.stream(QUESTION, PARAMS)
        assert next(slow) == "Paris is "  # ...and this reader pauses, as a voice does
        time.sleep(0.5)  # the worker has written the whole answer by now
        t0 = time.monotonic()
        assert "".join(llm.stream(QUESTION, PARAMS)) == "Paris is the capital of France, my friend."
        assert time.monotonic() - t0 < 1.0
        assert "".join(slow) == "the capital of France, my friend.", "the paused answer is whole"
    finally:
        llm.close()
