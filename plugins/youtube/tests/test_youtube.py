"""YouTube Live chat adapter against a local fake of the YouTube Data API v3.

What is fake: only Google's API server (``FakeYouTube``, in tests/youtube_fake.py: the
videos, liveBroadcasts and liveChat/messages endpoints, answering JSON shaped like the API
reference's liveChatMessageListResponse / liveChatMessage resources and its error bodies). Where the
real code begins: ``YouTubeAdapter.run`` itself, with its aiohttp client, polling loop,
error policy and message mapping, pointed at the fake through ``base_url``.
"""
from __future__ import annotations

import logging
import threading
import time

import pytest
from adapter_harness import Running, wait_until

from conftest import need_module  # noqa: E402

need_module("talker_stream_youtube", "pip install -e plugins/youtube")
from talker_stream.audience.adapters import MODERATOR, PAID, REGULAR  # noqa: E402
from talker_stream_youtube import YouTubeAdapter, YouTubeOptions  # noqa: E402
from youtube_fake import FakeYouTube, paid_item, text_item  # noqa: E402

KEY = "AIzaTEST-youtube-key-0123456789"
TOKEN = "ya29.TEST-oauth-token-0123456789"


@pytest.fixture
def youtube():
    fake = FakeYouTube()
    with fake.server:
        yield fake


def options(fake: FakeYouTube, **kw) -> YouTubeOptions:
    base = dict(video_id="VIDEO1", api_key_env="TEST_YT_KEY", oauth_token_env="TEST_YT_TOKEN",
                base_url=f"{fake.server.url}/youtube/v3", min_poll_seconds=0.0, rejoin_seconds=0.2, timeout=5.0)
    return YouTubeOptions(**(base | kw))


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("TEST_YT_KEY", KEY)
    monkeypatch.delenv("TEST_YT_TOKEN", raising=False)


def test_messages_map_to_chat_messages_and_backlog_is_skipped(youtube, caplog):
    caplog.set_level(logging.DEBUG)
    youtube.add(text_item(1, "early", "said before we started"), text_item(2, "early2", "also old"))
    with Running(YouTubeAdapter(options(youtube))) as run:
        wait_until(lambda: len(youtube.polls) >= 2, what="a second poll")
        youtube.add(
            text_item(3, "Ann", "what is   your name?"),
            paid_item(4, "Bob", "superChatEvent", {"amountMicros": "5000000", "currency": "USD",
                                                   "amountDisplayString": "$5.00", "userComment": "Do you dream?",
                                                   "tier": 2}),
            paid_item(5, "Cid", "superStickerEvent", {"superStickerMetadata": {"stickerId": "s1",
                                                                               "altText": "Corgi dancing",
                                                                               "language": "en"},
                                                      "amountMicros": "2000000", "currency": "EUR",
                                                      "amountDisplayString": "€2.00", "tier": 1}),
            paid_item(6, "Dee", "superChatEvent", {"amountMicros": "1000000", "currency": "USD",
                                                   "amountDisplayString": "$1.00", "tier": 1}),  # no words
            paid_item(7, "Eve", "memberMilestoneChatEvent", {"memberLevelName": "Fan", "memberMonth": 12,
                                                             "userComment": "a year already!"}),
            {"kind": "youtube#liveChatMessage", "id": "m8", "snippet": {"type": "messageDeletedEvent",
                                                                        "messageDeletedDetails": {}}},
            "junk", {"id": 5}, {"id": "m9", "snippet": "no", "authorDetails": 3},
            {"id": "m10", "snippet": {"type": "textMessageEvent", "textMessageDetails": {"messageText": 7}}},
            text_item(11, "Mo", "mods first?", isChatModerator=True),
            text_item(12, "Owner", "hello chat", isChatOwner=True),
            text_item(3, "Ann", "what is   your name?"),  # the same message id again: dropped
        )
        got = run.take(6)
    ann, bob, cid, eve, mo, owner = got
    assert (ann.platform, ann.channel, ann.author, ann.author_id, ann.text) == (
        "youtube", "chat-1", "Ann", "UCAnn", "what is your name?")
    assert ann.priority == REGULAR and ann.handle == "m3"
    assert (bob.text, bob.paid, bob.paid_label, bob.priority) == ("Do you dream?", 5.0, "$5.00 Super Chat", PAID)
    assert (cid.text, cid.paid, cid.paid_label) == ("Corgi dancing", 2.0, "€2.00 Super Sticker")
    assert (eve.text, eve.paid, eve.paid_label, eve.priority) == ("a year already!", 0.0, "member for 12 months",
                                                                  REGULAR)
    assert mo.moderator and mo.priority == MODERATOR
    assert owner.moderator and owner.priority == MODERATOR
    assert run.inbox.empty()
    assert all(c == KEY for c in youtube.credentials)
    assert KEY not in caplog.text


