"""Bilibili live danmaku adapter against a local fake of Bilibili's servers.

What is fake: only Bilibili's side (``FakeBilibili``, in tests/bilibili_fake.py): the HTTP
API (room_init, finger/spi, nav, getDanmuInfo, which checks the WBI signature) and the
danmaku websocket ``/sub``, which frames its packets with its own ``struct`` code in the
documented binary format (16-byte header; protocol 0 plain, 1 auth/heartbeat, 2 zlib,
3 brotli batches; ops 2/3/5/7/8), answers the auth packet and every heartbeat, and pushes
what each test gives it. Where the
real code begins: ``BilibiliAdapter.run`` with its aiohttp client, WBI signing, packet
parser, command mapping, heartbeats and reconnects, pointed at the fake by the
``live_api`` / ``web_api`` / ``server`` options.
"""
from __future__ import annotations

import logging
import struct
import zlib

import pytest
from adapter_harness import Running, wait_until

from conftest import need_module  # noqa: E402

brotli = need_module("brotli", "pip install -e plugins/bilibili")
need_module("talker_stream_bilibili", "pip install -e plugins/bilibili")
from talker_stream.audience.adapters import MODERATOR, PAID, REGULAR  # noqa: E402
from talker_stream_bilibili import BilibiliAdapter, BilibiliOptions  # noqa: E402
from talker_stream_bilibili.web import wbi_sign  # noqa: E402
from bilibili_fake import IMG_KEY, OWNER, REAL, SHORT, SUB_KEY, FakeBilibili, batch, danmaku, frame, gift, super_chat  # noqa: E402

COOKIE = "SESSDATA=sess-SECRET-123%2C456; bili_jct=csrf-SECRET-789; DedeUserID=777; buvid3=BV3-FROM-COOKIE"


@pytest.fixture
def bili():
    fake = FakeBilibili()
    with fake.server:
        yield fake


@pytest.fixture(autouse=True)
def no_cookie(monkeypatch):
    monkeypatch.delenv("TEST_BILI_COOKIE", raising=False)


def options(fake: FakeBilibili, **kw) -> BilibiliOptions:
    base = dict(room_id=SHORT, cookie_env="TEST_BILI_COOKIE", live_api=fake.server.url, web_api=fake.server.url,
                server=f"ws://127.0.0.1:{fake.server.port}/sub", heartbeat_seconds=30.0, reconnect_seconds=0.1,
                timeout=5.0)
    return BilibiliOptions(**(base | kw))


def connected(fake: FakeBilibili, n: int = 1) -> None:
    wait_until(lambda: len(fake.sockets) >= n, what=f"connection {n} to be authenticated")


def test_wbi_signature_matches_the_documented_example():
    # bilibili-API-collect docs/misc/sign/wbi.md: mixin key ea1db124..., this w_rid for these parameters
    signed = wbi_sign({"foo": "114", "bar": "514", "zab": 1919810}, IMG_KEY, SUB_KEY, wts=1702204169)
    assert signed["w_rid"] == "8f6f2b5b3d485fe1886cec6a0be8c5d4" and signed["wts"] == "1702204169"


