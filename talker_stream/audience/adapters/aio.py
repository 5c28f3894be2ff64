"""The run/stop/reply plumbing shared by adapters that live on an asyncio loop.

The contract asks for a blocking ``run`` in the caller's thread and a ``stop``/``reply``
callable from any other thread. Network clients (aiohttp, websockets) want one event
loop; this base gives each adapter its own loop inside ``run``, cancels the adapter's work
the moment ``stop`` is called (so a long poll wait or a blocked socket read never holds
shutdown up), and lets ``reply`` hand a coroutine to that loop and wait for its answer.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from ...frames import ChatMessage

log = logging.getLogger(__name__)


class Backoff:
    """Reconnect delays: *first*, doubling on each failure up to *cap*; ``reset`` after a success."""

    def __init__(self, first: float = 1.0, cap: float = 60.0) -> None:
        self.first, self.cap = first, cap
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2 ** min(self.failures, 30))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


class RecentSet:
    """The last *size* keys seen: duplicate suppression with bounded memory."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._keys: OrderedDict[Any, None] = OrderedDict()

    def add(self, key: Any) -> bool:
        """True if *key* is new (and now remembered)."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True

    def __contains__(self, key: Any) -> bool:
        return key in self._keys


class AsyncAdapter:
    """Base for a chat adapter whose work is ``async def serve(self)``.

    Subclasses implement ``serve`` (reconnecting by themselves) and call ``self.emit`` for
    each message; ``await self.sleep(s)`` is a wait that ends early on ``stop``.
    """

    name = ""
    logger = log
    # serve() again after a failure: waits from retry_first doubling to retry_cap, back to
    # retry_first once a serve() had run healthy_after seconds (an incident long after the last)
    retry_first = 5.0
    retry_cap = 300.0
    healthy_after = 60.0

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._on_message: Callable[[ChatMessage], None] | None = None
        self._said = ""
        self.state = "idle"

    # -- the contract -------------------------------------------------------------------
    def run(self, on_message: Callable[[ChatMessage], None]) -> None:
        self._on_message = on_message
        if self._stopping.is_set():
            return
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        finally:
            self._loop = None
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self.say("stopped")

    def stop(self) -> None:
        self._stopping.set()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed meanwhile: run is returning anyway
                pass

    # -- for subclasses -----------------------------------------------------------------
    async def serve(self) -> None:
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Wait *seconds*; True if ``stop`` was called meanwhile (the caller should return)."""
        if self._stop_event is None or self._stop_event.is_set():
            return True
        try:
            await asyncio.wait_for(self._stop_event.wait(), max(0.0, seconds))
            return True
        except asyncio.TimeoutError:
            return self.stopping

    def emit(self, message: ChatMessage) -> None:
        """Hand a message to the core; a failing callback is logged, never fatal to the adapter."""
        if self._on_message is None:
            return
        try:
            self._on_message(message)
        except Exception:  # noqa: BLE001 - the core's bug must not take the chat connection down
            self.logger.exception("%s: on_message failed", self.name)

    def say(self, state: str, level: int = logging.INFO, detail: str = "") -> None:
        """Log a state change once (repeats of the same line are dropped)."""
        self.state = state
        line = f"{self.name}: {state}" + (f" ({detail})" if detail else "")
        if line != self._said:
            self._said = line
            self.logger.log(level, "%s", line)

    def call(self, coro: Coroutine, timeout: float) -> Any:
        """Run *coro* on the adapter's loop from another thread; None if not running or too slow."""
        loop = self._loop
        if loop is None or self.stopping:
            coro.close()
            return None
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:
            coro.close()
            return None
        try:
            return future.result(timeout)
        except Exception as exc:  # noqa: BLE001 - reply() reports False, with the reason logged
            future.cancel()
            self.logger.warning("%s: reply failed: %s", self.name, type(exc).__name__ if not str(exc) else exc)
            return None

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self._stopping.is_set():
            return
        work = asyncio.create_task(self._serve_forever())
        stopped = asyncio.create_task(self._stop_event.wait())
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        for task in (work, stopped):
            task.cancel()
        await asyncio.gather(work, stopped, return_exceptions=True)

    async def _serve_forever(self) -> None:
        """``serve`` again after a bug or an early return: run() only ends on stop()."""
        backoff = Backoff(self.retry_first, self.retry_cap)
        loop = asyncio.get_running_loop()
        while not self.stopping:
            started = loop.time()
            try:
                await self.serve()
                if self.stopping:  # serve() returned because stop() woke its sleep: not a failure
                    return
                detail = "serve returned"
            except Exception as exc:  # noqa: BLE001 - logged, then retried: the stream goes on
                detail = repr(exc)
                self.logger.debug("%s: serve failed", self.name, exc_info=True)
            if loop.time() - started >= self.healthy_after:
                backoff.reset()  # it ran well for a while: this is a new incident, not the last one again
            self.say("failed, retrying", logging.ERROR, detail)
            if await self.sleep(backoff.next()):
                return
