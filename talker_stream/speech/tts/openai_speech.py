"""A voice behind an OpenAI-compatible ``/v1/audio/speech`` server (Kokoro-FastAPI, speaches,
Piper behind such a server, hosted APIs, or ``talker-stream engines``), streamed as raw PCM
into the timeline while it arrives. No phoneme timings come back, so the mouth follows the
sound alone (the same path as lip-syncing a recording)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...frames import AudioChunk
from ...engines.service import Service

CHUNK_BYTES = 4800  # 100 ms of 24 kHz 16-bit mono: the first words go out before the sentence is done


@dataclass
class Options:
    base_url: str = "http://127.0.0.1:8800/v1"  # `talker-stream engines` serves here by default
    model: str = "tts-1"
    voice: str = "alloy"  # the server's voice name (Kokoro: af_bella, ...; talker-stream engines: any)
    api_key_env: str = "OPENAI_API_KEY"  # environment variable with the key (unset for local servers)
    sample_rate: int = 24000  # what response_format "pcm" means on OpenAI's API and its followers
    timeout: float = 30.0


class OpenAISpeechTTS:
    name = "openai"
    Options = Options  # the [tts.openai] table

    def __init__(self, options: Options | None = None, base_dir: Path | None = None) -> None:
        o = options or Options()
        self.options = o
        self.sample_rate = o.sample_rate
        self.service = Service(o.base_url, o.api_key_env, o.timeout, "speech server")

    @classmethod
    def check(cls) -> str | None:
        return None  # a remote server is checked when it is used: it may start after the avatar

    def stream(self, text: str) -> Iterator[AudioChunk]:
        body = json.dumps({"model": self.options.model, "input": text, "voice": self.options.voice,
                           "response_format": "pcm"}).encode()
        with self.service.post("/audio/speech", body, "application/json", "audio/pcm") as resp:
            odd = b""
            while True:
                data = resp.read(CHUNK_BYTES)
                if not data:
                    break
                data, odd = odd + data, b""
                if len(data) % 2:
                    data, odd = data[:-1], data[-1:]
                if data:
                    pcm = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
                    yield AudioChunk(pcm, self.sample_rate)
