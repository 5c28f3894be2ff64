"""`talker-stream serve`: a small web app where each visitor talks to an avatar of their own.

Signalling is WHEP: POST an SDP offer to ``/whep``, get ``201 Created`` with the answer and
a session URL in ``Location``; DELETE that URL to end. An offer that also *sends* audio (the
visitor's microphone) makes a two-way session; one that only receives is a viewer, so any
WHEP player can pull the avatar. Next to the media, the page uses ``POST {session}/ask`` for
typed questions and ``GET {session}/events`` (server-sent events) for captions.

Loopback-only by default. Bound to another address, creating a session needs the invite
token (``[serve] token_env``). STUN/TURN servers come from ``[serve] ice_servers`` with TURN
credentials from the environment (ice.py); the page fetches its RTCConfiguration from
``GET /ice`` (behind the same invite check) before it makes its peer connection.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import sys
from importlib.resources import files

from . import ice
from .sessions import SWITCH_INTERVAL_S, Busy, NoRelay, Session, Sessions, SharedEngines, blocking, sse

log = logging.getLogger(__name__)

MAX_SDP = 64 * 1024
MAX_ASK_CHARS = 2000
RETRY_AFTER_S = 30
REAPER_PERIOD_S = 2.0
PAGE_GONE_S = 3.0  # a page's event stream down this long: the page is gone


def _loopback(host: str) -> bool:
    from . import _is_loopback

    return _is_loopback(host)


class WebApp:
    """The aiohttp application and the sessions it holds."""

    def __init__(self, settings, engines: SharedEngines | None, maker=None) -> None:
        cfg = settings.serve
        self.settings = settings
        self.cfg = cfg
        self.engines = engines
        self.sessions = Sessions(engines, cfg.max_sessions, cfg.per_address, cfg.idle_timeout)
        self.maker = maker or LocalSessions(engines)
        self.token = invite_token(cfg)
        self.open_to_all = not _loopback(cfg.host)
        self._reaper: asyncio.Task | None = None

    # -- app -------------------------------------------------------------------------------
    def app(self):
        from aiohttp import web

        app = web.Application(client_max_size=MAX_SDP)
        app.router.add_get("/", self.page)
        app.router.add_get("/ice", self.ice_config)
        app.router.add_post("/whep", self.whep)
        app.router.add_delete("/whep/{sid}", self.end)
        app.router.add_post("/whep/{sid}/close", self.end)  # navigator.sendBeacon from a closing page
        app.router.add_post("/whep/{sid}/ask", self.ask)
        app.router.add_post("/whep/{sid}/interrupt", self.interrupt)
        app.router.add_get("/whep/{sid}/events", self.events)
        app.router.add_get("/api/sessions", self.stats)
        app.on_startup.append(self._start_reaper)
        app.on_shutdown.append(self._shutdown)
        return app

    async def page(self, request):
        from aiohttp import web

        html = files("talker_stream.server").joinpath("session.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html")

    async def stats(self, request):
        from aiohttp import web

        return web.json_response(self.sessions.stats())

    # -- sessions --------------------------------------------------------------------------
    def _authorised(self, request) -> bool:
        if not self.open_to_all:
            return True
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or request.query.get("token", "")
        return bool(given) and hmac.compare_digest(given, self.token or "")

    async def ice_config(self, request):
        """The page's RTCConfiguration: ICE servers with fresh TURN credentials, and the
        transport policy. Never cached, never logged."""
        from aiohttp import web

        if not self._authorised(request):
            return web.Response(status=401, text="an invite token is needed to start a session\n")
        return web.json_response(ice.browser_config(self.cfg), headers={"Cache-Control": "no-store"})

    async def whep(self, request):
        from aiohttp import web

        if not self._authorised(request):
            return web.Response(status=401, text="an invite token is needed to start a session\n")
        if request.content_type != "application/sdp":
            return web.Response(status=415, text="send the SDP offer as application/sdp\n")
        offer = await request.text()
        problem = _check_offer(offer)
        if problem:
            return web.Response(status=400, text=f"bad SDP offer: {problem}\n")
        address = request.remote or "?"
        try:
            self.sessions.reserve(address)
        except Busy as exc:
            return web.Response(status=503, text=f"busy: {exc}\n", headers={"Retry-After": str(RETRY_AFTER_S)})
        session = None
        try:
            session, answer = await self.maker.create(address, offer, ice.server_config(self.cfg), self._close)
            self.sessions.add(session)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the visitor gets a reason and nothing is kept
            log.warning("a session could not start: %s", exc)
            if session is not None:
                await session.aclose()
            status = 400 if "SDP" in str(exc) or isinstance(exc, ValueError) else 502 if isinstance(exc, NoRelay) else 500
            return web.Response(status=status, text=f"could not start a session: {exc}\n")
        finally:
            self.sessions.release(address)
        log.info("session %s started for %s (%d live)", session.id[:6], address, len(self.sessions.all()))
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/whep/{session.id}"})

    def _session(self, request) -> Session:
        from aiohttp import web

        s = self.sessions.get(request.match_info["sid"])
        if s is None:
            raise web.HTTPNotFound(text="no such session (it ended)\n")
        return s

    async def end(self, request):
        from aiohttp import web

        sid = request.match_info["sid"]
        if self.sessions.get(sid) is None:
            return web.Response(status=404, text="no such session\n")
        await self._close(sid, "ended by the page")
        return web.Response(status=200, text="ended\n")

    async def ask(self, request):
        from aiohttp import web

        session = self._session(request)
        try:
            text = (await request.json()).get("text", "")
        except ValueError:
            return web.Response(status=400, text='send {"text": "..."}\n')
        text = " ".join(str(text).split())
        if not text:
            return web.Response(status=400, text="the question is empty\n")
        if len(text) > MAX_ASK_CHARS:
            return web.Response(status=413, text=f"a question has at most {MAX_ASK_CHARS} characters\n")
        await blocking(session.ask, text)
        return web.json_response({"asked": text})

    async def interrupt(self, request):
        from aiohttp import web

        self._session(request).interrupt()
        return web.json_response({"interrupted": True})

    async def events(self, request):
        from aiohttp import web

        session = self._session(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        session.watchers += 1
        try:
            while not session.closed.is_set():
                events = await blocking(session.next_events, 0.5)
                # a heartbeat when there is nothing to say: a page that vanished is noticed here
                await resp.write(b"".join(sse(e) for e in events) if events else b": ping\n\n")
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            session.watchers -= 1
            if not session.watchers and not session.closed.is_set():
                loop.create_task(self._close_unless_back(session))
        return resp

    async def _close_unless_back(self, session: Session) -> None:
        """The page's event stream broke (the tab closed, the browser died): end the session
        unless the page reconnects within the grace period (a reloading EventSource does)."""
        await asyncio.sleep(PAGE_GONE_S)
        if not session.watchers:
            await self._close(session.id, "the page went away")

    async def _close(self, sid: str, why: str) -> None:
        session = self.sessions.pop(sid)
        if session is None:
            return
        log.info("session %s ended: %s", sid[:6], why)
        await session.aclose()

    async def _start_reaper(self, app) -> None:
        async def reap() -> None:
            while True:
                await asyncio.sleep(REAPER_PERIOD_S)
                for s in self.sessions.idle():
                    await self._close(s.id, f"idle for {self.sessions.idle_timeout:.0f} s")
                for s in self.sessions.all():  # a cluster session whose node died
                    check = getattr(s, "check", None)
                    if check is not None:
                        await blocking(check)
                    if s.closed.is_set():
                        await self._close(s.id, "it ended where it ran")

        self._reaper = asyncio.get_running_loop().create_task(reap())

    async def _shutdown(self, app) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for s in self.sessions.all():
            await self._close(s.id, "the server is stopping")


def invite_token(cfg) -> str | None:
    """The invite token from the environment; required when the app is reachable from other
    machines (checked before any engine loads)."""
    token = os.environ.get(cfg.token_env) or None
    if not _loopback(cfg.host) and not token:
        from ..errors import ConfigError

        raise ConfigError(f"[serve] host = {cfg.host!r} is reachable from other machines: set ${cfg.token_env} "
                          "to an invite token (visitors need it to start a session), or bind to 127.0.0.1")
    return token


class LocalSessions:
    """Sessions in this process, on this event loop, sharing this process's engines."""

    def __init__(self, engines: SharedEngines) -> None:
        self.engines = engines

    async def create(self, address: str, offer: str, config, on_gone) -> tuple[Session, str]:
        loop = asyncio.get_running_loop()
        session = await blocking(Session, self.engines, loop, address)
        try:
            answer = await session.connect(offer, config, lambda why: on_gone(session.id, why))
        except BaseException:
            await session.aclose()
            raise
        return session, answer


