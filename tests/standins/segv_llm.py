"""STAND-IN for a native LLM engine that crashes: llama.cpp built for another CPU dies with
SIGSEGV in the middle of an answer. This engine is plain Python that sends itself a real
SIGSEGV at the same point, so the avatar's real isolation, restart, requeue and preflight
code runs against a real dying process. It is registered as the ``segv`` LLM engine by the
dist-info folder beside it (tests put this folder on sys.path and PYTHONPATH).

SEGV_LLM_MODE: "once" (default: crash mid-answer the first time a marker file is absent,
answer normally afterwards), "always" (crash at every answer), "never".
SEGV_LLM_MARKER: the marker file for "once".
"""
from __future__ import annotations

import os
import signal
import time


class SegvLLM:
    name = "segv"
    native = True  # runs isolated, like llama.cpp

    def __init__(self, options=None, base_dir=None) -> None:
        self.model = "segv-standin"

    @classmethod
    def check(cls):
        return None

    def stream(self, messages, params):
        yield "Paris is "
        time.sleep(0.05)
        mode = os.environ.get("SEGV_LLM_MODE", "once")
        marker = os.environ.get("SEGV_LLM_MARKER", "")
        if mode == "always" or (mode == "once" and marker and not os.path.exists(marker)):
            if marker:
                open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(5)  # never reached: the signal ends the process
        for word in ("the ", "capital ", "of ", "France, ", "my ", "friend."):
            yield word
            time.sleep(0.01)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class SegvTTS:
    """STAND-IN for a native voice that crashes mid-sentence (ONNX Runtime built for another
    CPU): a real tone, then a real SIGSEGV, for a text with the word "dies" in it, under the
    same SEGV_LLM_MODE/MARKER rules."""

    name = "segv"
    native = True
    sample_rate = 16000

    def __init__(self, options=None, base_dir=None, threads=None) -> None:
        pass

    @classmethod
    def check(cls):
        return None

    def stream(self, text):
        import numpy as np

        from talker_stream.frames import AudioChunk

        t = np.arange(self.sample_rate // 2) / self.sample_rate
        tone = (0.5 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2).astype(np.float32)
        yield AudioChunk(tone, self.sample_rate)
        mode = os.environ.get("SEGV_LLM_MODE", "once")
        marker = os.environ.get("SEGV_LLM_MARKER", "") + ".tts"
        if "dies" in text and (mode == "always" or (mode == "once" and not os.path.exists(marker))):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGSEGV)
        yield AudioChunk(tone, self.sample_rate)
