"""The flood across platforms: 100 chat messages a second for 30 s, through the real adapters.

What is faked, and only that: the platforms' servers. Twitch's chat server is FakeTwitch
(tests/twitch_fake.py: Twitch's IRC dialect over TLS, tagged lines), Bilibili's HTTP API and
danmaku websocket are FakeBilibili (tests/bilibili_fake.py: the binary packet format, zlib
and brotli batches), YouTube's Data API is FakeYouTube (tests/youtube_fake.py: paged
liveChatMessages with a polling interval), Discord's REST API and gateway are FakeDiscord
(tests/discord_fake.py). The test plays the audience by handing those servers what their
users would have typed, and some malformed packets a real server could send.

Where the real code begins: at the network. The four real adapter plugins (Twitch's IRC
client, the Bilibili websocket client, the YouTube poller, discord.py's client) are created
by ``open_adapters`` from a Settings whose ``[chat]`` and ``[adapters.NAME]`` tables point
at the fakes, and run by the real ``Audience`` runner: the real question queue (subclassed
only to record its outcomes and each take), the real SmolLM2 conversation, the real live
avatar with the Piper voice and the mesh face, into a frame-counting sink, and answers back
through the adapters that reply (Twitch within its send budget, YouTube, Discord).
"""
from __future__ import annotations

import os
import random
import struct
import time
import zlib
from collections import Counter, defaultdict

import pytest
from conftest import make_settings, need_module, wait_for
from test_audience import (CAP, AuditedQueue, CaptionSink, _flood_message, _rss_mb, brain,
                           piper, smollm)  # noqa: F401 - piper and smollm are fixtures shared with test_audience

from talker_stream.frames import PAID
from talker_stream.audience.runner import Audience, open_adapters
from talker_stream.live import LiveAvatar

need_module("brotli", "pip install -e plugins/bilibili")
for plugin in ("twitch", "bilibili", "youtube", "discord"):
    need_module(f"talker_stream_{plugin}", f"pip install -e plugins/{plugin}")
import discord  # noqa: E402
import yarl  # noqa: E402
from bilibili_fake import SHORT, FakeBilibili, batch, danmaku, frame, gift, super_chat  # noqa: E402
from discord_fake import BOT_ID, GUILD_ID, MOD_ROLE, FakeDiscord, message_payload, user  # noqa: E402
from talker_stream_twitch.irc import parse_line  # noqa: E402
from twitch_fake import TOKEN, FakeTwitch, chat_line, self_signed_cert  # noqa: E402
from youtube_fake import FakeYouTube, paid_item, text_item  # noqa: E402

PLATFORMS = ("twitch", "youtube", "bilibili", "discord")  # _flood_message's platform indexes
FLOOD_SECONDS, RATE, TICK = 30, 100, 0.1  # 100 messages a second, handed out every 0.1 s
FPS = 25.0
TWITCH_BUDGET, TWITCH_WINDOW = 2, 10.0  # chat lines per window: tighter than Twitch's 20/30 s, to be seen
YT_INTERVAL_MS = 500  # what the fake YouTube asks for between polls
LONGEST = {"twitch": 500, "youtube": 200, "bilibili": 100, "discord": 1900}  # what each platform lets through
DISCORD_TOKEN = "MTE.fake-flood-token.for-tests-only"
ENV = {"TEST_FLOOD_TWITCH": TOKEN, "TEST_FLOOD_YT_KEY": "AIzaTEST-flood-key",
       "TEST_FLOOD_YT_TOKEN": "ya29.TEST-flood-token", "TEST_FLOOD_DISCORD": DISCORD_TOKEN}


def uid(author: str) -> int:
    return zlib.crc32(author.encode()) + 1