def test_polling_interval_and_page_tokens_are_honoured(youtube):
    youtube.interval_ms = 300
    with Running(YouTubeAdapter(options(youtube))):
        wait_until(lambda: len(youtube.polls) >= 6, what="six polls")
    polls = [p for p in youtube.polls if p[1] == "chat-1"]
    gaps = [b[0] - a[0] for a, b in zip(polls, polls[1:])]
    assert min(gaps) >= 0.27, gaps  # never sooner than the server asked (a loaded machine only adds delay)
    assert polls[0][2] == ""  # the first call has no page token ...
    assert [p[2] for p in polls[1:]] == youtube.tokens_sent[: len(polls) - 1]  # ... then each follows the last

    youtube.polls.clear()
    with Running(YouTubeAdapter(options(youtube, min_poll_seconds=0.5))):  # our floor beats a shorter interval
        youtube.interval_ms = 50
        wait_until(lambda: len(youtube.polls) >= 4, what="four polls")
    gaps = [b[0] - a[0] for a, b in zip(youtube.polls, youtube.polls[1:])]
    assert min(gaps) >= 0.45, gaps


def test_polling_never_runs_in_a_tight_loop(youtube):
    youtube.interval_ms = 1  # the API asks for 1 ms and min_poll_seconds = 0 (the option allows it)
    with Running(YouTubeAdapter(options(youtube, min_poll_seconds=0.0))):
        wait_until(lambda: len(youtube.polls) >= 3, what="three polls")
    gaps = [b[0] - a[0] for a, b in zip(youtube.polls, youtube.polls[1:])]
    assert min(gaps) >= 0.45, gaps
    from talker_stream_youtube.adapter import _interval  # and a nonsense interval is no crash

    assert (_interval(10 ** 400), _interval(float("nan")), _interval(True), _interval(2500)) == (600.0, 5.0, 5.0, 2.5)


def test_malformed_items_and_error_bodies_skip_only_themselves(youtube, caplog):
    caplog.set_level(logging.DEBUG)
    youtube.raw_answers = [(500, b'{"error": {"code": 500, "errors": 5, "message": 7}}'),  # a generic error
                           (200, b"[" * 100_000 + b"]" * 100_000)]  # nested too deep to parse: an empty page
    youtube.add(
        {"id": "b1", "snippet": {"type": "textMessageEvent", "textMessageDetails": "not an object"}},
        paid_item(2, "Inf", "superChatEvent", {"amountMicros": float("inf"), "userComment": "free money?"}),
        paid_item(3, "Stk", "superStickerEvent", {"superStickerMetadata": "x", "amountMicros": "1" * 500}),
        paid_item(4, "Mem", "memberMilestoneChatEvent", ["not", "an", "object"]),
        paid_item(5, "Big", "memberMilestoneChatEvent", {"memberMonth": 10 ** 400, "userComment": "so long"}),
        {"id": "b6", "snippet": {"type": "textMessageEvent", "textMessageDetails": {"messageText": "odd author"}},
         "authorDetails": {"channelId": ["a", "list"], "displayName": {"x": 1}}},
        text_item(7, "Ann", "still reading?"),
    )
    adapter = YouTubeAdapter(options(youtube, skip_backlog=False))
    with Running(adapter) as run:
        inf, big, odd, ann = run.take(4)
    assert (inf.text, inf.paid, inf.priority) == ("free money?", 0.0, REGULAR)  # no amount to trust
    assert (big.text, big.paid_label) == ("so long", "")
    assert (odd.text, odd.author, odd.author_id) == ("odd author", "someone", "")
    assert ann.text == "still reading?"
    assert "API error, retrying" in caplog.text and "failed, retrying" not in caplog.text  # serve() never failed


def test_a_restart_goes_on_from_the_last_page_token(youtube, caplog):
    """serve() fails (a bug) and runs again: what was said meanwhile is read, not skipped as backlog."""
    caplog.set_level(logging.INFO)
    youtube.add(text_item(1, "early", "said before we started"))
    adapter = YouTubeAdapter(options(youtube))
    adapter.retry_first = 0.2  # serve() again soon where the core lets an adapter choose
    real_take, armed = adapter._take, threading.Event()

    def take(*args, **kw):
        if armed.is_set():
            armed.clear()
            raise RuntimeError("a bug while reading a page")
        return real_take(*args, **kw)
    adapter._take = take
    with Running(adapter) as run:
        wait_until(lambda: len(youtube.polls) >= 2, what="a second poll")
        armed.set()
        youtube.add(text_item(2, "Ann", "asked while it broke"))
        wait_until(lambda: "failed, retrying" in caplog.text, what="serve() to fail")
        youtube.add(text_item(3, "Bob", "asked while it restarted"))
        got = run.take(2)
    assert [m.text for m in got] == ["asked while it broke", "asked while it restarted"]
    assert run.inbox.empty()  # the backlog from before the start stayed skipped


