"""YouTube Live chat in, through the YouTube Data API v3 (the message formats: messages.py).

How the chat is found: ``GET {base}/videos?part=liveStreamingDetails&id=VIDEO`` gives
``items[0].liveStreamingDetails.activeLiveChatId`` while the video is live; with an OAuth
token and no video, ``GET {base}/liveBroadcasts?part=snippet&broadcastStatus=active&broadcastType=all``
gives your own live broadcast's ``snippet.liveChatId``. Then
``GET {base}/liveChat/messages?liveChatId=ID&part=snippet,authorDetails&pageToken=T`` is
polled, waiting ``pollingIntervalMillis`` (or ``min_poll_seconds`` when that is longer,
and never under 0.5 s) between calls and following ``nextPageToken``. The adapter's first
page holds the chat's backlog, skipped by default so the avatar does not answer questions
asked before it started; after a restart it goes on from the last page token instead.

Why a floor on the polling interval: each list call costs 5 quota units and a project gets
10,000 a day by default, so honouring a 2 s interval would spend the day's quota in
about an hour. Replies (``POST {base}/liveChat/messages?part=snippet``) need an OAuth 2
access token with the youtube.force-ssl scope; an API key can only read.

Credentials travel in headers (``X-Goog-Api-Key`` or ``Authorization: Bearer``), never in
the URL, so no error message or log line can carry them.
"""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from talker_stream.plugin import ChatMessage
from talker_stream.plugin import AsyncAdapter, Backoff, RecentSet
from talker_stream.plugin import opt

from .messages import AUTH, ENDED, QUOTA, RATE, error_reason, to_message

log = logging.getLogger(__name__)

MAX_REPLY_CHARS = 200  # YouTube's limit for one chat message
MIN_POLL_SECONDS = 0.5  # whatever min_poll_seconds and the API say: never a tight polling loop


@dataclass
class YouTubeOptions:
    video_id: str = ""  # the live video (youtube.com/watch?v=VIDEO_ID); empty: your own live broadcast (OAuth)
    live_chat_id: str = ""  # skip the look-up when you already know the chat id
    api_key_env: str = "YOUTUBE_API_KEY"  # environment variable with an API key (reading only)
    oauth_token_env: str = "YOUTUBE_OAUTH_TOKEN"  # environment variable with an OAuth access token (youtube.force-ssl)
    base_url: str = "https://www.googleapis.com/youtube/v3"
    skip_backlog: bool = True  # ignore what was said before the adapter started
    min_poll_seconds: float = opt(5.0, 0.0, 600.0)  # never poll faster than this, whatever the API says (quota)
    quota_backoff_seconds: float = opt(900.0, 1.0, 86400.0)  # after quotaExceeded, try again this much later
    rejoin_seconds: float = opt(60.0, 1.0, 3600.0)  # no live chat (yet, or any more): look again this often
    reply_in_chat: bool = False  # answer in the chat too (needs the OAuth token)
    reply_min_seconds: float = opt(2.0, 0.0, 600.0)  # at most one chat reply per this many seconds
    timeout: float = opt(15.0, 1.0, 120.0)  # per HTTP request


