"""Sessions spread over a Ray cluster: `talker-stream serve --ray ADDRESS`.

The front door (the web app, one process) keeps the cap and the signalling; each session is
a Ray actor that Ray places on a node with CPU to spare (``[serve] session_cpus``, the share
one speaking session took in bench/sessions.py). The actor runs the avatar, its encoders and
its own peer connection, so the front door relays only the SDP: the answer comes from the
node that runs the session and media flows straight between that node and the browser.

The heavy engines are not in the actors: configure them as services (``[llm]``, ``[asr]``,
``[tts]`` engine = "openai"), e.g. ``talker-stream engines`` on a GPU box, vLLM, or a Ray
Serve deployment behind the same APIs. A node that dies ends only its own sessions: the
front door notices on the next call to each actor (the caption stream polls every half
second), drops them, and their pages start a new session, which Ray puts on a live node.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import threading

from .sessions import Session, SharedEngines

log = logging.getLogger(__name__)

ACTOR_CALLS = 8  # calls one session actor serves at once (caption polls, questions, stats, the end)


class SessionHost:
    """The actor: one session, its own event loop on a thread (aiortc needs one)."""

    def __init__(self, settings, address: str) -> None:
        import ray

        from . import sessions

        sessions.NODE = ray.get_runtime_context().get_node_id()[:8]
        sys.setswitchinterval(sessions.SWITCH_INTERVAL_S)  # the session's threads and Ray's share one interpreter
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="session-loop", daemon=True).start()
        self.engines = SharedEngines.open(settings)  # clients of the engine services: light
        self.session = Session(self.engines, self.loop, address)
        self.gone: str | None = None

    def offer(self, sdp: str, config) -> tuple[str, str]:
        async def gone(why: str) -> None:
            self.gone = why

        future = asyncio.run_coroutine_threadsafe(self.session.connect(sdp, config, gone), self.loop)
        return self.session.id, future.result(30)

    def ask(self, text: str) -> None:
        self.session.ask(text)

    def interrupt(self) -> None:
        self.session.interrupt()

    def next_events(self, timeout: float) -> list[dict]:
        events = self.session.next_events(timeout)
        if self.gone and not any(e.get("end") for e in events):
            events.append({"end": True, "why": self.gone})
        return events

    def stats(self) -> dict:
        return self.session.stats()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.session.aclose(), self.loop).result(20)
        self.engines.close()


class RemoteSession:
    """The front door's handle on a session actor: the interface the web app uses."""

    def __init__(self, actor, sid: str, address: str) -> None:
        import time

        self.actor, self.id, self.address = actor, sid, address
        self.created = self.last_active = time.monotonic()
        self.closed = threading.Event()
        self.watchers = 0
        self.asked = 0
        self._stats: dict = {"id": sid[:6]}

    def _get(self, ref, timeout: float = 30.0):
        import ray

        try:
            return ray.get(ref, timeout=timeout)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            self.closed.set()  # its node died: the session is over
            raise

    def ask(self, text: str) -> None:
        import time

        self.last_active = time.monotonic()
        self.asked += 1
        self._get(self.actor.ask.remote(text))

    def interrupt(self) -> None:
        self._get(self.actor.interrupt.remote())

    def check(self) -> None:
        """Is the actor (its node) still there? Sets ``closed`` when not."""
        try:
            self._get(self.actor.stats.remote(), 10)
        except Exception:  # noqa: BLE001 - any failure to answer: gone
            self.closed.set()

    def next_events(self, timeout: float = 0.5) -> list[dict]:
        try:
            events = self._get(self.actor.next_events.remote(timeout), timeout + 10)
        except Exception:  # noqa: BLE001 - the actor is gone: tell the page
            return [{"end": True, "why": "its node went away"}]
        if any(e.get("end") for e in events):
            self.closed.set()
        return events

    def stats(self) -> dict:
        try:
            self._stats = self._get(self.actor.stats.remote(), 5)
        except Exception:  # noqa: BLE001 - last known numbers
            pass
        return {**self._stats, "asked": self.asked}

    async def aclose(self) -> None:
        import ray

        self.closed.set()
        try:
            await asyncio.wait_for(self.actor.close.remote(), 20)
        except Exception:  # noqa: BLE001 - dead already
            pass
        ray.kill(self.actor, no_restart=True)


class RaySessions:
    """Makes each session an actor placed by Ray."""

    def __init__(self, settings, address: str) -> None:
        import ray

        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self.settings = settings
        # a threaded actor: the page's caption poll waits up to half a second in the actor, and
        # a question, an interrupt or the end must not queue behind it (one call at a time is
        # Ray's default)
        self.actor_class = ray.remote(num_cpus=settings.serve.session_cpus, max_restarts=0,
                                      max_concurrency=ACTOR_CALLS)(SessionHost)

    async def create(self, address: str, offer: str, config, on_gone) -> tuple[RemoteSession, str]:
        actor = self.actor_class.remote(self.settings, address)
        try:
            sid, answer = await actor.offer.remote(offer, config)
        except BaseException:
            import ray

            ray.kill(actor, no_restart=True)
            raise
        return RemoteSession(actor, sid, address), answer

    def alive(self) -> bool:
        import ray

        return ray.is_initialized()


def check_engines_are_services(settings) -> None:
    """In a cluster every session would otherwise load its own models: refuse that."""
    from ..errors import ConfigError

    local = [name for name, engine in (("llm", settings.llm.engine), ("asr", settings.asr.engine),
                                       ("tts", settings.tts.engine)) if engine != "openai"]
    if local:
        raise ConfigError(f"serve --ray runs each session on some node of the cluster: set [{'], ['.join(local)}] "
                          'engine = "openai" and point their base_url at your engine services (for example '
                          "`talker-stream engines` on a GPU box), so no session loads its own models")
