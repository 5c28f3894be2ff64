"""espeak-ng: a formant voice for a hundred languages (Chinese included), tiny and instant."""
from __future__ import annotations

import io
import shutil
import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...errors import EngineUnavailable
from ...frames import AudioChunk


MANDARIN_ALIASES = {"cmn", "zh", "zh-cmn", "sit/cmn", "zh-cn"}


class EspeakTTS:
    name = "espeak"
    sample_rate = 22050

    def __init__(self, options=None, base_dir: Path | None = None) -> None:
        self.binary = shutil.which("espeak-ng")
        if not self.binary:
            raise EngineUnavailable("espeak-ng is not installed; apt-get install espeak-ng")
        self.voice = options.voice if options is not None else "en-us"
        if self.voice.lower() in MANDARIN_ALIASES:
            # espeak-ng's plain "cmn" turns characters into tone-numbered pinyin and then
            # reads that as English ("ni three hao three"); this variant reads it as Mandarin
            self.voice = "cmn-latn-pinyin"
        self.speed = options.speed if options is not None else 165
        self.pitch = options.pitch if options is not None else 50

    @classmethod
    def check(cls) -> str | None:
        return None if shutil.which("espeak-ng") else "espeak-ng is not installed; apt-get install espeak-ng"

    def stream(self, text: str) -> Iterator[AudioChunk]:
        """The audio for *text* (callers already send one sentence at a time)."""
        cmd = [self.binary, "-v", self.voice, "-s", str(self.speed), "-p", str(self.pitch), "--stdout"]
        try:
            proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise EngineUnavailable("espeak-ng did not answer within 60 s") from None
        if proc.returncode != 0 or not proc.stdout:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise EngineUnavailable(f"espeak-ng failed (voice {self.voice!r}): {err or 'no audio'}")
        with wave.open(io.BytesIO(proc.stdout)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
            if w.getnchannels() > 1:
                pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
        yield AudioChunk(pcm, rate)
