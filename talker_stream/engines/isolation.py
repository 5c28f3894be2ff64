"""Engines in a child process of their own, so a crash in native code never takes the stream down.

llama.cpp, CTranslate2 and ONNX Runtime are C++; a wrong instruction for this CPU or a bad
model file ends the whole process with SIGSEGV or SIGILL, and no ``except`` can catch that.
An :class:`IsolatedEngine` builds the engine inside a child Python process and forwards
method calls (plain calls and streamed ones) over a socket; when the child dies, the call
raises :class:`EngineCrashed` naming the signal, and the child is started again in the
background with backoff, while the avatar goes on drawing frames.

The child is ``python -m talker_stream.engines.isolation``: it reads one spec (a ``module:callable``
factory and its arguments), builds the engine, says "ready", and serves requests one at a
time. A streamed request sends each item as it comes and checks between items whether the
caller cancelled (an interrupted answer stops the model at once).
"""
from __future__ import annotations

import importlib
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from ..errors import EngineUnavailable

log = logging.getLogger(__name__)

BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 30.0
HEALTHY_S = 60.0  # a worker that served this long before it crashed restarts with the first delay
START_TIMEOUT_S = 120.0  # building the engine: loading a multi-GB model from a slow disk


class EngineCrashed(EngineUnavailable):
    """The engine's process died (a signal or an exit) while it worked."""

    def __init__(self, what: str, returncode: int | None) -> None:
        self.returncode = returncode
        self.signal_name = signal_name(returncode)
        super().__init__(f"{what} crashed ({self.signal_name})")


def signal_name(returncode: int | None) -> str:
    """SIGSEGV for -11, 'exit code 3' for 3."""
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class RemoteError(Exception):
    """An ordinary exception raised by the engine in its process, re-raised here by type name."""


