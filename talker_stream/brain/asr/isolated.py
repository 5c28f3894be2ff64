"""Whisper in a worker process of its own (see ``talker_stream.engines.isolation``): CTranslate2 is
native code. A crash costs the turn being transcribed (the listener logs it and goes on
hearing); the next turn waits for the restart."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...engines.isolation import IsolatedEngine


class IsolatedASR:
    def __init__(self, options: Any = None, base_dir: Path | None = None, threads: int | None = None) -> None:
        self.worker = IsolatedEngine("speech recognition (whisper)", "talker_stream.engines.isolation:Hosted",
                                     "asr", "whisper", options, base_dir=base_dir, threads=threads)
        attrs = self.worker.info["attrs"]
        self.name = "whisper"
        self.model_name = attrs.get("model_name", "")
        self.language = attrs.get("language", "en")
        self.multilingual = attrs.get("multilingual", False)
        self.last_language = self.language

    def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str:
        text, self.last_language = self.worker.call("transcribe_and_language", pcm16k, language)
        return text

    def close(self) -> None:
        self.worker.close()
