"""Face engines: turn a portrait plus per-frame parameters into frames.

An engine has two steps, so that the expensive analysis happens once per portrait:
``prepare(portrait) -> avatar`` and ``render(avatar, params) -> frame``.

An engine that needs the sound itself, not just the mouth shapes derived from it (neural
lip-sync), also implements ``SpeechListener``: the timeline then tells it about each
piece of speech as it is laid out, ahead of the playhead, and ``render`` gets the frame's
index to look that sound up.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .params import FaceParams


class FaceEngine(Protocol):
    name: str

    def prepare(self, portrait: np.ndarray) -> Any: ...

    def render(self, avatar: Any, params: FaceParams) -> np.ndarray: ...


class SpeechListener(Protocol):
    """Optional engine hooks, called by the timeline (under the live avatar's lock: keep them cheap)."""

    def speech_placed(self, first_frame: int, audio: np.ndarray, clock: Any) -> None:
        """*audio* (clock-rate samples, padded to whole frames) plays from frame *first_frame* on."""

    def speech_cut(self, frame: int) -> None:
        """Everything placed from *frame* on was withdrawn (an interrupt)."""


def hears_speech(engine: Any) -> bool:
    return callable(getattr(engine, "speech_placed", None))


def render_frame(engine: Any, avatar: Any, params: FaceParams, out: np.ndarray | None, frame: int,
                 realtime: bool = False) -> np.ndarray:
    """One frame from any engine: a SpeechListener also gets the frame index, and whether
    it may wait for work it does ahead (the render job) or must not (the live loop)."""
    if hears_speech(engine):
        return engine.render(avatar, params, out=out, frame=frame, realtime=realtime)
    return engine.render(avatar, params, out=out)


def open_face(settings) -> Any:
    """The configured face engine, given its [face.NAME] options when it declares any."""
    from ..engines import registry
    from ..errors import EngineUnavailable

    name = settings.face.engine
    cls = registry.load("face", name)
    why = cls.check() if hasattr(cls, "check") else None
    if why:
        raise EngineUnavailable(f"face engine {name!r} cannot run here: {why}")
    options = settings.face.options(name)
    return cls(options, base_dir=settings.base_dir) if options is not None else cls()


__all__ = ["FaceEngine", "FaceParams", "SpeechListener", "hears_speech", "open_face", "render_frame"]
