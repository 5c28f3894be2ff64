"""Any OpenAI-compatible chat server (Ollama, vLLM, llama.cpp's server, hosted APIs),
streamed over server-sent events with nothing but the standard library."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ...errors import EngineUnavailable
from . import GenerationParams


class OpenAICompatLLM:
    name = "openai"

    def __init__(self, options=None, base_dir: Path | None = None) -> None:
        self.base_url = (options.base_url if options else "http://127.0.0.1:8080/v1").rstrip("/")
        self.model = options.model if options else ""
        self.timeout = options.timeout if options else 30.0
        key_env = options.api_key_env if options else "OPENAI_API_KEY"
        self._key = os.environ.get(key_env, "") if key_env else ""

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
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", json.dumps(body).encode(), headers)
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - the URL is the user's config
        except urllib.error.HTTPError as exc:
            detail = exc.read(4000).decode("utf-8", "replace")
            if self._key:  # hosted APIs quote the key they were sent ("Incorrect API key provided: sk-...")
                detail = detail.replace(self._key, "***")
            detail = detail[:300]  # cut after redacting: a cut key would leak its first half
            raise EngineUnavailable(f"LLM server {self.base_url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EngineUnavailable(f"no LLM server at {self.base_url} ({reason}); start it or fix [llm.openai] base_url") from None
        with resp:
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