class YouTubeAdapter(AsyncAdapter):
    """Polls one live chat, and finds the next one when a broadcast ends."""

    name = "youtube"
    Options = YouTubeOptions
    logger = log

    def __init__(self, options: YouTubeOptions | None = None, reply_in_chat: bool = False, **_: Any) -> None:
        super().__init__()
        self.options = options or YouTubeOptions()
        self.replying = self.options.reply_in_chat or reply_in_chat  # [chat] reply_in_chat turns it on too
        self.requests = 0
        self._session: Any = None
        self._seen = RecentSet(4096)
        self._mine: set[str] = set()  # our own channel id, learned from our first reply
        self._quota_hit = False
        self._reply_lock: asyncio.Lock | None = None
        self._last_reply = 0.0
        self._told: set[str] = set()
        self._page: tuple[str, str] = ("", "")  # (chat, nextPageToken): where reading stopped, kept across restarts
        self._backlog_done = False  # the adapter's very first page (the only one whose backlog is skipped) is read
        self.bad_items = 0  # chat items skipped because reading them failed

    @classmethod
    def check(cls) -> str | None:
        try:
            import aiohttp  # noqa: F401
        except ImportError:
            return "aiohttp is not installed: pip install -e plugins/youtube"
        return None

    # -- reading --------------------------------------------------------------------------
    def _credentials(self) -> dict[str, str]:
        token = os.environ.get(self.options.oauth_token_env, "") if self.options.oauth_token_env else ""
        if token:
            return {"Authorization": f"Bearer {token}"}
        key = os.environ.get(self.options.api_key_env, "") if self.options.api_key_env else ""
        return {"X-Goog-Api-Key": key} if key else {}

    async def serve(self) -> None:
        import aiohttp

        headers = self._credentials()
        if not headers:
            o = self.options
            self.say("no credentials", logging.ERROR,
                     f"set ${o.api_key_env} to a YouTube Data API key, or ${o.oauth_token_env} to an OAuth token")
            await self.sleep(1e9)
            return
        self._reply_lock = asyncio.Lock()
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            self._session = session
            while not self.stopping:
                chat = await self._find_chat()
                if chat is None:
                    return
                await self._poll(chat)
                if await self.sleep(self.options.rejoin_seconds):
                    return

    async def _get(self, path: str, params: dict) -> tuple[int, Any]:
        self.requests += 1
        url = f"{self.options.base_url.rstrip('/')}/{path}"
        async with self._session.get(url, params=params) as r:
            return r.status, await _json(r)

    async def _call(self, path: str, params: dict, backoff: Backoff) -> tuple[str, Any]:
        """One GET with the error policy applied: ("ok", body) | ("ended", words) | ("wait", None)."""
        try:
            status, body = await self._get(path, params)
        except (OSError, asyncio.TimeoutError, _client_error()) as exc:
            self.say("connection problem, retrying", logging.WARNING, type(exc).__name__)
            await self.sleep(backoff.next())
            return "wait", None
        if status == 200 and isinstance(body, dict):
            backoff.reset()
            if self._quota_hit:
                self._quota_hit = False
                log.info("youtube: the API answers again after the quota pause")
            return "ok", body
        kind, words = error_reason(status, body)
        if kind == ENDED:
            return "ended", words
        if kind == QUOTA:
            if not self._quota_hit:
                self._quota_hit = True
                log.warning("youtube: API quota exhausted (%s); trying again every %.0f s. The daily quota "
                            "resets at midnight Pacific time; raise min_poll_seconds to spend less.",
                            words, self.options.quota_backoff_seconds)
            await self.sleep(self.options.quota_backoff_seconds)
        elif kind == RATE:
            self.say("asked to slow down", logging.WARNING, words)
            await self.sleep(max(backoff.next(), self.options.min_poll_seconds * 2))
        elif kind == AUTH:
            o = self.options
            self.say("the API refused the request", logging.ERROR,
                     f"{words}; check ${o.oauth_token_env} / ${o.api_key_env} and that the YouTube Data API "
                     "is enabled for the key's project")
            await self.sleep(max(60.0, backoff.next()))
        else:
            self.say("API error, retrying", logging.WARNING, words)
            await self.sleep(backoff.next())
        return "wait", None

    async def _find_chat(self) -> str | None:
        o = self.options
        if o.live_chat_id:
            return o.live_chat_id
        if not o.video_id and "Authorization" not in self._credentials():
            self.say("nothing to read", logging.ERROR,
                     f"set video_id in [adapters.youtube], or ${o.oauth_token_env} to find your own broadcast")
            await self.sleep(1e9)
            return None
        backoff = Backoff(2.0, 120.0)
        while not self.stopping:
            if o.video_id:
                result, body = await self._call("videos", {"part": "liveStreamingDetails", "id": o.video_id}, backoff)
                chats = [_get(i.get("liveStreamingDetails"), "activeLiveChatId") for i in _items(body)]
            else:
                params = {"part": "snippet", "broadcastStatus": "active", "broadcastType": "all"}
                result, body = await self._call("liveBroadcasts", params, backoff)
                chats = [_get(i.get("snippet"), "liveChatId") for i in _items(body)]
            chat = next((c for c in chats if isinstance(c, str) and c), None)
            if chat:
                return chat
            if result != "wait":
                self.say("waiting for a live broadcast", detail=f"video {o.video_id}" if o.video_id else "your channel")
                if await self.sleep(o.rejoin_seconds):
                    return None
        return None

    async def _poll(self, chat: str) -> None:
        """Read *chat* until it ends (returns) or stop() (cancelled). After a restart of serve()
        (or a chat that went away and came back) reading goes on from the last page token, so
        what was said meanwhile is not lost; only the adapter's very first page skips the backlog."""
        o = self.options
        token = self._page[1] if self._page[0] == chat else ""
        backoff = Backoff(1.0, 60.0)
        while not self.stopping:
            params = {"liveChatId": chat, "part": "snippet,authorDetails"}
            if token:
                params["pageToken"] = token
            result, body = await self._call("liveChat/messages", params, backoff)
            if result == "ended":
                self.say("live chat ended", detail=body)
                return
            if result == "wait":
                continue
            self.say("reading live chat")
            ended = self._take(body, chat, skip=not self._backlog_done and o.skip_backlog)
            self._backlog_done = True
            token = body.get("nextPageToken") if isinstance(body.get("nextPageToken"), str) else token
            self._page = (chat, token)
            if ended or body.get("offlineAt"):
                self.say("live chat ended", detail="the stream went offline")
                return
            if await self.sleep(max(_interval(body.get("pollingIntervalMillis")), o.min_poll_seconds,
                                    MIN_POLL_SECONDS)):
                return

    def _take(self, body: dict, chat: str, skip: bool) -> bool:
        """Emit the page's new messages; True if the chat says it ended."""
        ended = False
        for item in _items(body)[:2000]:
            try:
                message, note, ended_here = self._read_item(item, chat, skip)
            except Exception as exc:  # noqa: BLE001 - one malformed item is skipped, never the chat
                self.bad_items += 1
                if self.bad_items == 1:
                    log.warning("youtube: skipped a chat item that could not be read (%s; further ones at "
                                "debug level)", type(exc).__name__)
                else:
                    log.debug("youtube: skipped a chat item that could not be read", exc_info=exc)
                continue
            ended = ended or ended_here
            if message is not None:
                self.emit(message)
            elif note:
                log.debug("youtube: skipped: %s", note)
        return ended

    def _read_item(self, item: dict, chat: str, skip: bool) -> tuple[ChatMessage | None, str, bool]:
        """(the message or None, why it was dropped, whether it says the chat ended)."""
        item_id = item.get("id")
        if isinstance(item_id, str) and not self._seen.add(item_id):
            return None, "", False  # already seen (a page served twice)
        snippet = item.get("snippet") if isinstance(item.get("snippet"), dict) else {}
        ended = snippet.get("type") == "chatEndedEvent"
        details = item.get("authorDetails") if isinstance(item.get("authorDetails"), dict) else {}
        author = details.get("channelId") or snippet.get("authorChannelId")
        if skip or (isinstance(author, str) and author in self._mine):
            return None, "", ended
        message, note = to_message(item, chat)
        return message, note, ended

    # -- replying -------------------------------------------------------------------------
    def reply(self, message: ChatMessage, text: str) -> bool:
        o = self.options
        if not self.replying:
            return False
        if not os.environ.get(o.oauth_token_env, ""):
            self._tell_once("token", f"youtube: reply_in_chat needs an OAuth access token in ${o.oauth_token_env} "
                                     "(an API key can only read the chat); not replying")
            return False
        line = _reply_text(message.author, text)
        if not line or not message.channel:
            return False
        return bool(self.call(self._insert(message.channel, line), o.timeout + o.reply_min_seconds + 5))

    async def _insert(self, chat: str, text: str) -> bool:
        async with self._reply_lock:
            loop = asyncio.get_running_loop()
            wait = self._last_reply + self.options.reply_min_seconds - loop.time()
            if wait > 0 and await self.sleep(wait):
                return False
            self._last_reply = loop.time()
            url = f"{self.options.base_url.rstrip('/')}/liveChat/messages"
            body = {"snippet": {"liveChatId": chat, "type": "textMessageEvent",
                                "textMessageDetails": {"messageText": text}}}
            try:
                async with self._session.post(url, params={"part": "snippet"}, json=body) as r:
                    status, answer = r.status, await _json(r)
            except (OSError, asyncio.TimeoutError, _client_error()) as exc:
                log.warning("youtube: reply not sent: %s", type(exc).__name__)
                return False
            if status != 200:
                log.warning("youtube: reply not sent: %s", error_reason(status, answer)[1])
                return False
            snippet = answer.get("snippet") if isinstance(answer, dict) else None
            if isinstance(snippet, dict) and isinstance(snippet.get("authorChannelId"), str):
                self._mine.add(snippet["authorChannelId"])  # never answer our own replies
            return True

    def _tell_once(self, key: str, line: str) -> None:
        if key not in self._told:
            self._told.add(key)
            log.warning("%s", line)


def _reply_text(author: str, text: str) -> str:
    """"@NAME answer", cut at a word to YouTube's 200 characters."""
    line = " ".join(f"@{author} {text}".split()) if author else " ".join(text.split())
    if len(line) <= MAX_REPLY_CHARS:
        return line
    cut = line[: MAX_REPLY_CHARS - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _interval(millis: Any) -> float:
    """pollingIntervalMillis in seconds, at most 600; 5 s when missing or nonsense."""
    if type(millis) not in (int, float):
        return 5.0
    try:
        seconds = float(millis) / 1000
    except OverflowError:  # a 400-digit integer
        return 600.0
    return min(600.0, seconds) if seconds > 0 else 5.0  # nan > 0 is False


def _items(body: Any) -> list[dict]:
    items = body.get("items") if isinstance(body, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


async def _json(response: Any) -> Any:
    try:
        return await response.json(content_type=None)
    except (ValueError, RecursionError):  # not JSON (a proxy's error page), or nested too deep: an empty answer
        return {}


def _client_error() -> type:
    import aiohttp

    return aiohttp.ClientError