class FloodQueue(AuditedQueue):
    """test_audience's audited queue, also counting each platform's messages and outcomes."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.by_platform: defaultdict[str, Counter] = defaultdict(Counter)

    def offer(self, message, source=None) -> str:
        out = super().offer(message, source)
        self.by_platform[message.platform][out] += 1
        return out

    def received(self, platform: str) -> int:
        return sum(self.by_platform[platform].values())


class Crowd:
    """What the platforms' users do, written onto each fake server's wire."""

    def __init__(self, twitch: FakeTwitch, bili: FakeBilibili, youtube: FakeYouTube, disc: FakeDiscord) -> None:
        self.twitch, self.bili, self.youtube, self.disc = twitch, bili, youtube, disc
        self.sent: Counter = Counter()  # chat messages each platform's server sent (junk not counted)
        self.junk: Counter = Counter()
        self.twitch_ids: set[str] = set()
        self._n = 0
        self._last_super_chat: dict | None = None

    def tick(self, messages: list[tuple[str, str, str, dict]], junk: bool) -> None:
        lines, commands, items, events = [], [], [], []
        for platform, author, text, extra in messages:
            self._n += 1
            n, text = self._n, text[: LONGEST[platform]]
            mod, paid = bool(extra.get("moderator")), int(extra.get("paid", 0))
            if platform == "twitch":
                tags = (f"badges={'moderator/1' if mod else ''};bits={paid or ''};display-name={author};id=t{n};"
                        f"mod={int(mod)};user-id={uid(author)}")
                self.twitch_ids.add(f"t{n}")
                lines.append(chat_line((f"Cheer{paid} " if paid else "") + text.replace("\x00", ""), tags,
                                       nick=author.lower()))
            elif platform == "bilibili":
                if paid:
                    self._last_super_chat = super_chat(n, uid(author), author, text, paid)
                    commands.append(self._last_super_chat)
                else:
                    commands.append(danmaku(uid(author), author, text, admin=int(mod)))
            elif platform == "youtube":
                if paid:
                    items.append(paid_item(n, author, "superChatEvent", {
                        "amountMicros": str(paid * 1_000_000), "currency": "USD",
                        "amountDisplayString": f"${paid}.00", "userComment": text, "tier": 1}))
                else:
                    items.append(text_item(n, author, text, isChatModerator=mod))
            else:
                events.append(self._discord(author, f"<@{BOT_ID}> {text}", mod))
            self.sent[platform] += 1
        if junk:
            counts = len(lines), len(commands), len(items), len(events)
            self._junk(lines, commands, items, events)
            self.junk.update({p: len(added) - before for p, added, before in
                              zip(("twitch", "bilibili", "youtube", "discord"), (lines, commands, items, events),
                                  counts)})
        self.twitch.conns[0].send("".join(f"{line}\r\n" for line in lines).encode())
        if commands:
            self.bili.push(batch(commands, version=3 if self._n % 2 else 2))
        self.youtube.add(*items)
        for event in events:
            self.disc.dispatch("MESSAGE_CREATE", event)

    @staticmethod
    def _discord(author: str, content: str, mod: bool, bot: bool = False) -> dict:
        event = message_payload(BOT_ID, content, mentions=(BOT_ID,) if f"<@{BOT_ID}>" in content else ())
        event["author"] = user(uid(author), author, bot=bot)
        event["member"]["roles"] = [str(MOD_ROLE)] if mod else []
        return event

    def _junk(self, lines: list, commands: list, items: list, events: list) -> None:
        """What else the platforms' servers send (added to the lists): nothing in it is a question."""
        self._n += 1
        n = self._n
        lines += ["this is not irc", "@bad", ":only.prefix", "\ufffd garbage", "@" + "x=" * 50_000 +
                  " PRIVMSG #chan :a 100 KB line", "PING :tmi.twitch.tv",
                  chat_line("", "msg-id=raid;display-name=Raider;msg-param-viewerCount=50", nick="raider",
                            command="USERNOTICE")]
        commands += [{"cmd": "INTERACT_WORD", "data": {"uid": 5, "uname": "x", "msg_type": 1}},
                     {"cmd": "SOME_NEW_COMMAND", "data": [1, 2]}, gift(99, "gifter", 0, 10, "silver"),
                     {"cmd": "DANMU_MSG", "info": "x"}, {"cmd": "SUPER_CHAT_MESSAGE", "data": None}]
        if self._last_super_chat:  # Bilibili sends a Super Chat more than once: it is answered once
            commands.append(self._last_super_chat)
        for packet in (b"\x00\x00\x00", struct.pack(">IHHII", 8, 16, 0, 5, 0), frame(5, b"\x78\x9c not zlib", 2),
                       frame(5, b"not brotli", 3), frame(5, b"{not json"), frame(99, b"?")):
            self.bili.push(packet)  # malformed packets, each a websocket message of its own
            self.junk["bilibili packets"] += 1
        items += ["junk", {"id": 5}, {"id": f"x{n}", "snippet": "no", "authorDetails": 3},
                  {"kind": "youtube#liveChatMessage", "id": f"d{n}", "snippet": {"type": "messageDeletedEvent"}}]
        if items and isinstance(items[0], dict) and "snippet" in items[0]:
            items.append(items[0])  # a page repeating a message: the same id is delivered once
        events += [self._discord("alice", "no mention here", False), self._discord("botty", f"<@{BOT_ID}> hi", False,
                                                                                  bot=True)]