def test_commands_in_compressed_batches_map_to_chat_messages(bili, caplog):
    caplog.set_level(logging.DEBUG)
    with Running(BilibiliAdapter(options(bili))) as run:
        connected(bili)
        bili.push(batch([
            danmaku(1001, "Ann", "你叫什么名字？"),
            {"cmd": "INTERACT_WORD", "data": {"uid": 5, "uname": "x", "msg_type": 1}},
            {"cmd": "SOME_NEW_COMMAND", "data": [1, 2]},
            danmaku(1002, "Mo", "管理员来了", admin=1, cmd="DANMU_MSG:4:0:2:2:2:0"),
            super_chat(77, 1003, "Bob", "会唱歌吗？", 30),
            super_chat(77, 1003, "Bob", "歌を歌えますか？", 30, cmd="SUPER_CHAT_MESSAGE_JPN"),
            super_chat(77, 1003, "Bob", "会唱歌吗？", 30),  # the same Super Chat again: answered once
        ], version=3))
        bili.push(batch([
            gift(1004, "Cid", price=1000, num=5),  # ¥5 of paid gifts ...
            danmaku(1004, "Cid", "谢谢！能回答我吗"),  # ... make Cid's next danmaku paid
            danmaku(1004, "Cid", "再问一个"),  # ... but only the next one
            gift(1005, "Dee", price=0, num=10, coin="silver"),  # free gifts raise nothing
            danmaku(1005, "Dee", "免费的礼物"),
        ], version=2))
        bili.push(frame(5, danmaku(OWNER, "主播", "大家好")))  # plain (protocol 0) packet from the streamer
        bili.push(frame(5, danmaku(0, "匿***", "看不到名字", user_hash="3141592653")))
        ann, mo, bob, cid, cid2, dee, owner, anon = run.take(8)
    assert (ann.platform, ann.channel, ann.author, ann.author_id, ann.text) == (
        "bilibili", str(REAL), "Ann", "1001", "你叫什么名字？")
    assert ann.priority == REGULAR
    assert mo.moderator and mo.priority == MODERATOR and mo.text == "管理员来了"
    assert (bob.author, bob.text, bob.paid, bob.paid_label, bob.priority) == ("Bob", "会唱歌吗？", 30.0,
                                                                              "¥30 Super Chat", PAID)
    assert (cid.text, cid.paid, cid.paid_label, cid.priority) == ("谢谢！能回答我吗", 5.0, "¥5 in gifts", PAID)
    assert (cid2.paid, cid2.priority) == (0.0, REGULAR)
    assert (dee.paid, dee.priority) == (0.0, REGULAR)
    assert owner.moderator and owner.author_id == str(OWNER)
    assert (anon.author, anon.author_id) == ("匿***", "hash:3141592653")
    assert run.inbox.empty()
    auth, = bili.auths
    assert auth == {"uid": 0, "roomid": REAL, "protover": 3, "platform": "web", "type": 2, "key": "TOKEN-1",
                    "buvid": "BV3-FROM-SPI"}
    assert bili.sign_ok == [True] and bili.danmu_requests[0]["id"] == str(REAL)
    assert "Cid sent 5 × 小花花 (¥5)" in caplog.text
    assert "TOKEN-1" not in caplog.text


def test_heartbeats_are_sent_and_answered(bili):
    adapter = BilibiliAdapter(options(bili, heartbeat_seconds=0.1))
    with Running(adapter):
        connected(bili)
        wait_until(lambda: bili.heartbeats >= 3, what="three heartbeats")
        wait_until(lambda: adapter.popularity == bili.popularity, what="the popularity from a heartbeat reply")
    assert len(bili.auths) == 1  # heartbeats kept the one connection


def test_malformed_packets_and_unknown_commands_do_not_crash(bili):
    adapter = BilibiliAdapter(options(bili))
    good = frame(5, danmaku(1, "Ann", "还在吗"))
    bomb = frame(5, zlib.compress(b"\0" * (40 << 20)), 2)  # 40 MiB of zeros in ~40 KB
    with Running(adapter) as run:
        connected(bili)
        for data in (
            b"\x00\x00\x00", good[:10], good[:-3],  # truncated
            struct.pack(">IHHII", 8, 16, 0, 5, 0),  # length shorter than the header
            struct.pack(">IHHII", 40, 99, 0, 5, 0) + b"x" * 24,  # header longer than the packet
            frame(5, b"\x78\x9c not zlib at all", 2), frame(5, b"not brotli", 3), bomb,
            frame(5, b"{not json"), frame(5, b"[1, 2, 3]"), frame(5, b'{"cmd": 5}'), frame(5, "\ud800".encode("utf-8", "surrogatepass")),
            frame(5, {"cmd": "DANMU_MSG", "info": [[], None, None]}), frame(5, {"cmd": "DANMU_MSG", "info": "x"}),
            frame(5, {"cmd": "DANMU_MSG", "info": [[0], "no user"]}),
            frame(5, {"cmd": "SUPER_CHAT_MESSAGE", "data": {"price": "lots", "message": "?"}}),
            frame(5, {"cmd": "SEND_GIFT", "data": {"num": "many", "price": []}}),
            frame(5, {"cmd": "SEND_GIFT", "data": None}), frame(8, b"?", 1), frame(3, b"", 1), frame(99, b"?"),
            frame(5, danmaku(2, "Long", "长" * 100_000)),
            batch([danmaku(3, "Bob", "还活着吗")], 3) + b"\x00\x00\x01",  # good batch, trailing junk
        ):
            bili.push(data)
        bili.push(good)
        long, bob, ann = run.take(3)
    assert (long.author, len(long.text)) == ("Long", 2000)
    assert (bob.text, ann.text) == ("还活着吗", "还在吗")
    assert adapter.connects == 1 and len(bili.auths) == 1  # none of it cost the connection


