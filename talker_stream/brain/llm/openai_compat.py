"""Any OpenAI-compatible chat server (Ollama, vLLM, llama.cpp's server, hosted APIs),
streamed over server-sent events with nothing but the standard library."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ...engines.service import Service
from . import GenerationParams


class OpenAICompatLLM:
    name = "openai"

    def __init__(self, options=None, base_dir: Path | None = None) -> None:
        self.base_url = (options.base_url if options else "http://127.0.0.1:8080/v1").rstrip("/")
        self.model = options.model if options else ""
        self.timeout = options.timeout if options else 30.0
        key_env = options.api_key_env if options else "OPENAI_API_KEY"
        # retries with backoff, the key never in an error, an unreachable server a ServiceDown
        self.service = Service(self.base_url, key_env, self.timeout, "LLM server")

    @classmethod
    def check(cls) -> str | None:
        return None

    def stream(self, messages: list[dict], params: GenerationParams) -> Iterator[str]:
        body = {"messages": messages, "stream": True, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_tokens}
        penalty = getattr(params, "repeat_penalty", 1.0) - 1.0
        if penalty > 0:
            body["frequency_penalty"] = round(min(penalty, 2.0), 3)
        if getattr(params, "stop", ()):
            body["stop"] = list(params.stop)[:4]  # the OpenAI API takes up to four
        if self.model:
            body["model"] = self.model
        with self.service.post("/chat/completions", json.dumps(body).encode(), "application/json",
                               "text/event-stream") as resp:
            for raw in resp:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    choice = json.loads(data)["choices"][0]
                except (json.JSONDecodeError, KeyError, IndexError):
                    continue
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    yield delta
