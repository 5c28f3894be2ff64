"""A local stand-in for Discord's servers (REST API + gateway websocket), for tests only.

It speaks just enough of Discord's wire protocol (API v10, gateway v10, JSON encoding) for
discord.py's real Client to log in, identify, receive READY and GUILD_CREATE, get
MESSAGE_CREATE and INTERACTION_CREATE events, post messages and interaction responses,
register slash commands, resume a dropped session and ask to join a voice channel. Everything
the client does is recorded for the tests to assert on. It runs an aiohttp server on its
own thread and event loop; the client under test runs on another.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import deque

from aiohttp import WSMsgType, web

APP_ID, BOT_ID, GUILD_ID = 900000000000000001, 900000000000000002, 900000000000000003
TEXT_ID, VOICE_ID, MOD_ROLE = 900000000000000004, 900000000000000005, 900000000000000006
OWNER_ID, ALICE_ID, BOB_ID = 900000000000000010, 900000000000000011, 900000000000000012
MANAGE_MESSAGES = 1 << 13
EVERYONE_PERMS = (1 << 10) | (1 << 11) | (1 << 16) | (1 << 20) | (1 << 21) | (1 << 31)  # view, send, history, connect, speak, use commands

_ids = itertools.count(910000000000000000)


def user(uid: int, name: str, bot: bool = False) -> dict:
    return {"id": str(uid), "username": name, "global_name": name.title(), "discriminator": "0",
            "avatar": None, "bot": bot, "flags": 0, "public_flags": 0}


def member(uid: int, name: str, roles: list[int] = (), bot: bool = False) -> dict:
    return {"user": user(uid, name, bot), "nick": None, "roles": [str(r) for r in roles], "flags": 0,
            "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False}


MEMBERS = {OWNER_ID: ("owner", []), ALICE_ID: ("alice", []), BOB_ID: ("bob", [MOD_ROLE]), BOT_ID: ("talker", [])}


def guild_payload(voice_members: tuple[int, ...] = (ALICE_ID,)) -> dict:
    role = {"color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0, "icon": None}
    return {
        "id": str(GUILD_ID), "name": "test server", "owner_id": str(OWNER_ID), "unavailable": False,
        "icon": None, "splash": None, "discovery_splash": None, "features": [], "emojis": [], "stickers": [],
        "large": False, "member_count": len(MEMBERS), "premium_tier": 0, "verification_level": 0,
        "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
        "preferred_locale": "en-US", "afk_timeout": 300, "system_channel_flags": 0, "threads": [],
        "stage_instances": [], "guild_scheduled_events": [], "joined_at": "2024-01-01T00:00:00+00:00",
        "roles": [{**role, "id": str(GUILD_ID), "name": "@everyone", "permissions": str(EVERYONE_PERMS), "position": 0},
                  {**role, "id": str(MOD_ROLE), "name": "mods", "permissions": str(EVERYONE_PERMS | MANAGE_MESSAGES),
                   "position": 1}],
        "channels": [
            {"id": str(TEXT_ID), "type": 0, "name": "general", "position": 0, "permission_overwrites": [],
             "guild_id": str(GUILD_ID), "nsfw": False, "topic": None, "last_message_id": None, "flags": 0},
            {"id": str(VOICE_ID), "type": 2, "name": "Lounge", "position": 1, "permission_overwrites": [],
             "guild_id": str(GUILD_ID), "bitrate": 64000, "user_limit": 0, "rtc_region": None, "flags": 0},
        ],
        "members": [member(uid, name, roles, bot=uid == BOT_ID) for uid, (name, roles) in MEMBERS.items()],
        "voice_states": [voice_state(uid, VOICE_ID) for uid in voice_members],
    }


def voice_state(uid: int, channel: int | None, session: str = "") -> dict:
    name, roles = MEMBERS[uid]
    return {"guild_id": str(GUILD_ID), "channel_id": str(channel) if channel else None, "user_id": str(uid),
            "session_id": session or f"vs-{uid}", "deaf": False, "mute": False, "self_deaf": False,
            "self_mute": False, "self_video": False, "suppress": False, "request_to_speak_timestamp": None,
            "member": member(uid, name, roles, bot=uid == BOT_ID)}


def message_payload(author: int, content: str, mentions: tuple[int, ...] = (), channel: int = TEXT_ID) -> dict:
    name, roles = MEMBERS[author]
    return {
        "id": str(next(_ids)), "channel_id": str(channel), "guild_id": str(GUILD_ID), "author": user(author, name),
        "member": {k: v for k, v in member(author, name, roles).items() if k != "user"}, "content": content,
        "timestamp": "2024-01-01T00:00:00+00:00", "edited_timestamp": None, "tts": False,
        "mention_everyone": False, "mentions": [user(m, MEMBERS[m][0], bot=m == BOT_ID) for m in mentions],
        "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": 0,
    }


class FakeDiscord:
    """REST + gateway on 127.0.0.1:port. ``dispatch()`` sends an event to the connected
    client (or keeps it for the resumed session); ``drop()`` cuts the websocket."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.port = 0
        self.session_id = "fake-session-1"
        self.posted: list[dict] = []  # POST /channels/{id}/messages bodies (+ channel_id)
        self.callbacks: list[dict] = []  # interaction callbacks (+ interaction_id)
        self.followups: list[dict] = []  # POST /webhooks/{app}/{token} bodies
        self.edits: list[dict] = []  # PATCH /webhooks/{app}/{token}/messages/@original bodies (+ itoken)
        self.commands: dict[str, list[dict]] = {}  # "guild id" or "global" -> registered slash commands
        self.gateway_ops: list[dict] = []  # everything the client sent on the gateway, token blanked
        self.identifies = self.resumes = self.connections = 0
        self.voice_requests: list[dict] = []  # op 4 payloads
        self.voice_server: tuple[str, int] | None = None  # (host, port) of a fake voice server
        self.voice_members: tuple[int, ...] = (ALICE_ID,)
        self.bad_auth: list[str] = []  # requests that came without the right token
        self._seq = 0
        self._backlog: deque[dict] = deque(maxlen=1000)  # events sent while no client was connected
        self._ws: web.WebSocketResponse | None = None
        self._req: web.Request | None = None  # the gateway connection's request (its transport is cut by drop())
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-discord", daemon=True)

    # -- control (test thread) -----------------------------------------------------------
    def start(self) -> FakeDiscord:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def dispatch(self, event: str, data: dict) -> None:
        asyncio.run_coroutine_threadsafe(self._dispatch(event, data), self._loop).result(5)

    def drop(self) -> None:
        """Cut the gateway connection without a close frame, as a network failure would."""
        asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(5)

    def wait_for(self, what, timeout: float = 15.0, step: float = 0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            time.sleep(step)
        raise AssertionError(f"fake Discord: condition not met in {timeout} s")

    def interaction(self, name: str, options: list[dict] | None = None, author: int = ALICE_ID) -> dict:
        """An INTERACTION_CREATE payload for a slash command typed by *author* in #general."""
        uname, roles = MEMBERS[author]
        perms = EVERYONE_PERMS | (MANAGE_MESSAGES if MOD_ROLE in roles else 0)
        cmd = next((c for c in self.commands.get(str(GUILD_ID), []) if c["name"] == name), {"id": "1"})
        return {
            "id": str(next(_ids)), "application_id": str(APP_ID), "type": 2, "token": f"itoken-{next(_ids)}",
            "version": 1, "guild_id": str(GUILD_ID), "channel_id": str(TEXT_ID),
            "channel": {"id": str(TEXT_ID), "type": 0, "name": "general", "guild_id": str(GUILD_ID), "position": 0,
                        "permission_overwrites": [], "flags": 0, "nsfw": False},
            "member": {**member(author, uname, roles), "permissions": str(perms)},
            "data": {"id": cmd["id"], "name": name, "type": 1, "guild_id": str(GUILD_ID), "options": options or []},
            "app_permissions": str(EVERYONE_PERMS), "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": str(GUILD_ID)}, "context": 0,
            "attachment_size_limit": 8388608,
        }

    # -- server (its own loop) -------------------------------------------------------------
    async def _start(self) -> None:
        app = web.Application()
        r = app.router
        r.add_get("/api/v10/users/@me", self._me)
        r.add_get("/api/v10/oauth2/applications/@me", self._application)
        r.add_get("/api/v10/gateway/bot", self._gateway_bot)
        r.add_get("/api/v10/gateway", self._gateway_bot)
        r.add_post("/api/v10/channels/{cid}/messages", self._post_message)
        r.add_put("/api/v10/applications/{app}/guilds/{gid}/commands", self._put_commands)
        r.add_put("/api/v10/applications/{app}/commands", self._put_commands)
        r.add_post("/api/v10/interactions/{iid}/{itoken}/callback", self._callback)
        r.add_post("/api/v10/webhooks/{app}/{itoken}", self._followup)
        r.add_patch("/api/v10/webhooks/{app}/{itoken}/messages/@original", self._edit_original)
        r.add_get("/ws", self._gateway)
        r.add_get("/", self._gateway)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def _authorised(self, request: web.Request) -> bool:
        ok = request.headers.get("Authorization") == f"Bot {self.token}"
        if not ok:
            self.bad_auth.append(request.path)
        return ok

    @staticmethod
    def _json(data, status: int = 200) -> web.Response:
        # exactly "application/json": discord.py parses nothing else (aiohttp would add a charset)
        return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})

    async def _me(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        return self._json(user(BOT_ID, "talker", bot=True))

    async def _application(self, request: web.Request) -> web.Response:
        return self._json({"id": str(APP_ID), "name": "talker", "icon": None, "description": "", "bot_public": True,
                           "bot_require_code_grant": False, "verify_key": "0" * 64, "flags": 0,
                           "owner": user(OWNER_ID, "owner"), "team": None, "summary": ""})

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return self._json({"url": f"ws://127.0.0.1:{self.port}/ws", "shards": 1, "session_start_limit":
                           {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})

    async def _post_message(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._json({"message": "401: Unauthorized", "code": 0}, 401)
        body = await request.json()
        self.posted.append({**body, "channel_id": request.match_info["cid"]})
        msg = message_payload(BOT_ID, body.get("content", ""), channel=int(request.match_info["cid"]))
        if body.get("message_reference"):
            msg["message_reference"] = body["message_reference"]
            msg["type"] = 19
        return self._json(msg)

    async def _put_commands(self, request: web.Request) -> web.Response:
        body = await request.json()
        out = [{**c, "id": str(next(_ids)), "application_id": str(APP_ID), "version": "1", "type": c.get("type", 1),
                "default_member_permissions": None, "dm_permission": True, "nsfw": False} for c in body]
        self.commands[request.match_info.get("gid", "global")] = out
        return self._json(out)

    async def _callback(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.callbacks.append({**body, "interaction_id": request.match_info["iid"]})
        return self._json({"interaction": {"id": request.match_info["iid"], "type": 2,
                                           "response_message_loading": body.get("type") == 5,
                                           "response_message_ephemeral": False}})

    async def _followup(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.followups.append({**body, "itoken": request.match_info["itoken"]})
        return self._json(message_payload(BOT_ID, body.get("content", "")))

    async def _edit_original(self, request: web.Request) -> web.Response:
        """Edit an interaction's first response (a deferred "is thinking…" becomes the message)."""
        body = await request.json()
        self.edits.append({**body, "itoken": request.match_info["itoken"]})
        return self._json(message_payload(BOT_ID, body.get("content", "")))

    async def _dispatch(self, event: str, data: dict) -> None:
        self._seq += 1
        payload = {"op": 0, "t": event, "s": self._seq, "d": data}
        if self._ws is None or self._ws.closed:
            self._backlog.append(payload)
        else:
            await self._ws.send_str(json.dumps(payload))

    async def _drop(self) -> None:
        self._ws, req = None, self._req
        if req is not None and req.transport is not None:
            req.transport.abort()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            op, d = data.get("op"), data.get("d")
            seen = dict(data)
            if isinstance(d, dict) and "token" in d:
                seen["d"] = {**d, "token": "<token>" if d["token"] == self.token else "<WRONG TOKEN>"}
            self.gateway_ops.append(seen)
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                self.identifies += 1
                self._ws, self._req = ws, request
                await self._dispatch("READY", {
                    "v": 10, "user": user(BOT_ID, "talker", bot=True), "session_id": self.session_id,
                    "resume_gateway_url": f"ws://127.0.0.1:{self.port}/ws", "guilds": [{"id": str(GUILD_ID),
                                                                                         "unavailable": True}],
                    "application": {"id": str(APP_ID), "flags": 0}, "private_channels": [], "relationships": [],
                    "presences": [], "guild_join_requests": [], "shard": [0, 1]})
                await self._dispatch("GUILD_CREATE", guild_payload(self.voice_members))
            elif op == 6:
                self.resumes += 1
                self._ws, self._req = ws, request
                await self._dispatch("RESUMED", {})
                while self._backlog:
                    await ws.send_str(json.dumps(self._backlog.popleft()))
            elif op == 4:
                self.voice_requests.append(d)
                await self._voice_update(d)
        return ws

    async def _voice_update(self, d: dict) -> None:
        """Answer a voice-state request as Discord does: the bot's new voice state, then
        where its voice server is (the fake voice server, when the test runs one)."""
        channel = d.get("channel_id")
        await self._dispatch("VOICE_STATE_UPDATE", voice_state(BOT_ID, int(channel) if channel else None,
                                                               session="bot-voice-session"))
        if channel and self.voice_server:
            host, port = self.voice_server
            await self._dispatch("VOICE_SERVER_UPDATE", {"token": "voice-token", "guild_id": str(GUILD_ID),
                                                         "endpoint": f"{host}:{port}"})


class FakeVoice:
    """A stand-in for a Discord voice server: the voice websocket (v8, over TLS, because
    discord.py only dials ``wss://``) and the UDP media socket with IP discovery and
    ``aead_xchacha20_poly1305_rtpsize`` transport encryption, on FakeDiscord's loop.

    It sends a member's opus frames to the bot as Discord's media server would (RTP,
    encrypted with the session key) and keeps every RTP packet the bot sends, decrypted,
    for the test to decode. No DAVE: ``dave_version = 1`` announces an end-to-end encrypted
    call, but no MLS group is ever formed (there is no external sender here).
    """

    MODE = "aead_xchacha20_poly1305_rtpsize"

    def __init__(self, fake: FakeDiscord, cert: str, key: str, dave_version: int = 0) -> None:
        import os
        import ssl

        self.fake, self._loop = fake, fake._loop
        self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl.load_cert_chain(cert, key)
        self.secret = os.urandom(32)
        self.dave_version = dave_version
        self.bot_ssrc = 4242
        self.port = self.udp_port = 0
        self.client_addr: tuple[str, int] | None = None
        self.ops: list[dict] = []  # JSON the bot sent on the voice websocket
        self.binary_frames = 0  # DAVE/MLS binary frames the bot sent
        self.from_bot: list[tuple[int, int, bytes]] = []  # (sequence, timestamp, opus) the bot sent
        self.session_ready = threading.Event()
        self._ws: web.WebSocketResponse | None = None
        self._udp = None
        self._seq: dict[int, int] = {}
        self._nonce = 0

    def start(self) -> FakeVoice:
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.fake.voice_server = ("127.0.0.1", self.port)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._voice_ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        voice = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport) -> None:
                voice._udp = transport

            def datagram_received(self, data: bytes, addr) -> None:
                voice._datagram(data, addr)

        await self._loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
        self.udp_port = self._udp.get_extra_info("sockname")[1]

    def stop(self) -> None:
        async def close() -> None:
            self._udp.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)

    # -- media ------------------------------------------------------------------------------
    def _datagram(self, data: bytes, addr) -> None:
        import struct

        if len(data) == 74 and data[1] == 0x01:  # IP discovery: tell the bot its own address
            self.client_addr = addr
            reply = bytearray(74)
            struct.pack_into(">HHI", reply, 0, 2, 70, struct.unpack_from(">I", data, 4)[0])
            reply[8:8 + len(addr[0])] = addr[0].encode()
            struct.pack_into(">H", reply, 72, addr[1])
            self._udp.sendto(bytes(reply), addr)
            return
        if len(data) < 12 + 16 + 4 or data[0] & 0xC0 != 0x80 or 200 <= data[1] <= 204:
            return  # keep-alives, RTCP
        import nacl.secret

        header, nonce = data[:12], data[-4:].ljust(24, b"\0")
        opus = nacl.secret.Aead(self.secret).decrypt(data[12:-4], header, nonce)
        seq, ts = struct.unpack_from(">HI", data, 2)
        self.from_bot.append((seq, ts, opus))

    def send_opus(self, ssrc: int, frames: list[bytes], pace: float = 0.02) -> None:
        """Send *frames* (20 ms opus each) from *ssrc* to the bot, paced like a live speaker."""
        import struct

        import nacl.secret

        box = nacl.secret.Aead(self.secret)
        t0 = time.monotonic()
        for i, opus in enumerate(frames):
            seq = self._seq[ssrc] = (self._seq.get(ssrc, 0) + 1) & 0xFFFF
            header = struct.pack(">BBHII", 0x80, 0x78, seq, (seq * 960) & 0xFFFFFFFF, ssrc)
            self._nonce += 1
            nonce = struct.pack(">I", self._nonce)
            packet = header + box.encrypt(opus, header, nonce.ljust(24, b"\0")).ciphertext + nonce
            self._loop.call_soon_threadsafe(self._udp.sendto, packet, self.client_addr)
            ahead = t0 + (i + 1) * pace - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def speaking(self, user_id: int, ssrc: int) -> None:
        """Tell the bot whose voice *ssrc* carries (op 5), as Discord does before audio flows."""
        payload = {"op": 5, "d": {"user_id": str(user_id), "ssrc": ssrc, "speaking": 1}}
        asyncio.run_coroutine_threadsafe(self._ws.send_str(json.dumps(payload)), self._loop).result(5)

    # -- signalling -------------------------------------------------------------------------
    async def _voice_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(json.dumps({"op": 8, "d": {"heartbeat_interval": 13750}}))
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                self.binary_frames += 1
                continue
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            self.ops.append(data)
            op, d = data["op"], data.get("d") or {}
            if op == 0:  # IDENTIFY
                await ws.send_str(json.dumps({"op": 2, "d": {"ssrc": self.bot_ssrc, "ip": "127.0.0.1",
                                                             "port": self.udp_port, "modes": [self.MODE],
                                                             "heartbeat_interval": 1}}))
            elif op == 1:  # SELECT_PROTOCOL
                await ws.send_str(json.dumps({"op": 4, "d": {"mode": self.MODE, "secret_key": list(self.secret),
                                                             "dave_protocol_version": self.dave_version}}))
                self.session_ready.set()
            elif op == 3:  # heartbeat
                await ws.send_str(json.dumps({"op": 6, "d": {"t": d.get("t") if isinstance(d, dict) else d}}))
        return ws
