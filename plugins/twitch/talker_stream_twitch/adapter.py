"""Twitch chat in (and, when configured, answers out) over IRC with TLS.

Why IRC rather than EventSub: it needs no registered application, no public callback URL
and no extra library, reads a channel anonymously (justinfan12345) when no token is set,
and carries everything the question queue needs in its IRCv3 tags (display name, user
id, badges, bits, message id for threaded replies).

``run()`` owns an asyncio loop on the caller's thread (AsyncAdapter's plumbing: stop()
cancels whatever is awaited, a connect or a read). Each connection is one session:
log in, join, read; a drop, a server RECONNECT or a silent link (no answer to our PING)
ends it, and the next one starts after an exponential, jittered, capped back-off. The
answers go out from a second task in that loop under a sliding-window budget, so nothing
``reply()`` does can block reading chat, and nothing a chat line holds can block replies.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from talker_stream.plugin import ChatMessage
from talker_stream.plugin import AsyncAdapter, Backoff
from talker_stream.plugin import opt
from talker_stream.plugin import ConfigError

from .chat import MAX_CHAT_CHARS, TwitchHandle, chunks, is_privileged, outgoing_text, to_chat_message
from .irc import IrcMessage, LineBuffer, format_line, parse_line
from .ratelimit import SendBudget

log = logging.getLogger(__name__)

ANONYMOUS = "justinfan12345"  # Twitch's read-only login: any justinfanNNNN, no token
CONNECT_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
STABLE_SECONDS = 10.0  # a session that joined and lasted this long resets the back-off
MAX_SLOW_SECONDS = 3600.0  # a ROOMSTATE slow mode beyond this is nonsense (Twitch allows 120 s)
REPLY_MAX_AGE = 120.0  # an answer still unsent after this long is stale: dropped, logged
DUPLICATE_SECONDS = 30.0  # Twitch drops a non-moderator's repeat of its last line within this
DUPLICATE_MARK = " \U000e0000"  # an invisible tag character that makes a repeat distinct
_CHANNEL = re.compile(r"^#?[A-Za-z0-9_]{1,50}$")
RECONNECT = "the server asked to reconnect"


@dataclass
class TwitchOptions:
    channels: list = opt([])  # channels to read, e.g. ["yourchannel"]
    nick: str = ""  # the bot account's login (the token's owner); unused without a token
    token_env: str = "TWITCH_OAUTH_TOKEN"  # environment variable with the OAuth token; unset = read-only
    reply_in_chat: bool = False  # answer in chat too (needs chat:edit); [chat] reply_in_chat also turns it on
    host: str = "irc.chat.twitch.tv"
    port: int = opt(6697, 1, 65535)
    tls: bool = True
    ca_file: str = ""  # extra CA certificates (PEM) to trust; empty = the system's
    messages_per_window: int = opt(20, 1, 10000)  # Twitch: 20 per 30 s where the bot is a plain user
    privileged_messages_per_window: int = opt(100, 1, 10000)  # 100 per 30 s as moderator, VIP or broadcaster
    window_seconds: float = opt(30.0, 0.1, 3600)
    channel_gap_seconds: float = opt(1.0, 0, 600)  # Twitch's minimum slow mode for non-moderators
    reply_queue: int = opt(10, 1, 1000)  # chat lines waiting for the budget; beyond, answers are dropped (logged)
    reconnect_seconds: float = opt(1.0, 0.01, 60)  # first retry; doubles per failure, with jitter
    reconnect_max_seconds: float = opt(60.0, 0.1, 3600)
    keepalive_seconds: float = opt(60.0, 1, 3600)  # silence before we PING; no answer in as long again = reconnect


@dataclass
class _Line:
    channel: str
    text: str
    parent: str  # the message id to thread under, "" when unknown
    queued: float


def _channels(names: list) -> list[str]:
    bad = [n for n in names if not isinstance(n, str) or not _CHANNEL.match(n)]
    if bad or not names:
        raise ConfigError(
            f"adapters.twitch.channels: {'bad channel name(s) ' + repr(bad) if bad else 'no channel given'}; "
            'list the Twitch channel logins to read, e.g. channels = ["yourchannel"]')
    return list(dict.fromkeys(n.lstrip("#").lower() for n in names))


def _tls_context(o: TwitchOptions, base_dir: Path | None) -> ssl.SSLContext:
    ca_file = Path(base_dir or ".") / o.ca_file if o.ca_file else None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"adapters.twitch.ca_file: cannot use {ca_file}: {exc}") from None


class TwitchAdapter(AsyncAdapter):
    """The ``twitch`` chat adapter (contract: talker_stream.audience.adapters)."""

    name = "twitch"
    Options = TwitchOptions
    logger = log

    def __init__(self, options: TwitchOptions | None = None, *, reply_in_chat: bool | None = None,
                 base_dir: Path | None = None, environ: dict | None = None) -> None:
        super().__init__()
        self.options = o = options or TwitchOptions()
        self.channels = _channels(o.channels)
        env = os.environ if environ is None else environ
        token = env.get(o.token_env, "").strip() if o.token_env else ""
        self._token = token[6:] if token.lower().startswith("oauth:") else token
        if self._token and not o.nick:
            raise ConfigError(f"adapters.twitch.nick: {o.token_env} is set, so nick must be the login of the "
                              "account the token belongs to (Twitch refuses a token under another name)")
        self.nick = o.nick.lower() if self._token else ANONYMOUS
        wanted = bool(o.reply_in_chat or reply_in_chat)
        self.replies = wanted and bool(self._token)
        if wanted and not self._token:
            log.warning("twitch: answers in chat need a token in %s (scopes chat:read chat:edit); reading only",
                        o.token_env)
        self._ssl = _tls_context(o, base_dir) if o.tls else None
        self._budget = SendBudget(o.messages_per_window, o.privileged_messages_per_window,
                                  o.window_seconds, o.channel_gap_seconds)
        self._out: deque[_Line] = deque()  # bounded by reply_queue in reply()
        self._lock = threading.Lock()
        self._reply_evt: asyncio.Event | None = None  # made in serve(), on the adapter's loop
        self._writer: asyncio.StreamWriter | None = None
        self._privileged: set[str] = set()  # channels where the bot is moderator, VIP or broadcaster
        self._last_text: dict[str, tuple[str, float]] = {}
        self._tags = False  # the server ACKed twitch.tv/tags
        self._warned: set[str] = set()  # one-time warnings already written
        self._failures = 0  # sessions ended since the last one that joined
        self.sent = 0  # chat lines sent (for status and tests)
        self.dropped_replies = 0
        self.bad_lines = 0

    @property
    def waiting(self) -> int:
        """Chat lines queued for the send budget."""
        return len(self._out)

    # --- the contract (run and stop: AsyncAdapter) --------------------------------------
    def reply(self, message: ChatMessage, text: str) -> bool:
        """Queue the answer as chat lines; never waits. False when answers are off, the
        message is not from one of our channels, or the queue is full (logged)."""
        handle = message.handle
        if not self.replies or not isinstance(handle, TwitchHandle) or handle.channel not in self.channels:
            return False
        # 30 characters of room for an "@login " prefix (logins have at most 25) and a repeat mark
        pieces = [p for p in map(outgoing_text, chunks(outgoing_text(text), MAX_CHAT_CHARS - 30)) if p]
        if not pieces:
            return False
        if not handle.msg_id and handle.login:  # no threading on this server: say whom we answer
            pieces[0] = f"@{handle.login} {pieces[0]}"
        now = time.monotonic()
        with self._lock:
            if len(self._out) + len(pieces) > self.options.reply_queue:
                self.dropped_replies += 1
                log.warning("twitch: answer to %s dropped: %d chat lines already wait for the send budget",
                            message.author, len(self._out))
                return False
            self._out.extend(_Line(handle.channel, p, handle.msg_id, now) for p in pieces)
        loop, event = self._loop, self._reply_evt
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)
        return True

    async def serve(self) -> None:
        o = self.options
        self._reply_evt = asyncio.Event()
        self.say("connecting", detail=f"{o.host}:{o.port}{' with TLS' if o.tls else ''} as {self.nick}"
                 + ("" if self._token else ", anonymous and read-only"))
        backoff = Backoff(o.reconnect_seconds, o.reconnect_max_seconds)
        while not self.stopping:
            started = time.monotonic()
            reason, joined = await self._session()
            stable = joined and time.monotonic() - started >= STABLE_SECONDS
            if stable:
                backoff.reset()
            # a RECONNECT ending a session that had joined and stayed up is answered at once; any
            # other end (a server that answers every connection with RECONNECT too) advances the back-off
            delay = 0.0 if reason == RECONNECT and stable else backoff.next() * random.uniform(0.5, 1)
            self._failures += 1
            # one line per state change (say() drops repeats); each retry at debug level
            self.say("disconnected, reconnecting with back-off", logging.INFO if reason == RECONNECT
                     else logging.WARNING, reason)
            log.debug("twitch: retry %d in %.2f s (%s)", self._failures, delay, reason)
            if await self.sleep(delay):
                return

    # --- one connection ---------------------------------------------------------------
    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    async def _session(self) -> tuple[str, bool]:
        """One connection, from connect to its end: why it ended, and whether it joined."""
        o = self.options
        ctx = self._ssl
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(o.host, o.port, ssl=ctx,
                                                               server_hostname=o.host if ctx else None)
        except (OSError, TimeoutError) as exc:
            return f"cannot connect ({exc or type(exc).__name__})", False
        self._writer = writer
        self._tags = False
        self._privileged.clear()
        joined = asyncio.Event()
        tasks: list[asyncio.Future] = []
        try:
            await self._send("CAP REQ :twitch.tv/tags twitch.tv/commands",
                             *([f"PASS oauth:{self._token}"] if self._token else []),
                             f"NICK {self.nick}",
                             f"USER {self.nick} 0 * :{self.nick}")  # plain IRC needs it; Twitch ignores it
            tasks += [asyncio.ensure_future(self._read(reader, joined)), asyncio.ensure_future(self._sender(joined))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            reason = next(self._why(t) for t in tasks if t in done)
        except (OSError, TimeoutError) as exc:
            reason = f"connection lost ({exc or type(exc).__name__})"
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._writer = None
            if self.stopping:  # a polite close; otherwise the peer is gone or going (TLS would wait for it)
                writer.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
            writer.transport.abort()
        return reason, joined.is_set()

    @staticmethod
    def _why(task: asyncio.Task) -> str:
        exc = task.exception()
        if exc is None:
            return task.result()
        if isinstance(exc, (OSError, TimeoutError, EOFError)):
            return f"connection lost ({exc or type(exc).__name__})"
        log.error("twitch: unexpected error in the connection", exc_info=exc)
        return f"unexpected error ({type(exc).__name__})"

    async def _send(self, *lines: str) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectionError("not connected")
        for line in lines:
            log.debug("twitch >> %s", "PASS oauth:***" if line.startswith("PASS ") else line)
        writer.write(b"".join(line.encode("utf-8") + b"\r\n" for line in lines))
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()

    async def _read(self, reader: asyncio.StreamReader, joined: asyncio.Event) -> str:
        # asyncio.timeout, never wait_for, around awaits in a loop: on Python 3.11 wait_for
        # swallows a cancel that lands as its read completes, and stop() would hang forever
        lines = LineBuffer()
        pinged = False
        while not self.stopping:
            try:
                async with asyncio.timeout(self.options.keepalive_seconds):
                    data = await reader.read(65536)
            except TimeoutError:
                if pinged:
                    return "no answer to our PING: the link is dead"
                pinged = True
                await self._send("PING :tmi.twitch.tv")
                continue
            if not data:
                return "the server closed the connection"
            pinged = False
            dropped = lines.dropped
            for line in lines.feed(data):
                try:
                    msg = parse_line(line)
                    end = None if msg is None else await self._handle(msg, joined)
                except (OSError, TimeoutError, EOFError):
                    raise  # the connection itself failed (a PONG or JOIN not sent): the session ends
                except Exception as exc:  # noqa: BLE001 - one line we cannot read costs that line only
                    msg, end = None, None
                    log.debug("twitch: could not handle %.200r", line, exc_info=exc)
                if msg is None:
                    self.bad_lines += 1
                    self._warn_once("malformed", "twitch: dropped a line that could not be read: %.80r (further "
                                    "ones only at debug level)", line)
                    log.debug("twitch: dropped: %.200r", line)
                    continue
                if end:
                    return end
            if lines.dropped > dropped:
                self.bad_lines += lines.dropped - dropped
                self._warn_once("overlong", "twitch: dropped a line over %d bytes (further ones silently)",
                                lines.max_bytes)
        return "stopped"

    async def _handle(self, msg: IrcMessage, joined: asyncio.Event) -> str | None:
        """One line from the server; returns why the session must end, if it must."""
        cmd, p = msg.command, msg.params
        if cmd in ("PRIVMSG", "USERNOTICE"):
            chat = to_chat_message(msg)
            if chat is not None and chat.handle.login != self.nick:
                self.emit(chat)
        elif cmd == "PING":
            await self._send(format_line("PONG", *(p or ["tmi.twitch.tv"])))
        elif cmd == "RECONNECT":
            return RECONNECT
        elif cmd == "CAP" and len(p) >= 2 and p[1] in ("ACK", "NAK"):
            self._tags = p[1] == "ACK"
            if not self._tags and "nak" not in self._warned:
                self._warned.add("nak")
                log.info("twitch: %s does not offer Twitch's tags: names come from nicks, without badges or "
                         "bits", self.options.host)
            await self._send("CAP END")
        elif cmd == "001":
            await self._send("JOIN " + ",".join("#" + c for c in self.channels))
        elif cmd == "JOIN" and msg.nick.lower() == self.nick and not joined.is_set():
            joined.set()
            self.say("reading " + ", ".join("#" + c for c in self.channels),
                     detail=f"as {self.nick}, answers in chat {'on' if self.replies else 'off'}"
                     + (f", back after {self._failures} attempt(s)" if self._failures else ""))
            self._failures = 0
        elif cmd == "USERSTATE" and p:
            channel = p[0].lstrip("#").lower()
            (self._privileged.add if is_privileged(msg.tags) else self._privileged.discard)(channel)
        elif cmd == "ROOMSTATE" and p and (slow := msg.tags.get("slow", "")).isascii() and slow.isdigit():
            self._budget.slow[p[0].lstrip("#").lower()] = min(float(slow), MAX_SLOW_SECONDS)
        elif cmd == "NOTICE":
            return self._notice(msg)
        elif cmd in ("432", "433"):
            return f"the server refused the nick {self.nick!r} ({msg.text[:200]})"
        elif cmd in ("464", "ERROR"):
            return f"the server refused the login or closed ({msg.text[:200]})"
        return None

    def _notice(self, msg: IrcMessage) -> str | None:
        text = msg.text[:300]
        if "authentication failed" in text.lower() or "improperly formatted auth" in text.lower():
            log.error("twitch: login refused (%s): check that %s holds a valid token of %s with chat:read "
                      "(and chat:edit to answer)", text, self.options.token_env, self.nick)
            return "login refused"
        log.warning("twitch: notice in %s: %s [%s]", p[0] if (p := msg.params[:-1]) else "*", text,
                    msg.tags.get("msg-id", ""))
        return None

    # --- answers --------------------------------------------------------------------
    def _next_line(self) -> _Line | None:
        now = time.monotonic()
        with self._lock:
            while self._out and now - self._out[0].queued > REPLY_MAX_AGE:
                stale = self._out.popleft()
                self.dropped_replies += 1
                log.warning("twitch: an answer for #%s waited over %.0f s and was dropped", stale.channel,
                            REPLY_MAX_AGE)
            return self._out[0] if self._out else None

    async def _sender(self, joined: asyncio.Event) -> str:
        """Sends queued chat lines as the budget allows; runs for the whole session."""
        await joined.wait()
        while not self.stopping:
            line = self._next_line()
            delay = 0.0
            if line is not None:
                privileged = line.channel in self._privileged
                delay = self._budget.wait(line.channel, privileged, time.monotonic())
                if delay <= 0:
                    with self._lock:
                        self._out.popleft()
                    try:
                        await self._post(line, privileged)
                    except (OSError, TimeoutError, asyncio.CancelledError):
                        with self._lock:  # the connection went mid-send: first in line on the next one
                            self._out.appendleft(line)
                        raise
                    continue
            self._reply_evt.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay or None):
                    await self._reply_evt.wait()
        return "stopped"

    async def _post(self, line: _Line, privileged: bool) -> None:
        now = time.monotonic()
        text = line.text
        last, when = self._last_text.get(line.channel, ("", 0.0))
        if not privileged and text == last and now - when < DUPLICATE_SECONDS:
            text += DUPLICATE_MARK
        tags = {"reply-parent-msg-id": line.parent} if line.parent and self._tags else None
        self._budget.spend(line.channel, privileged, now)  # spent even if the send fails: it may have gone out
        await self._send(format_line("PRIVMSG", "#" + line.channel, text, tags=tags))
        self._last_text[line.channel] = (text, now)
        self.sent += 1
