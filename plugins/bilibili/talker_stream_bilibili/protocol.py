"""Bilibili live danmaku wire protocol: packets in and out, commands -> events.

Format (github.com/SocialSisterYi/bilibili-API-collect, docs/live/message_stream.md): every
websocket binary message holds one or more packets, each a 16-byte big-endian header

    offset 0  uint32  packet length (header + body)
    offset 4  uint16  header length (16)
    offset 6  uint16  protocol version: 0 plain JSON, 1 heartbeat/auth, 2 zlib, 3 brotli
    offset 8  uint32  operation: 2 heartbeat, 3 heartbeat reply (uint32 popularity first),
                      5 command, 7 auth, 8 auth reply ({"code": 0} on success)
    offset 12 uint32  sequence

followed by its body. A version 2 or 3 body decompresses to *more packets* (a batch of
commands, each with its own header). The client sends op 7 first (within 5 s) with
``{"uid", "roomid", "protover": 3, "platform": "web", "type": 2, "key": token}`` and then
op 2 about every 30 s (the server drops a connection silent for 60 s).

Command bodies are JSON ``{"cmd": ..., ...}``; ``cmd`` may carry a suffix
(``DANMU_MSG:4:0:2:2:2:0``). Those used here:

- DANMU_MSG: ``info[1]`` text, ``info[2]`` = [uid, uname, is_admin, ...], ``info[0][15]``
  the newer user/extra object (``user.base.name``; ``extra`` a JSON string with ``user_hash``).
  Anonymous connections see uid 0 and masked names: ``user_hash`` then tells viewers apart.
- SUPER_CHAT_MESSAGE: ``data.message``, ``data.price`` (CNY), ``data.uid``,
  ``data.user_info.uname``, ``data.id`` (SUPER_CHAT_MESSAGE_JPN repeats it: ignored).
- SEND_GIFT: ``data.uid``, ``data.uname``, ``data.giftName``, ``data.num``, ``data.price``
  (gold coins per gift, 1000 = 1 CNY), ``data.coin_type`` ("gold" costs money, "silver" is free).
- GUARD_BUY (a captain/admiral/governor membership): ``data.uid``, ``data.username``,
  ``data.gift_name``, ``data.num``, ``data.price`` (gold coins).

Everything else (INTERACT_WORD, WATCHED_CHANGE, ...) is ignored. Nothing here raises on
bad input: a truncated or malformed packet ends the parse of that message only.
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Iterator

HEADER = struct.Struct(">IHHII")
HEARTBEAT, HEARTBEAT_REPLY, COMMAND, AUTH, AUTH_REPLY = 2, 3, 5, 7, 8
PLAIN, SPECIAL, ZLIB, BROTLI = 0, 1, 2, 3
MAX_INFLATED = 8 << 20  # one batch decompresses to at most this much (a bomb is cut off here)
MAX_DEPTH = 2


def pack(op: int, body: bytes | str | dict = b"", version: int = SPECIAL, seq: int = 1) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if isinstance(body, str):
        body = body.encode()
    return HEADER.pack(HEADER.size + len(body), HEADER.size, version, op, seq) + body


def auth_packet(room: int, token: str, uid: int = 0, buvid: str = "", protover: int = 3) -> bytes:
    body: dict[str, Any] = {"uid": uid, "roomid": room, "protover": protover, "platform": "web", "type": 2,
                            "key": token}
    if buvid:
        body["buvid"] = buvid
    return pack(AUTH, body)


def heartbeat_packet() -> bytes:
    return pack(HEARTBEAT, "[object Object]")  # what the web client sends; any body will do


@dataclass
class Packet:
    op: int
    body: bytes


def unpack(data: bytes, depth: int = 0) -> Iterator[Packet]:
    """Every packet in *data*, compressed batches opened; stops quietly at the first bad one."""
    offset = 0
    while len(data) - offset >= HEADER.size:
        length, header, version, op, _seq = HEADER.unpack_from(data, offset)
        if length < HEADER.size or header < HEADER.size or header > length or offset + length > len(data):
            return  # truncated or nonsense: the rest of this message cannot be framed
        body = data[offset + header: offset + length]
        offset += length
        if version in (ZLIB, BROTLI) and op == COMMAND:
            if depth >= MAX_DEPTH:
                continue
            inner = _inflate(body, version)
            if inner:
                yield from unpack(inner, depth + 1)
        else:
            yield Packet(op, body)


def _inflate(body: bytes, version: int) -> bytes:
    try:
        if version == ZLIB:
            return zlib.decompressobj().decompress(body, MAX_INFLATED)
        import brotli

        return brotli.Decompressor().process(body, output_buffer_limit=MAX_INFLATED)[:MAX_INFLATED]
    except Exception:  # noqa: BLE001 - zlib.error, brotli.error, a missing module: a lost batch, not a crash
        return b""


def brotli_available() -> bool:
    try:
        import brotli  # noqa: F401
    except ImportError:
        return False
    return True


def command(body: bytes) -> dict | None:
    """A command body as JSON, or None."""
    try:
        value = json.loads(body.decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - ValueError, RecursionError (deep nesting): a lost command
        return None
    return value if isinstance(value, dict) and isinstance(value.get("cmd"), str) else None


def auth_code(body: bytes) -> int | None:
    """The auth reply's code: 0 accepted; anything else (or nothing readable) refused."""
    try:
        value = json.loads(body.decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - ValueError, RecursionError
        return None
    return value.get("code") if isinstance(value, dict) and isinstance(value.get("code"), int) else None


def popularity(body: bytes) -> int:
    return struct.unpack_from(">I", body)[0] if len(body) >= 4 else 0


# -- commands -> events ----------------------------------------------------------------------
@dataclass
class Danmaku:
    uid: str
    name: str
    text: str
    admin: bool


@dataclass
class Paid:
    """A Super Chat (has words) or a gift / membership (no words), worth *cny*."""

    uid: str
    name: str
    cny: float
    label: str
    text: str = ""
    id: str = ""


def event(cmd: dict) -> Danmaku | Paid | None:
    """The event a command carries, or None for the ones ignored; never raises."""
    try:
        return _event(cmd)
    except Exception:  # noqa: BLE001 - TypeError, OverflowError (1e999), RecursionError ...: one lost command
        return None


def _event(cmd: dict) -> Danmaku | Paid | None:
    name = cmd["cmd"].split(":", 1)[0]
    if name == "DANMU_MSG":
        info = cmd["info"]
        text, user = info[1], info[2]
        if not isinstance(text, str) or not isinstance(user, list):
            return None
        extra = info[0][15] if isinstance(info[0], list) and len(info[0]) > 15 else {}
        extra = extra if isinstance(extra, dict) else {}
        uname = user[1] if len(user) > 1 and isinstance(user[1], str) else ""
        uname = uname or _dig(extra, "user", "base", "name") or ""
        uid = str(user[0]) if user and isinstance(user[0], int) and user[0] else ""
        if not uid:  # anonymous connection: uid 0, masked name; the hash still tells viewers apart
            try:
                h = json.loads(extra.get("extra") or "{}").get("user_hash")
            except Exception:  # noqa: BLE001 - not a JSON object string: no hash, the danmaku still counts
                h = None
            uid = f"hash:{h}" if isinstance(h, (str, int)) and h else ""
        return Danmaku(uid, uname, text, bool(len(user) > 2 and user[2] == 1))
    data = cmd.get("data")
    if not isinstance(data, dict):
        return None
    if name == "SUPER_CHAT_MESSAGE":
        price = _money(data["price"])
        user = data.get("user_info") if isinstance(data.get("user_info"), dict) else {}
        return Paid(_id(data.get("uid")), str(user.get("uname") or ""), price, f"¥{price:g} Super Chat",
                    text=str(data.get("message") or ""), id=_id(data.get("id")))
    if name in ("SEND_GIFT", "GUARD_BUY"):
        gift = "giftName" if name == "SEND_GIFT" else "gift_name"
        uname = data.get("uname") if name == "SEND_GIFT" else data.get("username")
        num = max(1, int(data.get("num") or 1))
        free = name == "SEND_GIFT" and data.get("coin_type") != "gold"
        cny = 0.0 if free else _money(float(data.get("price") or 0) * num / 1000)
        label = f"{num} × {data.get(gift) or 'gift'}" + (f" (¥{cny:g})" if cny else "")
        return Paid(_id(data.get("uid")), str(uname or ""), cny, label)
    return None


def _money(value: Any) -> float:
    """A finite, non-negative amount; ValueError for inf, nan or a negative one."""
    amount = float(value)
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"not an amount: {value!r}")
    return amount


def _id(value: Any) -> str:
    return str(value) if isinstance(value, (int, str)) and value not in (0, "", "0") else ""


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj
