"""Test plumbing for chat adapters: a local aiohttp server in a thread, and an adapter run.

The server only ever stands in for a platform's remote service; the adapter under test is
the real one, running its real ``run`` in a thread exactly as the core does.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any

from aiohttp import web


class AioServer:
    """An aiohttp application on 127.0.0.1 (port 0 = any free one), served from its own thread."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self.app, self.port = app, port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-server", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> "AioServer":
        self._thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
            self._runner = None
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()


class Running:
    """An adapter's ``run`` in a thread, its messages collected in order."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.inbox: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=adapter.run, args=(self.inbox.put,), name="adapter", daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def take(self, n: int, timeout: float = 20.0) -> list:
        """The next *n* messages; fails if they do not all come within *timeout* (a hang, not a speed check)."""
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.inbox.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"got {len(out)} of {n} messages: {[m.text for m in out]}") from None
        return out

    def stop(self, timeout: float = 10.0) -> None:
        self.adapter.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return after stop()"


def wait_until(condition: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