class _Child:
    """One running child process and its connection."""

    def __init__(self, factory: str, args: tuple, kwargs: dict, env: dict | None) -> None:
        parent_end, child_end = socket.socketpair()
        cmd = [sys.executable, "-m", "talker_stream.engines.isolation", str(child_end.fileno())]
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL,
                                         env={**os.environ, **(env or {})})
        finally:
            child_end.close()
        self.conn = Connection(parent_end.detach())
        self.started = time.monotonic()
        self._ids = 0
        self.conn.send((factory, args, kwargs))

    def wait_ready(self, what: str, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            self.kill()
            raise EngineUnavailable(f"{what} did not start within {timeout:.0f} s")
        kind, _, value = self.recv(what)
        if kind == "error":
            self.kill()
            raise _rebuild_error(value)
        return value

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def reply(self, what: str, rid: int) -> tuple[str, Any]:
        """The next message about request *rid* (older requests' leftovers are skipped)."""
        while True:
            kind, got, value = self.recv(what)
            if got == rid:
                return kind, value

    def recv(self, what: str) -> tuple:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise EngineCrashed(what, self.reap()) from None

    def send(self, what: str, message: tuple) -> None:
        try:
            self.conn.send(message)
        except OSError:
            raise EngineCrashed(what, self.reap()) from None

    def reap(self) -> int | None:
        """The child's exit status, waiting briefly (it may be dying right now)."""
        try:
            return self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()


def _rebuild_error(error: tuple[str, str]) -> Exception:
    kind, message = error
    if kind in ("EngineUnavailable", "InputError", "TalkerError", "ConfigError"):
        from .. import errors

        return getattr(errors, kind)(message)
    return RemoteError(f"{kind}: {message}")


class IsolatedEngine:
    """An engine built and run in a supervised child process.

    *factory* is ``"module:callable"`` importable in the child; it is called with *args* and
    *kwargs* (which must pickle). *what* names the engine in messages ("the local LLM").
    Calls are serialised: one request at a time, as one native model context allows anyway.
    """

    def __init__(self, what: str, factory: str, *args: Any, env: dict | None = None, **kwargs: Any) -> None:
        self.what = what
        self._spec = (factory, args, kwargs, env)
        self._lock = threading.Lock()  # one request at a time
        self._state = threading.Condition()
        self._child: _Child | None = None
        self._restarting = False
        self._delay = BACKOFF_FIRST_S
        self._closed = False
        self.crashes = 0
        self.restarts = 0
        self.last_crash: EngineCrashed | None = None
        self.info = self._start()  # the first start fails loudly: a missing model is the user's to fix

    # -- life ------------------------------------------------------------------------------
    def _start(self) -> Any:
        factory, args, kwargs, env = self._spec
        child = _Child(factory, args, kwargs, env)
        info = child.wait_ready(self.what, START_TIMEOUT_S)
        with self._state:
            self._child = child
            self._state.notify_all()
        return info

    def _crashed(self, child: _Child, exc: EngineCrashed) -> None:
        """Count the crash and start a new child after the backoff, on a thread of its own."""
        with self._state:
            if self._child is not child:
                return
            self._child = None
            self.crashes += 1
            self.last_crash = exc
            if time.monotonic() - child.started > HEALTHY_S:
                self._delay = BACKOFF_FIRST_S
            delay, self._delay = self._delay, min(self._delay * 2, BACKOFF_MAX_S)
            self._restarting = True
        child.kill()
        log.warning("%s; restarting it in %.1f s", exc, delay)
        threading.Thread(target=self._restart, args=(delay,), name="engine-restart", daemon=True).start()

    def _restart(self, delay: float) -> None:
        while True:
            time.sleep(delay)
            if self._closed:
                break
            try:
                self._start()
                self.restarts += 1
                log.warning("%s is running again", self.what)
                break
            except Exception as exc:  # noqa: BLE001 - keep trying, slower each time
                delay = min(max(delay, BACKOFF_FIRST_S) * 2, BACKOFF_MAX_S)
                log.warning("%s could not be restarted (%s); trying again in %.0f s", self.what, exc, delay)
        with self._state:
            self._restarting = False
            self._state.notify_all()

    def _ready_child(self, wait: float) -> _Child:
        with self._state:
            deadline = time.monotonic() + wait
            while self._child is None and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0 or not self._restarting:
                    break
                self._state.wait(left)
            if self._child is None:
                why = "it was closed" if self._closed else "it is restarting after a crash"
                raise EngineUnavailable(f"{self.what} is not available: {why}")
            return self._child

    @property
    def alive(self) -> bool:
        with self._state:
            return self._child is not None

    def close(self) -> None:
        self._closed = True
        with self._state:
            child, self._child = self._child, None
            self._state.notify_all()
        if child is not None:
            try:
                child.conn.send(("quit", 0))
                child.proc.wait(2.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
            child.kill()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- calls -----------------------------------------------------------------------------
    def call(self, method: str, *args: Any, wait: float = 30.0, block: bool = True) -> Any:
        """``engine.method(*args)`` in the child; *wait*: how long to wait for a restart.
        With *block* False, an engine busy with another request raises EngineUnavailable
        at once (callers on the frame loop must never wait for a model)."""
        if not self._lock.acquire(blocking=block):
            raise EngineUnavailable(f"{self.what} is busy")
        try:
            child = self._ready_child(wait)
            rid = child.next_id()
            try:
                child.send(self.what, ("call", rid, method, args))
                kind, value = child.reply(self.what, rid)
            except EngineCrashed as exc:
                self._crashed(child, exc)
                raise
        finally:
            self._lock.release()
        if kind == "error":
            raise _rebuild_error(value)
        return value

    def stream(self, method: str, *args: Any, wait: float = 30.0) -> Iterator[Any]:
        """Iterate ``engine.method(*args)`` in the child, item by item.

        The child's items are read as fast as it writes them, by a thread of this stream's,
        so the engine is free for the next caller as soon as it is done, however slowly the
        items are consumed (an answer is spoken over many seconds; another session's
        question must not wait for that). Closing the iterator early cancels the child's
        generator after its current item."""
        self._lock.acquire()
        try:
            child = self._ready_child(wait)
            rid = child.next_id()
            child.send(self.what, ("stream", rid, method, args))
        except EngineCrashed as exc:
            self._lock.release()
            self._crashed(child, exc)
            raise
        except BaseException:
            self._lock.release()
            raise
        items: queue.Queue = queue.Queue()
        cancel = threading.Event()
        threading.Thread(target=self._read, args=(child, rid, items, cancel), name="engine-stream", daemon=True).start()
        try:
            while True:
                kind, value = items.get()
                if kind == "item":
                    yield value
                elif kind == "error":
                    raise _rebuild_error(value)
                elif kind == "crash":
                    raise value
                else:
                    return
        finally:
            cancel.set()  # early close: the reader tells the child; after the end: nothing to do

    def _read(self, child: "_Child", rid: int, items: queue.Queue, cancel: threading.Event) -> None:
        """Drain one stream's replies into *items*; release the engine at its end."""
        cancelled = False
        try:
            while True:
                if cancel.is_set() and not cancelled:
                    child.send(self.what, ("cancel", rid))
                    cancelled = True
                if not child.conn.poll(0.05):  # wake up now and then to notice a cancel
                    if child.proc.poll() is not None:
                        raise EngineCrashed(self.what, child.reap())
                    continue
                kind, value = child.reply(self.what, rid)
                if kind == "item":
                    if not cancelled:
                        items.put((kind, value))
                    continue
                items.put((kind, value))
                return
        except EngineCrashed as exc:
            self._crashed(child, exc)
            items.put(("crash", exc))
        finally:
            self._lock.release()


# -- the child side -------------------------------------------------------------------------
BUILT_IN = {"asr": "talker_stream.brain.asr.whisper:WhisperASR"}  # engines not found through the registry


class Hosted:
    """The engine as the child holds it: built by *kind* and *name* (the registry's, or
    BUILT_IN's), every method reachable by name, and its simple public attributes
    (sample_rate, model, language...) told to the parent once, at start."""

    def __init__(self, kind: str, name: str, *args: Any, **kwargs: Any) -> None:
        if kind in BUILT_IN:
            self.engine = _build(BUILT_IN[kind], args, kwargs)
        else:
            from . import registry

            self.engine = registry.load(kind, name)(*args, **kwargs)

    def describe(self) -> dict:
        simple = (str, int, float, bool, type(None))
        attrs = {**{k: v for k, v in vars(type(self.engine)).items() if isinstance(v, simple)},
                 **{k: v for k, v in vars(self.engine).items() if isinstance(v, simple)}}
        methods = [m for m in dir(self.engine) if not m.startswith("_") and callable(getattr(self.engine, m, None))]
        return {"attrs": {k: v for k, v in attrs.items() if not k.startswith("_")}, "methods": methods}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def _build(factory: str, args: tuple, kwargs: dict) -> Any:
    module, _, name = factory.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target(*args, **kwargs)


def _error(exc: BaseException) -> tuple[str, str]:
    return (type(exc).__name__, str(exc))


def serve(conn: Connection) -> None:
    """Build the engine from the first message, then answer requests until told to quit.

    Every reply carries its request's id: a cancel that crosses the end of its stream is
    ignored here, and a reply to a request the parent gave up on is skipped there."""
    factory, args, kwargs = conn.recv()
    try:
        engine = _build(factory, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", 0, _error(exc)))
        return
    conn.send(("ready", 0, getattr(engine, "describe", lambda: None)()))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return  # the parent went away
        op = request[0]
        if op == "quit":
            return
        if op == "cancel":
            continue  # its stream had already ended
        _, rid, method, call_args = request
        try:
            result = getattr(engine, method)(*call_args)
            if op == "call":
                conn.send(("ok", rid, result))
                continue
            try:
                for item in result:
                    if conn.poll() and conn.recv()[0] == "cancel":
                        break
                    conn.send(("item", rid, item))
            finally:
                getattr(result, "close", lambda: None)()
            conn.send(("end", rid, None))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", rid, _error(exc)))


def _main() -> None:
    fd = int(sys.argv[1])
    os.environ.setdefault("GLOG_minloglevel", "2")
    niceness = int(os.environ.pop("TALKER_WORKER_NICE", "0") or 0)
    if niceness:  # this engine yields the CPU to the ones on the avatar's critical path
        os.nice(niceness)
    conn = Connection(fd)
    try:
        serve(conn)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the parent is gone: nothing to answer
    finally:
        conn.close()


if __name__ == "__main__":
    _main()