def flood_messages(rng: random.Random, tick: int) -> list[tuple[str, str, str, dict]]:
    """test_audience's mix (spammers, trolls, near-duplicates, 0.5 % paid, 3 % moderators),
    on four platforms. Discord has no paid messages: those go to Twitch as bits."""
    out = []
    for j in range(int(RATE * TICK)):
        k, author, text, extra = _flood_message(rng, tick * int(RATE * TICK) + j)
        platform = PLATFORMS[k]
        if platform == "discord" and extra.get("paid"):
            platform = "twitch"
        out.append((platform, author, text, extra))
    return out


@pytest.fixture
def servers(tmp_path, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TEST_FLOOD_BILI_COOKIE", raising=False)
    cert = self_signed_cert(tmp_path)
    twitch, bili, youtube = FakeTwitch(cert=cert), FakeBilibili(), FakeYouTube(YT_INTERVAL_MS)
    disc = FakeDiscord(DISCORD_TOKEN).start()
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{disc.port}/api/v10")
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(f"ws://127.0.0.1:{disc.port}/ws"))
    with bili.server, youtube.server:
        yield twitch, bili, youtube, disc, cert[0]
    twitch.close()
    disc.stop()


def flood_settings(twitch: FakeTwitch, bili: FakeBilibili, youtube: FakeYouTube, ca_file) -> object:
    return make_settings(**{
        "live.sinks": [], "video.fps": FPS,
        "chat.adapters": list(PLATFORMS), "chat.max_size": CAP, "chat.max_age_seconds": 60.0, "chat.per_user": 2,
        "chat.per_user_seconds": 30.0,
        "adapters.twitch.channels": ["chan"], "adapters.twitch.host": "127.0.0.1", "adapters.twitch.port": twitch.port,
        "adapters.twitch.ca_file": str(ca_file), "adapters.twitch.nick": "tessbot",
        "adapters.twitch.token_env": "TEST_FLOOD_TWITCH", "adapters.twitch.reply_in_chat": True,
        "adapters.twitch.messages_per_window": TWITCH_BUDGET, "adapters.twitch.window_seconds": TWITCH_WINDOW,
        "adapters.bilibili.room_id": SHORT, "adapters.bilibili.cookie_env": "TEST_FLOOD_BILI_COOKIE",
        "adapters.bilibili.live_api": bili.server.url, "adapters.bilibili.web_api": bili.server.url,
        "adapters.bilibili.server": f"ws://127.0.0.1:{bili.server.port}/sub",
        "adapters.bilibili.heartbeat_seconds": 1.0,
        "adapters.youtube.video_id": "VIDEO1", "adapters.youtube.api_key_env": "TEST_FLOOD_YT_KEY",
        "adapters.youtube.oauth_token_env": "TEST_FLOOD_YT_TOKEN",
        "adapters.youtube.base_url": f"{youtube.server.url}/youtube/v3", "adapters.youtube.reply_in_chat": True,
        "adapters.youtube.min_poll_seconds": 0.1,  # below the fake's interval: the server's word is kept
        "adapters.discord.guilds": [GUILD_ID], "adapters.discord.voice": False,
        "adapters.discord.token_env": "TEST_FLOOD_DISCORD",
    })