def test_quota_exhausted_backs_off_and_logs_once(youtube, caplog):
    caplog.set_level(logging.INFO)
    youtube.quota_errors = 3
    with Running(YouTubeAdapter(options(youtube, quota_backoff_seconds=0.4, skip_backlog=False))) as run:
        youtube.add(text_item(1, "Ann", "still there?"))
        assert run.take(1)[0].text == "still there?"
    gaps = [b - a for a, b in zip(youtube.quota_times, youtube.quota_times[1:])]
    assert len(youtube.quota_times) == 3 and min(gaps) >= 0.38, gaps
    assert caplog.text.count("quota exhausted") == 1
    assert "answers again after the quota pause" in caplog.text


def test_chat_end_finds_the_next_broadcast(youtube, caplog):
    caplog.set_level(logging.INFO)
    with Running(YouTubeAdapter(options(youtube))) as run:
        wait_until(lambda: len(youtube.polls) >= 1, what="a poll")
        youtube.add(text_item(1, "Ann", "first stream"))
        assert run.take(1)[0].channel == "chat-1"
        youtube.live_chat = ""  # the broadcast ends: the chat is gone, the video is not live any more
        youtube.ended.add("chat-1")
        wait_until(lambda: "live chat ended" in caplog.text, what="the end to be noticed")
        wait_until(lambda: "waiting for a live broadcast" in caplog.text, what="the wait for a new broadcast")
        youtube.chats["chat-2"] = []
        youtube.live_chat = "chat-2"
        wait_until(lambda: any(p[1] == "chat-2" for p in youtube.polls), what="polling the new chat")
        youtube.add(text_item(2, "Bob", "second stream"), chat="chat-2")
        got = run.take(1)[0]
    assert (got.text, got.channel) == ("second stream", "chat-2")


def test_network_errors_are_retried_until_the_api_answers(caplog):
    caplog.set_level(logging.INFO)
    fake = FakeYouTube()
    from services import free_port

    fake.server.port = free_port()  # nothing listens there yet
    adapter = YouTubeAdapter(options(fake, skip_backlog=False))
    with Running(adapter) as run:
        wait_until(lambda: "connection problem" in caplog.text, what="a refused connection")
        fake.add(text_item(1, "Ann", "are you up now?"))
        with fake.server:
            assert run.take(1)[0].text == "are you up now?"


def test_replies_need_oauth_and_post_to_the_chat(youtube, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    adapter = YouTubeAdapter(options(youtube, reply_in_chat=True, reply_min_seconds=0.0))
    with Running(adapter) as run:
        wait_until(lambda: len(youtube.polls) >= 1, what="a poll")
        youtube.add(text_item(1, "Ann", "hi?"))
        ann = run.take(1)[0]
        assert adapter.reply(ann, "hello Ann") is False  # an API key can only read
        assert "needs an OAuth access token in $TEST_YT_TOKEN" in caplog.text
        assert youtube.posts == []
    monkeypatch.setenv("TEST_YT_TOKEN", TOKEN)
    adapter = YouTubeAdapter(options(youtube, reply_in_chat=True, reply_min_seconds=0.0))
    with Running(adapter) as run:
        wait_until(lambda: len(youtube.polls) >= 3, what="polls with the token")
        assert adapter.reply(ann, "Hello Ann! " + "word " * 80) is True
        youtube.add(text_item(2, "Bob", "after the reply"))
        assert run.take(1)[0].author == "Bob"  # our own reply, echoed in the chat, is not a question
    (cred, body), = youtube.posts
    assert cred == f"Bearer {TOKEN}"
    snippet = body["snippet"]
    assert snippet["liveChatId"] == "chat-1" and snippet["type"] == "textMessageEvent"
    line = snippet["textMessageDetails"]["messageText"]
    assert line.startswith("@Ann Hello Ann! word") and len(line) <= 200 and line.endswith("…")
    assert TOKEN not in caplog.text and KEY not in caplog.text


def test_own_broadcast_found_with_oauth(youtube, monkeypatch):
    monkeypatch.setenv("TEST_YT_TOKEN", TOKEN)
    with Running(YouTubeAdapter(options(youtube, video_id=""))) as run:
        wait_until(lambda: len(youtube.polls) >= 1, what="a poll")
        youtube.add(text_item(1, "Ann", "found you"))
        assert run.take(1)[0].text == "found you"
    assert all(c == f"Bearer {TOKEN}" for c in youtube.credentials)


def test_missing_key_is_reported_and_stop_returns(youtube, monkeypatch, caplog):
    monkeypatch.delenv("TEST_YT_KEY")
    with Running(YouTubeAdapter(options(youtube))):
        wait_until(lambda: "no credentials" in caplog.text, what="the missing key to be reported")
    assert "$TEST_YT_KEY" in caplog.text and youtube.polls == []


def test_stop_returns_promptly_mid_wait(youtube):
    youtube.interval_ms = 60_000  # the adapter will be asleep for a minute between polls
    run = Running(YouTubeAdapter(options(youtube)))
    with run:
        wait_until(lambda: len(youtube.polls) >= 1, what="a poll")
        time.sleep(0.1)
        run.stop(timeout=5.0)  # asserts that run() returned well before the next poll was due
    assert len(youtube.polls) == 1
