"""The HTTP calls before the danmaku websocket: real room id, WBI keys, danmaku token.

- ``GET {live_api}/room/v1/Room/room_init?id=ROOM`` -> ``data.room_id`` (the real id: the
  short number in a vanity URL is not accepted by the danmaku server) and ``data.uid``
  (the streamer, who counts as a moderator).
- ``GET {web_api}/x/frontend/finger/spi`` -> ``data.b_3``: a ``buvid3`` browser id, which
  anonymous visitors need for the next two calls.
- ``GET {web_api}/x/web-interface/nav`` -> ``data.wbi_img.img_url`` / ``sub_url``: the
  day's WBI keys (the file names without extension), answered even when logged out (with
  code -101).
- ``GET {live_api}/xlive/web-room/v1/index/getDanmuInfo?id=ROOM&type=0&wts=..&w_rid=..`` ->
  ``data.token`` and ``data.host_list[].host/wss_port``. WBI signing has been required here
  since 2025-05-26 (bilibili-API-collect docs/live/message_stream.md, docs/misc/sign/wbi.md):
  ``w_rid = md5(sorted, %-encoded query incl. wts + mixin_key)`` where ``mixin_key`` is
  ``img_key + sub_key`` shuffled by a fixed table and cut to 32 characters.
"""
from __future__ import annotations

import hashlib
import time
import urllib.parse
from typing import Any

MIXIN_KEY_ENC_TAB = (
    46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35, 27, 43, 5, 49,
    33, 9, 42, 19, 29, 28, 14, 39, 12, 38, 41, 13, 37, 48, 7, 16, 24, 55, 40,
    61, 26, 17, 0, 1, 60, 51, 30, 4, 22, 25, 54, 21, 56, 59, 6, 63, 57, 62, 11,
    36, 20, 34, 44, 52,
)
DEFAULT_SERVER = "wss://broadcastlv.chat.bilibili.com:443/sub"
HEADERS = {  # the API turns away clients that do not look like a browser on live.bilibili.com
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Referer": "https://live.bilibili.com/",
    "Origin": "https://live.bilibili.com",
}


def mixin_key(img_key: str, sub_key: str) -> str:
    raw = img_key + sub_key
    return "".join(raw[i] for i in MIXIN_KEY_ENC_TAB if i < len(raw))[:32]


def wbi_sign(params: dict, img_key: str, sub_key: str, wts: int | None = None) -> dict:
    """*params* plus ``wts`` and ``w_rid``."""
    signed = {k: "".join(c for c in str(v) if c not in "!'()*") for k, v in params.items()}
    signed["wts"] = str(int(time.time()) if wts is None else wts)
    query = urllib.parse.urlencode(sorted(signed.items()), quote_via=urllib.parse.quote)
    signed["w_rid"] = hashlib.md5((query + mixin_key(img_key, sub_key)).encode()).hexdigest()
    return signed


def parse_cookie(text: str) -> dict[str, str]:
    """``a=1; b=2`` (as copied from a browser) -> {"a": "1", "b": "2"}."""
    out = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            out[name] = value
    return out


def _data(body: Any) -> dict:
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, dict) else {}


async def _get(session: Any, url: str, params: dict | None = None, cookies: dict | None = None) -> dict:
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else None
    async with session.get(url, params=params, headers=headers) as r:
        try:
            return await r.json(content_type=None)
        except ValueError:
            return {}


async def room_init(session: Any, live_api: str, room: int) -> tuple[int, str]:
    data = _data(await _get(session, f"{live_api}/room/v1/Room/room_init", {"id": room}))
    real = data.get("room_id")
    owner = data.get("uid")
    return (real if isinstance(real, int) and real > 0 else room), (str(owner) if owner else "")


async def buvid3(session: Any, web_api: str) -> str:
    value = _data(await _get(session, f"{web_api}/x/frontend/finger/spi")).get("b_3")
    return value if isinstance(value, str) else ""


async def wbi_keys(session: Any, web_api: str, cookies: dict) -> tuple[str, str] | None:
    img = _data(await _get(session, f"{web_api}/x/web-interface/nav", cookies=cookies)).get("wbi_img") or {}
    try:
        keys = tuple(img[k].rsplit("/", 1)[-1].split(".")[0] for k in ("img_url", "sub_url"))
    except (KeyError, AttributeError, TypeError):
        return None
    return keys if all(keys) else None


async def danmu_info(session: Any, live_api: str, room: int, keys: tuple[str, str] | None,
                     cookies: dict) -> tuple[str, list[str], str]:
    """(token, wss URLs, the API's complaint if it refused)."""
    params: dict = {"id": room, "type": 0}
    if keys:
        params = wbi_sign(params, *keys)
    body = await _get(session, f"{live_api}/xlive/web-room/v1/index/getDanmuInfo", params, cookies)
    data = _data(body)
    token = data.get("token") if isinstance(data.get("token"), str) else ""
    urls = []
    for host in data.get("host_list") or []:
        if isinstance(host, dict) and isinstance(host.get("host"), str):
            urls.append(f"wss://{host['host']}:{int(host.get('wss_port') or 443)}/sub")
    complaint = "" if token else f"code {body.get('code')}: {body.get('message')}" if isinstance(body, dict) else "?"
    return token, urls[:8], complaint
