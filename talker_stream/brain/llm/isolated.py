"""A language model in a worker process of its own (see ``talker_stream.engines.isolation``).

llama.cpp is native code: on a CPU it was not built for it dies with SIGSEGV or SIGILL, and
inside the avatar's process that would end the stream. Here it runs in a supervised child:
a crash fails only the answer being written (the conversation says a short apology, the
audience asks the question again once the model is back), and the worker restarts with
backoff while the avatar goes on blinking at 25 fps.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import EngineUnavailable
from ...engines.isolation import IsolatedEngine
from . import GenerationParams


WORKER_NICE = 5


class IsolatedLLM:
    """The same ``stream``/``count_tokens`` interface as the engine it hosts."""

    def __init__(self, name: str, options: Any = None, base_dir: Path | None = None) -> None:
        self.name = name
        # The model writes ahead of the voice (it is drained eagerly, so other callers get it
        # sooner); on a small CPU that must not slow the voice of the first sentence, which
        # is what the audience waits for: the worker runs at a lower priority (nice 5).
        self.worker = IsolatedEngine(f"the local LLM ({name})", "talker_stream.engines.isolation:Hosted",
                                     "llm", name, options, base_dir=base_dir, env={"TALKER_WORKER_NICE": str(WORKER_NICE)})
        self.model = self.worker.info["attrs"].get("model", "")
        if "count_tokens" not in self.worker.info["methods"]:
            self.count_tokens = None  # the conversation estimates instead

    def stream(self, messages: list[dict], params: GenerationParams) -> Iterator[str]:
        return self.worker.stream("stream", messages, params)

    def count_tokens(self, text: str) -> int:  # noqa: F811 - replaced by None above when absent
        try:
            return self.worker.call("count_tokens", text, wait=0.0, block=False)
        except EngineUnavailable:  # busy, down or restarting: memory bookkeeping (on the frame loop) never waits
            from ..conversation import estimate_tokens

            return estimate_tokens(text)

    def close(self) -> None:
        self.worker.close()
