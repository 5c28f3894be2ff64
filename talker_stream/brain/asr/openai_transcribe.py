"""Speech recognition behind an OpenAI-compatible ``/v1/audio/transcriptions`` server
(faster-whisper-server, speaches, vLLM's Whisper, hosted APIs, or ``talker-stream engines``).
Turns are still found here (Silero VAD, drafting and barge-in stay local, where the sound
is); only each finished turn is sent, as a 16 kHz WAV."""
from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np

from ...engines.service import Service, multipart


class OpenAITranscribeASR:
    name = "openai"

    def __init__(self, options=None, base_dir: Path | None = None, **_: object) -> None:
        o = options.openai
        self.service = Service(o.base_url, o.api_key_env, o.timeout, "transcription server")
        self.model = o.model
        self.model_name = f"{o.model} at {o.base_url}"
        self.language = getattr(options, "language", "en")
        self.multilingual = True
        self.last_language = self.language

    def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(pcm16k, -1, 1) * 32767).astype("<i2").tobytes())
        lang = self.language if language is None else language
        fields = {"model": self.model, "response_format": "json", **({"language": lang} if lang else {})}
        body, ctype = multipart(fields, {"file": ("turn.wav", buf.getvalue(), "audio/wav")})
        with self.service.post("/audio/transcriptions", body, ctype, "application/json") as resp:
            data = json.loads(resp.read())
        self.last_language = data.get("language", lang) or lang
        return str(data.get("text", "")).strip()

    def close(self) -> None:
        pass
