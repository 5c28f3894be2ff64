"""Text to speech: engines stream AudioChunks sentence by sentence.

An engine is any class with ``stream(text) -> Iterator[AudioChunk]`` and a classmethod
``check() -> str | None`` that says why it cannot run here (for ``doctor``).
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Protocol

from ..errors import EngineUnavailable
from ..media import AudioChunk
from .. import registry

log = logging.getLogger(__name__)


class TTSEngine(Protocol):
    name: str
    sample_rate: int

    def stream(self, text: str) -> Iterator[AudioChunk]: ...


def open_tts(settings, live: bool = False) -> TTSEngine:
    """The configured engine, or the fallback with a warning when it cannot run here.

    *live*: the engine shares the CPU with a real-time frame loop, so it is asked to keep
    to one thread (engines that take a ``threads`` argument).
    """
    tts = settings.tts
    tried = []
    for name in dict.fromkeys([tts.engine, tts.fallback]):
        if not name:
            continue
        try:
            cls = registry.load("tts", name)
            why = cls.check()
            if why:
                raise EngineUnavailable(why)
            options = tts.options(name)
            kwargs = {"threads": 1} if live and "threads" in inspect.signature(cls).parameters else {}
            engine = cls(options, base_dir=settings.base_dir, **kwargs)
        except EngineUnavailable as exc:
            tried.append(f"{name}: {exc}")
            log.warning("TTS engine %s unavailable: %s", name, exc)
            continue
        if name != tts.engine:
            log.warning("using fallback TTS engine %s", name)
        return engine
    raise EngineUnavailable("no TTS engine can run: " + "; ".join(tried))
