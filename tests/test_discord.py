"""The Discord adapter (plugins/discord) driving discord.py's real Client.

What is fake: Discord's servers only. ``tests/discord_fake.py`` serves Discord's REST API
and gateway websocket on 127.0.0.1 (HELLO -> IDENTIFY -> READY + GUILD_CREATE, events,
RESUME, voice-state requests), and discord.py is pointed at it through two internal names
(``discord.http.Route.BASE``, ``DiscordWebSocket.DEFAULT_GATEWAY``; discord.py is pinned).
Where the real code begins: everything from discord.py's HTTP client and gateway
websocket up (parsing, caches, permissions, the app-command tree, interaction responses,
resume logic) and all of the adapter.
"""
from __future__ import annotations

import logging
import queue
import threading

import discord
import pytest
import yarl

from discord_fake import (ALICE_ID, BOB_ID, BOT_ID, GUILD_ID, OWNER_ID, TEXT_ID, FakeDiscord, message_payload)

pytest.importorskip("talker_stream_discord")
from talker_stream_discord import DiscordAdapter, Options  # noqa: E402
from talker_stream_discord.text import split_message  # noqa: E402

TOKEN = "MTE.fake-bot-token.for-tests-only-XYZ"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # message, arguments and any traceback


@pytest.fixture
def logs():
    cap = _Capture()
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(cap)
    yield cap
    root.removeHandler(cap)
    root.setLevel(old)
    assert not [line for line in cap.lines if TOKEN in line or TOKEN.split(".")[1] in line], "the token was logged"


@pytest.fixture
def fake(monkeypatch, logs):
    server = FakeDiscord(TOKEN).start()
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{server.port}/api/v10")
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(f"ws://127.0.0.1:{server.port}/ws"))
    monkeypatch.setenv("DISCORD_BOT_TOKEN", TOKEN)
    yield server
    server.stop()


class Running:
    """The adapter's run() on its own thread, as the core runs it."""

    def __init__(self, adapter: DiscordAdapter) -> None:
        self.adapter = adapter
        self.messages: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.adapter.run(self.messages.put)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        assert self.adapter.ready.wait(15), f"never ready: {self.error}"
        return self

    def __exit__(self, *exc) -> None:
        self.adapter.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "stop() did not end run()"
        assert self.error is None, self.error

    def next(self, timeout: float = 10.0):
        return self.messages.get(timeout=timeout)


def test_mention_becomes_message_and_reply_is_posted_as_a_reply(fake):
    adapter = DiscordAdapter(Options(guilds=[GUILD_ID]))
    with Running(adapter) as run:
        msg = message_payload(ALICE_ID, f"<@{BOT_ID}> what is your favourite colour?", mentions=(BOT_ID,))
        fake.dispatch("MESSAGE_CREATE", msg)
        m = run.next()
        assert (m.platform, m.channel, m.author, m.author_id) == ("discord", str(TEXT_ID), "Alice", str(ALICE_ID))
        assert m.text == "what is your favourite colour?"
        assert not m.moderator and m.priority == 0 and m.who == f"discord:{ALICE_ID}"

        assert adapter.reply(m, "Blue, like @everyone's favourite sky.")
        post = fake.wait_for(lambda: fake.posted and fake.posted[-1])
        assert post["channel_id"] == str(TEXT_ID)
        assert post["content"] == "Blue, like @everyone's favourite sky."
        assert str(post["message_reference"]["message_id"]) == msg["id"]  # a reply to the question
        assert post["allowed_mentions"]["parse"] == []  # the answer can ping nobody

        # a moderator (a role with Manage Messages) and the server owner count as moderators
        fake.dispatch("MESSAGE_CREATE", message_payload(BOB_ID, f"<@!{BOT_ID}> hi", mentions=(BOT_ID,)))
        fake.dispatch("MESSAGE_CREATE", message_payload(OWNER_ID, f"hey <@{BOT_ID}>", mentions=(BOT_ID,)))
        bob, owner = run.next(), run.next()
        assert (bob.author, bob.moderator, bob.text) == ("Bob", True, "hi")
        assert (owner.author, owner.moderator, owner.text) == ("Owner", True, "hey")
    assert fake.commands[str(GUILD_ID)] and {c["name"] for c in fake.commands[str(GUILD_ID)]} == {"ask", "join", "leave"}
    assert fake.identifies == 1 and not fake.bad_auth


def test_messages_without_a_mention_are_ignored(fake):
    with Running(DiscordAdapter(Options(guilds=[GUILD_ID]))) as run:
        fake.dispatch("MESSAGE_CREATE", message_payload(ALICE_ID, "talker is great, nobody ask it anything"))
        fake.dispatch("MESSAGE_CREATE", message_payload(ALICE_ID, f"<@{OWNER_ID}> not the bot", mentions=(OWNER_ID,)))
        fake.dispatch("MESSAGE_CREATE", message_payload(ALICE_ID, f"<@{BOT_ID}>", mentions=(BOT_ID,)))  # nothing asked
        fake.dispatch("MESSAGE_CREATE", message_payload(ALICE_ID, f"<@{BOT_ID}> the marker", mentions=(BOT_ID,)))
        assert run.next().text == "the marker"  # events arrive in order: the three before it were dropped
        assert run.messages.empty()


def test_ask_slash_command_defers_and_follows_up(fake):
    adapter = DiscordAdapter(Options(guilds=[GUILD_ID]))
    with Running(adapter) as run:
        fake.wait_for(lambda: fake.commands.get(str(GUILD_ID)))
        inter = fake.interaction("ask", [{"name": "question", "type": 3, "value": "how tall is a giraffe?"}],
                                 author=BOB_ID)
        fake.dispatch("INTERACTION_CREATE", inter)
        m = run.next()
        assert (m.text, m.author, m.moderator, m.channel) == ("how tall is a giraffe?", "Bob", True, str(TEXT_ID))
        cb = fake.wait_for(lambda: fake.callbacks and fake.callbacks[-1])
        assert cb["interaction_id"] == inter["id"] and cb["type"] == 5  # deferred: "talker is thinking..."

        long_answer = " ".join(f"Giraffes are tall, sentence {i}." for i in range(150))  # ~4800 chars
        assert adapter.reply(m, long_answer)
        fake.wait_for(lambda: len(fake.followups) >= 3)
        parts = [f["content"] for f in fake.followups]
        assert all(f["itoken"] == inter["token"] for f in fake.followups)
        assert all(len(p) < 2000 for p in parts) and " ".join(parts) == long_answer
        assert all(p.endswith(".") for p in parts)  # cut between sentences


def test_dropped_gateway_resumes_and_misses_nothing(fake):
    adapter = DiscordAdapter(Options(guilds=[GUILD_ID]))
    with Running(adapter) as run:
        fake.dispatch("MESSAGE_CREATE", message_payload(ALICE_ID, f"<@{BOT_ID}> before", mentions=(BOT_ID,)))
        assert run.next().text == "before"
        fake.drop()
        # said while the bot was away: Discord replays it on RESUME
        fake.dispatch("MESSAGE_CREATE", message_payload(ALICE_ID, f"<@{BOT_ID}> during", mentions=(BOT_ID,)))
        assert run.next(timeout=30).text == "during"
        fake.dispatch("MESSAGE_CREATE", message_payload(ALICE_ID, f"<@{BOT_ID}> after", mentions=(BOT_ID,)))
        m = run.next()
        assert m.text == "after"
        assert adapter.reply(m, "still here")
        fake.wait_for(lambda: fake.posted and fake.posted[-1]["content"] == "still here")
    resume = [op for op in fake.gateway_ops if op["op"] == 6]
    assert fake.resumes == 1 and fake.identifies == 1 and fake.connections == 2
    assert resume[0]["d"]["session_id"] == fake.session_id and resume[0]["d"]["token"] == "<token>"
    assert resume[0]["d"]["seq"] >= 3  # READY, GUILD_CREATE, "before"


def test_missing_token_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN_FOR_THIS_TEST", raising=False)
    with pytest.raises(Exception, match="DISCORD_TOKEN_FOR_THIS_TEST"):
        DiscordAdapter(Options(token_env="DISCORD_TOKEN_FOR_THIS_TEST")).run(lambda m: None)


def test_reply_before_connecting_returns_false():
    from talker_stream.adapters import ChatMessage

    assert DiscordAdapter().reply(ChatMessage("discord", "1", "a", "q"), "answer") is False


def test_split_message_keeps_sentences_and_bounds():
    text = "First paragraph. " * 100 + "\n\n" + "x" * 5000
    parts = split_message(text)
    assert all(0 < len(p) < 2000 for p in parts)
    assert parts[0].endswith("First paragraph.")  # cut at the paragraph/sentence, not mid-word
    assert "".join(parts).replace(" ", "") == text.replace(" ", "").replace("\n", "")
    flood = split_message("word " * 100000)
    assert len(flood) == 8 and flood[-1].endswith("…")  # bounded: no 250-message answer
