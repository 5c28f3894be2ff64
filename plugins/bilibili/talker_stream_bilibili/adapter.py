"""Bilibili live danmaku in, over the room's websocket (protocol: protocol.py; set-up: web.py).

Priorities: a Super Chat (醒目留言) is paid with its words, so it is a priority question.
A gift or a guard membership carries no words, so it is not a question; it is logged, and
the same viewer's next danmaku within ``gift_boost_seconds`` is answered as paid, labelled
with what they gave ("¥10 in gifts"). Free (silver) gifts raise nothing. A room admin
(``info[2][2]``) or the streamer counts as a moderator.

Logged out, Bilibili masks viewers' names and sends uid 0; copying your browser's cookie
into the variable named by ``cookie_env`` gives real names. The cookie never reaches a
log line. Replying in the danmaku is not done: it needs that cookie's CSRF token and
is limited to about 20 characters a line, too short for an answer.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from talker_stream.plugin import ChatMessage
from talker_stream.plugin import AsyncAdapter, Backoff, RecentSet
from talker_stream.plugin import opt

from . import protocol, web
from .protocol import Danmaku, Paid

log = logging.getLogger(__name__)

MAX_TEXT = 2000
MAX_BOOSTS = 1000


@dataclass
class BilibiliOptions:
    room_id: int = opt(0, 0)  # the number in live.bilibili.com/ROOM_ID (a short id is resolved)
    cookie_env: str = "BILIBILI_COOKIE"  # optional: environment variable with your browser cookie (real viewer names)
    live_api: str = "https://api.live.bilibili.com"
    web_api: str = "https://api.bilibili.com"
    server: str = ""  # danmaku websocket URL; empty: the servers getDanmuInfo lists
    heartbeat_seconds: float = opt(30.0, 0.05, 60.0)  # the server drops a client silent for 60 s
    gift_boost_seconds: float = opt(60.0, 0.0, 3600.0)  # a paid gift makes the giver's next danmaku within this paid
    reconnect_seconds: float = opt(1.0, 0.05, 60.0)  # first retry after a drop; doubles up to 60 s
    timeout: float = opt(15.0, 1.0, 120.0)  # per HTTP request and websocket handshake


class BilibiliAdapter(AsyncAdapter):
    name = "bilibili"
    Options = BilibiliOptions
    logger = log

    def __init__(self, options: BilibiliOptions | None = None, **_: Any) -> None:
        super().__init__()
        self.options = options or BilibiliOptions()
        self.connects = 0
        self.popularity = 0
        self.room = self.options.room_id
        self._owner = ""
        self._boosts: OrderedDict[str, tuple[float, float]] = OrderedDict()  # uid -> (CNY, when)
        self._super_chats = RecentSet(1024)
        self._told_reply = False
        self._authed = False  # this connection's login was accepted (later auth replies are noise)
        self.bad_commands = 0  # commands skipped because reading them failed

    @classmethod
    def check(cls) -> str | None:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            return "aiohttp is not installed: pip install -e plugins/bilibili"
        return None

    def reply(self, message: ChatMessage, text: str) -> bool:
        if not self._told_reply:
            self._told_reply = True
            log.info("bilibili: answers are spoken, not sent as danmaku (sending needs a logged-in cookie "
                     "and CSRF token, and a danmaku holds about 20 characters)")
        return False

    # -- connection -----------------------------------------------------------------------
    async def serve(self) -> None:
        import aiohttp

        if self.options.room_id <= 0:
            self.say("no room", logging.ERROR, "set room_id in [adapters.bilibili] (live.bilibili.com/ROOM_ID)")
            await self.sleep(1e9)
            return
        cookies = web.parse_cookie(os.environ.get(self.options.cookie_env, "") if self.options.cookie_env else "")
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        backoff = Backoff(self.options.reconnect_seconds, 60.0)
        async with aiohttp.ClientSession(timeout=timeout, headers=web.HEADERS) as session:
            while not self.stopping:
                try:
                    await self._connect(session, cookies, backoff)
                    self.say("disconnected, reconnecting", logging.WARNING)
                except (OSError, asyncio.TimeoutError, aiohttp.ClientError, aiohttp.WSServerHandshakeError) as exc:
                    self.say("connection failed, retrying", logging.WARNING, type(exc).__name__)
                if await self.sleep(backoff.next()):
                    return

    async def _connect(self, session: Any, cookies: dict, backoff: Backoff) -> None:
        o = self.options
        token, servers = await self._token(session, cookies)
        url = o.server or servers[self.connects % len(servers)]
        self.connects += 1
        protover = 3 if protocol.brotli_available() else 2
        uid = int(cookies["DedeUserID"]) if cookies.get("DedeUserID", "").isdigit() and token else 0
        async with session.ws_connect(url, heartbeat=None, autoping=True, max_msg_size=4 << 20,
                                      timeout=_ws_timeout(o.timeout)) as ws:
            self._authed = False
            await ws.send_bytes(protocol.auth_packet(self.room, token, uid, cookies.get("buvid3", ""), protover))
            beats = asyncio.create_task(self._heartbeats(ws))
            try:
                while not self.stopping:
                    msg = await ws.receive(timeout=2 * o.heartbeat_seconds + 30)
                    if msg.type.name == "BINARY":
                        if not self._handle(msg.data, backoff):
                            return
                    elif msg.type.name in ("CLOSE", "CLOSING", "CLOSED", "ERROR"):
                        return
            finally:
                beats.cancel()

    async def _token(self, session: Any, cookies: dict) -> tuple[str, list[str]]:
        """(danmaku token, servers); on failure an empty token and the public server, logged."""
        o = self.options
        live, webapi = o.live_api.rstrip("/"), o.web_api.rstrip("/")
        try:
            self.room, self._owner = await web.room_init(session, live, o.room_id)
            if "buvid3" not in cookies:
                cookies["buvid3"] = await web.buvid3(session, webapi)
            keys = await web.wbi_keys(session, webapi, cookies)
            token, servers, complaint = await web.danmu_info(session, live, self.room, keys, cookies)
        except (ValueError, TypeError) as exc:
            token, servers, complaint = "", [], type(exc).__name__
        if not token:
            self.say("no danmaku token", logging.WARNING, f"getDanmuInfo: {complaint}; trying without one")
        return token, servers or [web.DEFAULT_SERVER]

    async def _heartbeats(self, ws: Any) -> None:
        packet = protocol.heartbeat_packet()
        try:
            while not ws.closed:
                await ws.send_bytes(packet)
                await asyncio.sleep(self.options.heartbeat_seconds)
        except (OSError, RuntimeError):  # the socket went away under us: the reader notices and reconnects
            return

    # -- packets ------------------------------------------------------------------------
    def _handle(self, data: bytes, backoff: Backoff) -> bool:
        """Act on one websocket message; False when the connection should be dropped."""
        for packet in protocol.unpack(data):
            if packet.op == protocol.AUTH_REPLY and not self._authed:
                code = protocol.auth_code(packet.body)
                if code != 0:
                    self.say("the danmaku server refused the login", logging.ERROR, f"code {code}")
                    return False
                backoff.reset()
                self._authed = True
                self.say("connected", detail=f"room {self.room}")
            elif packet.op == protocol.HEARTBEAT_REPLY:
                self.popularity = protocol.popularity(packet.body)
            elif packet.op == protocol.COMMAND:
                try:
                    cmd = protocol.command(packet.body)
                    if cmd is not None:
                        self._command(cmd)
                except Exception as exc:  # noqa: BLE001 - one bad command is skipped, never the connection
                    self._bad_command(exc)
        return True

    def _bad_command(self, exc: Exception) -> None:
        self.bad_commands += 1
        if self.bad_commands == 1:
            log.warning("bilibili: skipped a command that could not be read (%s; further ones at debug level)",
                        type(exc).__name__)
        else:
            log.debug("bilibili: skipped a command that could not be read", exc_info=exc)

    def _command(self, cmd: dict) -> None:
        event = protocol.event(cmd)
        if isinstance(event, Danmaku):
            text = " ".join(event.text.split())[:MAX_TEXT]
            if not text:
                return
            cny = self._boost(event.uid)
            self.emit(self._message(event.uid, event.name, text, cny, f"¥{cny:g} in gifts" if cny else "",
                                    moderator=event.admin))
        elif isinstance(event, Paid):
            if event.text.strip():  # a Super Chat
                if event.id and not self._super_chats.add(event.id):
                    return
                text = " ".join(event.text.split())[:MAX_TEXT]
                self.emit(self._message(event.uid, event.name, text, event.cny, event.label))
            elif event.cny > 0:
                log.info("bilibili: %s sent %s", event.name or "someone", event.label)
                self._remember_gift(event.uid, event.cny)

    def _message(self, uid: str, name: str, text: str, cny: float, label: str, moderator: bool = False) -> ChatMessage:
        return ChatMessage(platform="bilibili", channel=str(self.room), author=name[:100] or "someone", text=text,
                           author_id=uid, paid=cny, paid_label=label,
                           moderator=moderator or bool(uid and uid == self._owner))

    def _remember_gift(self, uid: str, cny: float) -> None:
        if not uid or self.options.gift_boost_seconds <= 0:
            return
        total = self._boost(uid, consume=False) + cny
        self._boosts.pop(uid, None)
        self._boosts[uid] = (total, time.monotonic())
        while len(self._boosts) > MAX_BOOSTS:
            self._boosts.popitem(last=False)

    def _boost(self, uid: str, consume: bool = True) -> float:
        """CNY given by *uid* within the boost window (0 if none); consumed by their danmaku."""
        entry = self._boosts.pop(uid, None) if consume else self._boosts.get(uid)
        if entry is None or time.monotonic() - entry[1] > self.options.gift_boost_seconds:
            return 0.0
        return entry[0]


def _ws_timeout(seconds: float) -> Any:
    import aiohttp

    return aiohttp.ClientWSTimeout(ws_receive=None, ws_close=min(5.0, seconds))
