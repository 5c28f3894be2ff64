"""Face engines: turn a portrait plus per-frame parameters into frames.

An engine has two steps, so that the expensive analysis happens once per portrait:
``prepare(portrait) -> avatar`` and ``render(avatar, params) -> frame``.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .params import FaceParams


class FaceEngine(Protocol):
    name: str

    def prepare(self, portrait: np.ndarray) -> Any: ...

    def render(self, avatar: Any, params: FaceParams) -> np.ndarray: ...


__all__ = ["FaceEngine", "FaceParams"]
