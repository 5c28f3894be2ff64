"""Engines, sinks and adapters found by name through entry points.

The core registers its own built-ins the same way a plugin does (see pyproject.toml), so
a third-party package adds an engine by declaring an entry point in one of these groups,
without touching the core.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ..errors import EngineUnavailable

GROUPS = {
    "tts": "talker_stream.tts",
    "face": "talker_stream.face",
    "llm": "talker_stream.llm",
    "sink": "talker_stream.sinks",
    "adapter": "talker_stream.adapters",  # chat platforms (talker_stream/audience/adapters: the contract)
}


def available(kind: str) -> dict[str, Any]:
    """name -> entry point for every installed plugin of *kind*."""
    return {ep.name: ep for ep in entry_points(group=GROUPS[kind])}


def load(kind: str, name: str) -> Any:
    """The class registered as *name*; a clear error listing the alternatives if absent."""
    found = available(kind)
    if name not in found:
        names = ", ".join(sorted(found)) or "none installed"
        raise EngineUnavailable(
            f"no {kind} engine named {name!r} (available: {names}); "
            "check config.toml or install the plugin that provides it"
        )
    try:
        return found[name].load()
    except ImportError as exc:
        raise EngineUnavailable(f"{kind} engine {name!r} cannot be imported: {exc}") from None


def load_ready(kind: str, name: str, what: str) -> Any:
    """:func:`load`, then the class's own ``check()``: a clear error before anything starts
    when it cannot run on this machine (*what* names it: "sink", "LLM engine"...)."""
    cls = load(kind, name)
    why = cls.check() if hasattr(cls, "check") else None
    if why:
        raise EngineUnavailable(f"{what} {name} cannot run here: {why}")
    return cls