def test_overflowing_numbers_and_deep_nesting_skip_only_that_command(bili):
    """1e999 gifts, a 400-digit price, JSON nested 100,000 deep: each command is skipped, the connection stays."""
    adapter = BilibiliAdapter(options(bili))
    deep = b'{"cmd": "DANMU_MSG", "info": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with Running(adapter) as run:
        connected(bili)
        for data in (
            frame(5, b'{"cmd": "SEND_GIFT", "data": {"uid": 9, "uname": "Inf", "num": 1e999, "price": 1000, '
                     b'"coin_type": "gold"}}'),
            frame(5, b'{"cmd": "GUARD_BUY", "data": {"uid": 9, "username": "Big", "num": 1, "price": '
                     + b"9" * 400 + b"}}"),
            frame(5, b'{"cmd": "SUPER_CHAT_MESSAGE", "data": {"id": 1, "uid": 9, "price": ' + b"9" * 400
                     + b', "message": "huge"}}'),
            frame(5, b'{"cmd": "SUPER_CHAT_MESSAGE", "data": {"id": 2, "uid": 9, "price": 1e999, "message": "inf"}}'),
            frame(5, deep),
            frame(5, zlib.compress(frame(5, deep) + frame(5, danmaku(2, "Bob", "同一批"))), 2),  # rest of a batch
        ):
            bili.push(data)
        bili.push(frame(5, danmaku(1, "Ann", "还在吗")))
        assert [m.text for m in run.take(2)] == ["同一批", "还在吗"]
        assert run.inbox.empty()
    assert adapter.connects == 1 and len(bili.auths) == 1  # none of it cost the connection


def test_dropped_connection_reconnects_and_misses_nothing_after(bili, caplog):
    caplog.set_level(logging.INFO)
    adapter = BilibiliAdapter(options(bili))
    with Running(adapter) as run:
        connected(bili)
        bili.push(frame(5, danmaku(1, "Ann", "第一条")))
        assert run.take(1)[0].text == "第一条"
        bili.drop()
        connected(bili, 2)
        bili.push(batch([danmaku(2, "Bob", "重连后第一条"), danmaku(3, "Cid", "重连后第二条")], 3))
        assert [m.text for m in run.take(2)] == ["重连后第一条", "重连后第二条"]
    assert [a["key"] for a in bili.auths] == ["TOKEN-1", "TOKEN-2"]  # a fresh token for each connection
    assert "disconnected, reconnecting" in caplog.text


def test_refused_auth_is_logged_and_retried(bili, caplog):
    bili.refuse_auths = 1
    with Running(BilibiliAdapter(options(bili))) as run:
        connected(bili)
        bili.push(frame(5, danmaku(1, "Ann", "登录了")))
        assert run.take(1)[0].text == "登录了"
    assert len(bili.auths) == 2 and "refused the login (code -101)" in caplog.text


def test_cookie_logs_in_and_never_reaches_the_log(bili, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_BILI_COOKIE", COOKIE)
    adapter = BilibiliAdapter(options(bili))
    with Running(adapter) as run:
        connected(bili)
        bili.push(frame(5, danmaku(1, "Ann", "hi")))
        message = run.take(1)[0]
        assert adapter.reply(message, "hello") is False  # answers are spoken, not sent as danmaku
    auth, = bili.auths
    assert (auth["uid"], auth["buvid"]) == (777, "BV3-FROM-COOKIE")
    assert "SESSDATA=sess-SECRET-123%2C456" in bili.cookies[0]
    assert "answers are spoken, not sent as danmaku" in caplog.text
    for secret in ("SECRET", "TOKEN-1"):
        assert secret not in caplog.text


def test_refused_token_falls_back_to_an_anonymous_login(bili, caplog):
    caplog.set_level(logging.INFO)
    bili.refuse_tokens = True  # getDanmuInfo answers -352 (risk control); the server still takes key ""
    with Running(BilibiliAdapter(options(bili))) as run:
        connected(bili)
        bili.push(frame(5, danmaku(1, "Ann", "匿名也行")))
        assert run.take(1)[0].text == "匿名也行"
    assert bili.auths[0]["key"] == "" and "no danmaku token (getDanmuInfo: code -352: -352" in caplog.text


def test_stop_returns_promptly_while_connected(bili):
    run = Running(BilibiliAdapter(options(bili, heartbeat_seconds=60.0)))
    with run:
        connected(bili)
        run.stop(timeout=5.0)  # asserts that run() returned