@pytest.mark.slow  # 30 s of flood, plus a minute of warm-up and drain
def test_flood_across_platforms_through_the_real_adapters(servers, smollm, animator, piper, caplog):  # noqa: F811
    twitch, bili, youtube, disc, ca_file = servers
    settings = flood_settings(twitch, bili, youtube, ca_file)
    sink = CaptionSink()
    questions = FloodQueue.from_settings(settings)
    conv = brain(smollm, 12)  # short answers: more of them in 30 s on two loaded cores
    live = LiveAvatar(settings, [sink], tts=piper, engine=animator).start()
    adapters = {a.name: a for a in open_adapters(settings)}
    audience = Audience(live, conv, list(adapters.values()), questions, settings.chat.reply_in_chat).start()
    crowd = Crowd(twitch, bili, youtube, disc)
    rng = random.Random(5)
    try:
        conn = twitch.joined(1)
        assert wait_for(lambda: bili.sockets and youtube.polls and adapters["discord"].ready.is_set(), 30), \
            "every adapter connected"
        conn.send(chat_line("Hello Tess, are you ready for the show?", "display-name=early;id=t0;user-id=1",
                            nick="early"))  # every engine has run once
        crowd.sent["twitch"] += 1
        assert wait_for(lambda: audience.answered == 1, 60)
        rss0, frames0, answered0, t0 = _rss_mb(), len(sink.frames), audience.answered, time.monotonic()
        cpu0 = time.process_time()
        twitch_lines0 = len(twitch.privmsgs())
        for tick in range(int(FLOOD_SECONDS / TICK)):
            if (wait := t0 + tick * TICK - time.monotonic()) > 0:
                time.sleep(wait)
            messages = flood_messages(rng, tick)
            if tick == 0:  # the first question of the flood is a Twitch cheer: answered first, in chat too
                messages[0] = ("twitch", "firstcheer", "What should we play first?", {"paid": 100})
            crowd.tick(messages, junk=tick % 20 == 10)
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        frames, pictures = len(sink.frames) - frames0, sum(f[4] for f in sink.frames[frames0:])
        answered = audience.answered - answered0
        arrived = wait_for(lambda: all(questions.received(p) >= crowd.sent[p] for p in PLATFORMS), 30)
        rss1 = _rss_mb()
        stats, live_stats = audience.stats(), live.stats()
        states = {name: getattr(a, "state", "") for name, a in adapters.items()}
    finally:
        audience.stop()
        live.stop()
    received = {p: questions.received(p) for p in PLATFORMS}
    print(f"\ncross-platform flood: sent {dict(crowd.sent)} (+ junk {dict(crowd.junk)}) in {elapsed:.1f} s; "
          f"received {received}; outcomes {dict(questions.outcomes)}; per platform "
          f"{ {p: dict(questions.by_platform[p]) for p in PLATFORMS} }; {answered} answers; "
          f"{frames / elapsed:.1f} slots/s, {pictures / elapsed:.1f} pictures/s (target {FPS}); "
          f"RSS {rss0:.0f} -> {rss1:.0f} MB; max queue {questions.max_len}; twitch lines "
          f"{len(twitch.privmsgs()) - twitch_lines0}, youtube posts {len(youtube.posts)}, discord posts "
          f"{len(disc.posted)}; process CPU {100 * cpu / elapsed:.0f} % of one core, load average "
          f"{os.getloadavg()[0]:.2f}; {stats}")

    # every platform delivered every chat message its server sent, and nothing of the junk
    assert arrived and received == dict(crowd.sent) and sum(crowd.sent.values()) == FLOOD_SECONDS * RATE + 1, \
        received
    assert sum(questions.outcomes.values()) == sum(received.values()), "every message got exactly one outcome"
    assert all(questions.by_platform[p]["accepted"] > 0 for p in PLATFORMS)
    # nothing crashed: no restarts, no reconnects, nothing logged at ERROR
    assert all(r == 0 for r in audience.restarts.values()), audience.restarts
    assert not [r.getMessage() for r in caplog.records if r.levelno >= 40]
    assert len(twitch.conns) == 1 and adapters["twitch"].bad_lines >= 3 * FLOOD_SECONDS / 2  # a junk round in 2 s
    assert adapters["bilibili"].connects == 1 and len(bili.auths) == 1 and bili.heartbeats >= 5
    assert disc.identifies == 1 and states["youtube"] == "reading live chat", states
    assert stats["errors"] == 0 and live_stats["tts_errors"] == 0
    # YouTube polled at the interval its server asked for, not at our lower floor
    polls = [t for t, _, _ in youtube.polls if t >= t0]
    assert min(b - a for a, b in zip(polls, polls[1:])) >= 0.9 * YT_INTERVAL_MS / 1000
    # memory stays bounded
    assert questions.max_len <= CAP and stats["users_tracked"] <= 20000
    assert rss1 - rss0 < 150, f"memory grew by {rss1 - rss0:.0f} MB"
    # priorities held at every take: nothing was taken while a higher priority waited
    assert all(taken >= left for taken, left in questions.takes), "a question was taken ahead of a higher priority"
    assert sum(p == PAID for p, _ in questions.takes) >= 2, "paid questions were answered"
    assert stats["merged"] > 0 and stats["rate_limited"] > 0 and stats["refused"] > 0 and stats["dropped_full"] > 0
    # the avatar kept answering and the feed kept its fps
    assert answered >= 3, f"the avatar kept answering: {answered} answers in {elapsed:.0f} s"
    assert pictures / elapsed >= 0.8 * FPS, "pictures kept coming at (nearly) the configured rate"
    assert frames / elapsed >= 0.95 * FPS, "the clock never stalled: one slot per frame period"
    # answers went back to chat: Twitch threads them under the question, within its send budget
    lines = [(t, parse_line(line)) for t, line in twitch.privmsgs()]
    assert len(lines) - twitch_lines0 >= 1 and len(lines) == adapters["twitch"].sent
    assert all(m.tags.get("reply-parent-msg-id") in crowd.twitch_ids | {"t0"} for _, m in lines)
    times = [t for t, _ in lines]
    slack = 0.2  # the server reads a line a little after the client's budget counted it
    assert all(times[i + TWITCH_BUDGET] - times[i] >= TWITCH_WINDOW - slack
               for i in range(len(times) - TWITCH_BUDGET)), times
    assert stats["chat_replies"] >= 1 and len(youtube.posts) + len(disc.posted) + len(lines) >= 1
