"""Engines behind OpenAI-compatible HTTP APIs: one way to call them, with retries and clear errors.

A remote engine (vLLM, Ollama, faster-whisper-server, speaches, Kokoro-FastAPI, a hosted API,
or this project's own ``talker-stream engines``) is reached with nothing but the standard
library. A request that cannot connect is tried again with backoff (a server restarting);
an HTTP error is not (the server answered: trying again would say the same). Every failure
is an EngineUnavailable naming the server and what to fix, with the API key never in it.
"""
from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..errors import EngineUnavailable, ServiceDown

log = logging.getLogger(__name__)

RETRIES = 2  # connection attempts after the first
BACKOFF_S = 0.25  # first wait between attempts, doubled each time


@dataclass
class Service:
    """Where a remote engine lives: ``base_url`` ends in /v1; the key comes from the environment."""

    base_url: str
    api_key_env: str = ""
    timeout: float = 30.0
    what: str = "engine server"

    @property
    def key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def post(self, path: str, body: bytes, content_type: str, accept: str = "*/*"):
        """The open response of ``POST {base_url}{path}`` (use it as a context manager)."""
        url = self.base_url.rstrip("/") + path
        headers = {"Content-Type": content_type, "Accept": accept}
        key = self.key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        delay = BACKOFF_S
        for attempt in range(RETRIES + 1):
            req = urllib.request.Request(url, body, headers, method="POST")
            try:
                return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 - the URL is the user's config
            except urllib.error.HTTPError as exc:
                detail = exc.read(4000).decode("utf-8", "replace")
                if key:  # hosted APIs quote the key they were sent
                    detail = detail.replace(key, "***")
                raise EngineUnavailable(f"{self.what} {self.base_url} answered {exc.code}: {detail[:300]}") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if attempt == RETRIES:
                    raise ServiceDown(f"no {self.what} at {self.base_url} ({reason}); start it or fix its "
                                      "base_url in config.toml") from None
                log.info("%s at %s: %s; trying again in %.2f s", self.what, self.base_url, reason, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type (what /audio/transcriptions takes)."""
    import secrets

    boundary = "talker" + secrets.token_hex(12)
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, ctype) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
