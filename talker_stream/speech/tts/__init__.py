"""Text to speech: engines stream AudioChunks sentence by sentence.

An engine is any class with ``stream(text) -> Iterator[AudioChunk]`` and a classmethod
``check() -> str | None`` that says why it cannot run here (for ``doctor``). An engine whose
settings can forbid its use (XTTS: cloning a voice without its speaker's consent) also has
a classmethod ``validate(options, base_dir)`` that raises ConfigError; it needs no heavy
imports, and its refusal stops the command instead of falling back to another voice.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Protocol

from ...errors import EngineUnavailable
from ...frames import AudioChunk
from ...engines import registry

log = logging.getLogger(__name__)


class TTSEngine(Protocol):
    name: str
    sample_rate: int

    def stream(self, text: str) -> Iterator[AudioChunk]: ...


def validate(settings) -> None:
    """Raise ConfigError when the selected voice's settings forbid using it (``[tts] engine
    = "xtts"`` without the speaker's consent): a reason to stop, never to fall back to
    another voice. Runs before anything imports the engine's runtime (torch), so the rule
    holds on a machine where the engine could not run anyway. An engine that is not
    installed has no rule to check (open_tts then falls back, with a warning)."""
    name = settings.tts.engine
    try:
        cls = registry.load("tts", name)
    except EngineUnavailable:
        return
    rule = getattr(cls, "validate", None)
    if rule is not None:
        rule(settings.tts.options(name), settings.base_dir)


def open_tts(settings, live: bool = False) -> TTSEngine:
    """The configured engine, or the fallback with a warning when it cannot run here.

    *live*: the engine shares the CPU with a real-time frame loop, so it is asked to keep
    to one thread (engines that take a ``threads`` argument), and an engine that runs
    native code (``native = True``) runs in a supervised worker process ([tts] isolate).
    """
    tts = settings.tts
    validate(settings)  # consent refused: a ConfigError, never a fallback
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
            if live and tts.isolate and getattr(cls, "native", False):
                from .isolated import IsolatedTTS  # a crash in native code must not end the stream

                engine = IsolatedTTS(name, options, base_dir=settings.base_dir, **kwargs)
            else:
                engine = cls(options, base_dir=settings.base_dir, **kwargs)
        except EngineUnavailable as exc:
            tried.append(f"{name}: {exc}")
            log.warning("TTS engine %s unavailable: %s", name, exc)
            continue
        if name != tts.engine:
            log.warning("using fallback TTS engine %s", name)
        return engine
    raise EngineUnavailable("no TTS engine can run: " + "; ".join(tried))
