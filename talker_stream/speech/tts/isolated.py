"""A voice in a worker process of its own (see ``talker_stream.engines.isolation``): Piper runs on
ONNX Runtime and XTTS on torch, native code that can die with SIGSEGV or SIGILL. The live
avatar speaks through this; a crash costs the sentence being voiced (the avatar idles, the
next utterance waits for the restart), never the stream. The render job keeps its voice in
process: a crash there only ends that render."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...engines.isolation import IsolatedEngine
from ...frames import AudioChunk


class IsolatedTTS:
    def __init__(self, name: str, options: Any = None, base_dir: Path | None = None, **kwargs: Any) -> None:
        self.name = name
        self.worker = IsolatedEngine(f"the voice ({name})", "talker_stream.engines.isolation:Hosted",
                                     "tts", name, options, base_dir=base_dir, **kwargs)
        self.sample_rate = self.worker.info["attrs"]["sample_rate"]

    def stream(self, text: str) -> Iterator[AudioChunk]:
        return self.worker.stream("stream", text)

    def close(self) -> None:
        self.worker.close()
