"""A fake of the YouTube Data API v3 (https://www.googleapis.com/youtube/v3), for tests only.

``FakeYouTube`` serves the videos, liveBroadcasts and liveChat/messages endpoints, answering
JSON shaped like the API reference's liveChatMessageListResponse / liveChatMessage resources
and its error bodies, with the ``pollingIntervalMillis`` a test sets. ``text_item`` and
``paid_item`` build liveChatMessage resources as the API returns them.
"""
from __future__ import annotations

import threading
import time

from adapter_harness import AioServer
from aiohttp import web


def text_item(n: int, name: str, text: str, **author) -> dict:
    return {"kind": "youtube#liveChatMessage", "etag": f"e{n}", "id": f"m{n}",
            "snippet": {"type": "textMessageEvent", "liveChatId": "chat-1", "authorChannelId": f"UC{name}",
                        "publishedAt": "2024-05-01T12:00:00.000Z", "hasDisplayContent": True,
                        "displayMessage": text, "textMessageDetails": {"messageText": text}},
            "authorDetails": {"channelId": f"UC{name}", "channelUrl": f"http://www.youtube.com/channel/UC{name}",
                              "displayName": name, "profileImageUrl": "https://yt3.ggpht.com/x.jpg",
                              "isVerified": False, "isChatOwner": False, "isChatSponsor": False,
                              "isChatModerator": False, **author}}


def paid_item(n: int, name: str, kind: str, details: dict) -> dict:
    item = text_item(n, name, "")
    snippet = item["snippet"]
    del snippet["textMessageDetails"]
    snippet["type"] = kind
    snippet[{"superChatEvent": "superChatDetails", "superStickerEvent": "superStickerDetails",
             "memberMilestoneChatEvent": "memberMilestoneChatDetails"}[kind]] = details
    return item


def api_error(status: int, reason: str, message: str, domain: str = "youtube.liveChat") -> web.Response:
    return web.json_response({"error": {"code": status, "message": message,
                                        "errors": [{"message": message, "domain": domain, "reason": reason}]}},
                             status=status)


class FakeYouTube:
    """Stands in for https://www.googleapis.com/youtube/v3 only."""

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_ms = interval_ms
        self.chats: dict[str, list] = {"chat-1": []}
        self.live_chat = "chat-1"  # the video's activeLiveChatId; "" = not live
        self.ended: set[str] = set()
        self.quota_errors = 0  # answer this many list calls with quotaExceeded
        self.raw_answers: list[tuple[int, bytes]] = []  # (status, body) answered, in order, before anything else
        self.polls: list[tuple[float, str, str]] = []  # (time, chat, pageToken)
        self.tokens_sent: list[str] = []  # nextPageToken values handed out
        self.quota_times: list[float] = []
        self.posts: list[tuple[str, dict]] = []
        self.credentials: list[str] = []
        self.lock = threading.Lock()
        app = web.Application()
        app.router.add_get("/youtube/v3/videos", self.videos)
        app.router.add_get("/youtube/v3/liveBroadcasts", self.broadcasts)
        app.router.add_get("/youtube/v3/liveChat/messages", self.messages)
        app.router.add_post("/youtube/v3/liveChat/messages", self.insert)
        self.server = AioServer(app)

    def add(self, *items: dict, chat: str = "chat-1") -> None:
        with self.lock:
            self.chats.setdefault(chat, []).extend(items)

    def _auth(self, request: web.Request) -> str:
        cred = request.headers.get("X-Goog-Api-Key") or request.headers.get("Authorization", "")
        self.credentials.append(cred)
        return cred

    async def videos(self, request: web.Request) -> web.Response:
        self._auth(request)
        details = {"actualStartTime": "2024-05-01T11:00:00Z", "concurrentViewers": "42"}
        if self.live_chat:
            details["activeLiveChatId"] = self.live_chat
        return web.json_response({"kind": "youtube#videoListResponse", "etag": "v",
                                  "items": [{"kind": "youtube#video", "etag": "x", "id": request.query["id"],
                                             "liveStreamingDetails": details}],
                                  "pageInfo": {"totalResults": 1, "resultsPerPage": 1}})

    async def broadcasts(self, request: web.Request) -> web.Response:
        if not self._auth(request).startswith("Bearer "):
            return api_error(401, "authError", "Login Required", "global")
        return web.json_response({"kind": "youtube#liveBroadcastListResponse",
                                  "items": [{"kind": "youtube#liveBroadcast", "id": "b1",
                                             "snippet": {"title": "t", "liveChatId": self.live_chat}}]})

    async def messages(self, request: web.Request) -> web.Response:
        self._auth(request)
        chat, page = request.query.get("liveChatId", ""), request.query.get("pageToken", "")
        assert request.query.get("part") == "snippet,authorDetails"
        self.polls.append((time.monotonic(), chat, page))
        if self.raw_answers:
            status, raw = self.raw_answers.pop(0)
            return web.Response(body=raw, status=status, content_type="application/json")
        if self.quota_errors > 0:
            self.quota_errors -= 1
            self.quota_times.append(time.monotonic())
            return api_error(403, "quotaExceeded", "The request cannot be completed because you have exceeded "
                                                   "your quota.", "youtube.quota")
        if chat in self.ended or chat not in self.chats:
            return api_error(404, "liveChatNotFound", "The live chat that you are trying to retrieve cannot be found.")
        with self.lock:
            log = self.chats[chat]
            start = int(page.removeprefix("tok")) if page else 0
            items = log[start:]
            token = f"tok{len(log)}"
        self.tokens_sent.append(token)
        return web.json_response({"kind": "youtube#liveChatMessageListResponse", "etag": "p",
                                  "nextPageToken": token, "pollingIntervalMillis": self.interval_ms,
                                  "pageInfo": {"totalResults": len(items), "resultsPerPage": len(items)},
                                  "items": items})

    async def insert(self, request: web.Request) -> web.Response:
        cred = self._auth(request)
        if not cred.startswith("Bearer "):
            return api_error(401, "authError", "Login Required", "global")
        body = await request.json()
        self.posts.append((cred, body))
        snippet = body["snippet"]
        n = 9000 + len(self.posts)
        echo = text_item(n, "talker-bot", snippet["textMessageDetails"]["messageText"])
        echo["snippet"]["authorChannelId"] = echo["authorDetails"]["channelId"] = "UCbot"
        self.add(echo, chat=snippet["liveChatId"])  # YouTube shows our reply in the chat we read
        return web.json_response(echo)
