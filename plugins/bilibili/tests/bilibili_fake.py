"""A fake of Bilibili's servers, for tests only.

``FakeBilibili`` stands in for api.live.bilibili.com, api.bilibili.com and the danmaku
websocket servers: the HTTP API (room_init, finger/spi, nav, getDanmuInfo, which checks the
WBI signature) and the websocket ``/sub``, which frames its packets with its own ``struct``
code in the documented binary format (16-byte header; protocol 0 plain, 1 auth/heartbeat,
2 zlib, 3 brotli batches; ops 2/3/5/7/8), answers the auth packet and every heartbeat, and
pushes what a test gives it. The helpers below build the commands the real servers send.
"""
from __future__ import annotations

import asyncio
import json
import struct
import zlib

import brotli
from adapter_harness import AioServer
from aiohttp import WSMsgType, web
from talker_stream_bilibili.web import wbi_sign

SHORT, REAL, OWNER = 21, 21452505, 7706705
IMG_KEY, SUB_KEY = "7cd084941338484aae1ad9425b84077c", "4932caff0ff746eab6f01bf08b70ac45"


def frame(op: int, body: bytes | str | dict, version: int = 0) -> bytes:
    """One packet as Bilibili's server frames it (written apart from the adapter's own code)."""
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=False)
    if isinstance(body, str):
        body = body.encode()
    return struct.pack(">IHHII", 16 + len(body), 16, version, op, 0) + body


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    out, at = [], 0
    while at + 16 <= len(data):
        length, header, version, op, _ = struct.unpack_from(">IHHII", data, at)
        out.append((version, op, data[at + header: at + length]))
        at += length
    return out


def batch(commands: list[dict], version: int) -> bytes:
    inner = b"".join(frame(5, c) for c in commands)
    return frame(5, brotli.compress(inner) if version == 3 else zlib.compress(inner), version)


def danmaku(uid: int, name: str, text: str, admin: int = 0, cmd: str = "DANMU_MSG", user_hash: str = "") -> dict:
    extra = {"send_from_me": False, "mode": 0, "color": 16777215, "dm_type": 0, "font_size": 25,
             "content": text, "user_hash": user_hash or str(uid * 7), "emots": None}
    meta = [0, 1, 25, 16777215, 1714560000000, -1234, 0, "c8f0a2b1", 0, 0, 0, "", 0, "{}", "{}",
            {"extra": json.dumps(extra, ensure_ascii=False), "mode": 0, "show_player_type": 0,
             "user": {"uid": uid, "base": {"name": name, "face": "https://i0.hdslb.com/x.jpg"}}}]
    return {"cmd": cmd, "dm_v2": "", "info": [meta, text, [uid, name, admin, 0, 0, 10000, 1, ""],
                                               [], [0, 0, 9868950, ">50000", 0], ["", ""], 0, 0, None,
                                               {"ts": 1714560000, "ct": "A1B2C3D4"}, 0, 0, None, None, 0, 105]}


def super_chat(sc_id: int, uid: int, name: str, text: str, price: int, cmd: str = "SUPER_CHAT_MESSAGE") -> dict:
    return {"cmd": cmd, "data": {"id": sc_id, "uid": uid, "price": price, "rate": 1000, "message": text,
                                 "time": 60, "start_time": 1714560000, "end_time": 1714560060,
                                 "user_info": {"uname": name, "guard_level": 0, "face": "x"}}}


def gift(uid: int, name: str, price: int, num: int, coin: str = "gold") -> dict:
    return {"cmd": "SEND_GIFT", "data": {"uid": uid, "uname": name, "giftName": "小花花", "giftId": 31036,
                                         "num": num, "price": price, "coin_type": coin, "action": "投喂",
                                         "total_coin": price * num, "timestamp": 1714560000}}


class FakeBilibili:
    """Stands in for api.live.bilibili.com, api.bilibili.com and the danmaku servers only."""

    def __init__(self) -> None:
        self.tokens = 0
        self.auths: list[dict] = []
        self.refuse_auths = 0
        self.heartbeats = 0
        self.danmu_requests: list[dict] = []
        self.cookies: list[str] = []
        self.sign_ok: list[bool] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.popularity = 123456
        self.refuse_tokens = False
        app = web.Application()
        app.router.add_get("/room/v1/Room/room_init", self.room_init)
        app.router.add_get("/x/frontend/finger/spi", self.spi)
        app.router.add_get("/x/web-interface/nav", self.nav)
        app.router.add_get("/xlive/web-room/v1/index/getDanmuInfo", self.danmu_info)
        app.router.add_get("/sub", self.sub)
        self.server = AioServer(app)

    async def room_init(self, request: web.Request) -> web.Response:
        assert int(request.query["id"]) in (SHORT, REAL)
        return web.json_response({"code": 0, "msg": "ok", "message": "ok", "data": {
            "room_id": REAL, "short_id": SHORT, "uid": OWNER, "live_status": 1, "is_hidden": False}})

    async def spi(self, request: web.Request) -> web.Response:
        return web.json_response({"code": 0, "message": "ok", "data": {"b_3": "BV3-FROM-SPI", "b_4": "b4"}})

    async def nav(self, request: web.Request) -> web.Response:
        return web.json_response({"code": -101, "message": "账号未登录", "ttl": 1, "data": {"isLogin": False, "wbi_img": {
            "img_url": f"https://i0.hdslb.com/bfs/wbi/{IMG_KEY}.png",
            "sub_url": f"https://i0.hdslb.com/bfs/wbi/{SUB_KEY}.png"}}})

    async def danmu_info(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.danmu_requests.append(query)
        self.cookies.append(request.headers.get("Cookie", ""))
        unsigned = {k: v for k, v in query.items() if k not in ("w_rid", "wts")}
        ok = "w_rid" in query and wbi_sign(unsigned, IMG_KEY, SUB_KEY, int(query["wts"]))["w_rid"] == query["w_rid"]
        self.sign_ok.append(ok)
        if self.refuse_tokens or not ok or int(query["id"]) != REAL:
            return web.json_response({"code": -352, "message": "-352", "ttl": 1, "data": {"v_voucher": "voucher_x"}})
        self.tokens += 1
        return web.json_response({"code": 0, "message": "0", "ttl": 1, "data": {
            "group": "live", "business_id": 0, "refresh_row_factor": 0.125, "refresh_rate": 100, "max_delay": 5000,
            "token": f"TOKEN-{self.tokens}",
            "host_list": [{"host": "127.0.0.1", "port": 2243, "wss_port": 2245, "ws_port": 2244}]}})

    async def sub(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        try:
            first = await ws.receive(timeout=5)  # the real server drops a client that does not auth in 5 s
        except asyncio.TimeoutError:
            await ws.close()
            return ws
        (version, op, body), = frames(first.data)
        assert (version, op) == (1, 7)
        auth = json.loads(body)
        self.auths.append(auth)
        if self.refuse_auths > 0 or auth["key"] != ("" if self.refuse_tokens else f"TOKEN-{self.tokens}"):
            self.refuse_auths -= 1
            await ws.send_bytes(frame(8, {"code": -101}, 1))
            await ws.close()
            return ws
        await ws.send_bytes(frame(8, {"code": 0}, 1))
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            for version, op, body in frames(msg.data):
                if op == 2:
                    self.heartbeats += 1
                    await ws.send_bytes(frame(3, struct.pack(">I", self.popularity) + body, 1))
        return ws

    def push(self, data: bytes) -> None:
        self.server.call(self.sockets[-1].send_bytes(data))

    def drop(self) -> None:
        self.server.call(self.sockets[-1].close())