def _check_offer(sdp: str) -> str | None:
    """Why an offer cannot make a session (before anything is allocated for it)."""
    if not sdp.startswith("v=0"):
        return "it does not start with v=0"
    if "m=video" not in sdp and "m=audio" not in sdp:
        return "it has no audio or video section"
    media = sdp.lower()
    if "m=video" in sdp and not any(c in media for c in ("vp8/90000", "h264/90000")):
        return "the video section offers neither VP8 nor H.264"
    if "m=audio" in sdp and "opus/48000" not in media:
        return "the audio section does not offer Opus"
    return None


async def _ice_gathered(pc, timeout: float = 5.0) -> None:
    """WHEP answers once, without trickle: wait for candidate gathering to finish."""
    deadline = asyncio.get_running_loop().time() + timeout
    while pc.iceGatheringState != "complete" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)


def serve(settings, ray_address: str | None = None) -> None:
    """Run the web app until interrupted (the CLI's ``serve``); with *ray_address*, each
    session is an actor on that Ray cluster (server/cluster.py)."""
    from aiohttp import web

    import socket

    from ..errors import TalkerError

    cfg = settings.serve
    invite_token(cfg)
    ice.check_credentials(cfg)
    sys.setswitchinterval(SWITCH_INTERVAL_S)  # many sessions' threads share one interpreter
    try:
        sock = socket.create_server((cfg.host, cfg.port))
    except OSError as exc:
        raise TalkerError(f"cannot serve sessions on {cfg.host}:{cfg.port}: {exc}; set [serve] port") from None
    if ray_address:
        from .cluster import RaySessions

        engines, maker = None, RaySessions(settings, ray_address)
    else:
        engines, maker = SharedEngines.open(settings), None
    try:
        app = WebApp(settings, engines, maker)
        host, port = sock.getsockname()[:2]
        print(f"sessions: http://{host}:{port}/ (at most {cfg.max_sessions} at once)", flush=True)
        log.info("%s", ice.describe(cfg))
        web.run_app(app.app(), sock=sock, print=None, handle_signals=True)
    finally:
        if engines is not None:
            engines.close()
