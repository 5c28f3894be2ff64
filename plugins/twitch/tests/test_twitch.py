"""Twitch chat adapter (plugins/twitch): the real adapter against a real IRC server and a
fake of Twitch's own servers.

Two servers:
- ngircd (a real IRC server, Debian package ngircd), started by the tests on a free port:
  plain IRC chat in and answers out, a second raw IRC client playing the viewer. ngircd
  refuses Twitch's CAP request (NAK), as any non-Twitch server would.
- FakeTwitch (tests/twitch_fake.py): stands in for irc.chat.twitch.tv only. It speaks
  Twitch's dialect of IRC over TLS (a self-signed certificate the adapter trusts through ca_file): ACKs the
  CAP request, checks the token, answers JOIN with USERSTATE/ROOMSTATE, sends tagged
  PRIVMSG/USERNOTICE lines, RECONNECT, and drops connections. Everything on the client
  side (TLS, login, line framing, tag parsing, back-off, rate limiting) is the adapter's
  real code.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from services import free_port

from talker_stream.frames import MODERATOR, PAID, REGULAR
from twitch_fake import TOKEN, FakeTwitch, chat_line, self_signed_cert, wait_for

from conftest import need, need_module  # noqa: E402

twitch = need_module("talker_stream_twitch", "pip install -e plugins/twitch")
from talker_stream_twitch import TwitchAdapter, TwitchOptions
from talker_stream_twitch.chat import chunks
from talker_stream_twitch.irc import LineBuffer, format_line, parse_line, unescape_tag
from talker_stream_twitch.ratelimit import SendBudget

NGIRCD = shutil.which("ngircd") or "/usr/sbin/ngircd"
ENV = "TALKER_TEST_TWITCH_TOKEN"


# --- the fake of Twitch's servers (tests/twitch_fake.py) -----------------------------------
@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def options(port: int, **kw) -> TwitchOptions:
    base = {"channels": ["chan"], "host": "127.0.0.1", "port": port, "tls": False, "nick": "tessbot",
            "token_env": ENV, "reconnect_seconds": 0.05, "reconnect_max_seconds": 0.5}
    return TwitchOptions(**(base | kw))


@contextlib.contextmanager
def running(adapter: TwitchAdapter):
    """The adapter's run() on its own thread, as the core runs it; messages collected."""
    got = []
    thread = threading.Thread(target=adapter.run, args=(got.append,), daemon=True)
    thread.start()
    try:
        yield got
    finally:
        adapter.stop()
        thread.join(10)
        assert not thread.is_alive(), "run() did not return after stop()"


@pytest.fixture
def fake(cert):
    servers = []

    def make(**kw) -> FakeTwitch:
        servers.append(FakeTwitch(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv(ENV, TOKEN)
    return TOKEN


# --- pure pieces: tags, framing, splitting, the budget -------------------------------------
def test_tag_values_unescape_as_ircv3_says():
    assert unescape_tag(r"a\sb\:c\\d\re\nf\x\\") == "a b;c\\d\re\nfx\\"
    assert unescape_tag("trailing\\") == "trailing"
    msg = parse_line(r"@badges=moderator/1,subscriber/12;display-name=Ronni\sX;id=abc;empty= "
                     ":ronni!ronni@ronni.tmi.twitch.tv PRIVMSG #dallas :hi: there  ")
    assert (msg.command, msg.params, msg.nick) == ("PRIVMSG", ["#dallas", "hi: there  "], "ronni")
    assert msg.tags == {"badges": "moderator/1,subscriber/12", "display-name": "Ronni X", "id": "abc", "empty": ""}
    for junk in ("", "   ", "@only-tags", ":prefix-only", "!!! nonsense", "@a=b :p", "12 not a numeric"):
        assert parse_line(junk) is None, junk
    # an answer can never inject a second command, whatever the model wrote
    assert format_line("PRIVMSG", "#c", "hi\r\nJOIN #other", tags={"reply-parent-msg-id": "a b;c"}) == \
        r"@reply-parent-msg-id=a\sb\:c PRIVMSG #c :hi  JOIN #other"


def test_line_buffer_drops_overlong_lines_without_holding_them():
    buf = LineBuffer(max_bytes=100)
    assert buf.feed(b"PING :a\r\nPRIV") == ["PING :a"]
    assert buf.feed(b"MSG #c :x" + b"y" * 500) == []
    assert len(buf.buf) <= 100 and buf.discarding
    assert buf.feed(b"yyy\r\nPING :b\r\n\xff\xfe\r\n") == ["PING :b", "\ufffd\ufffd"]
    assert buf.dropped == 1


def test_long_answers_split_at_word_boundaries():
    text = " ".join(f"word{i}" for i in range(300))
    pieces = chunks(text, 470)
    assert len(pieces) > 1 and all(len(p) <= 470 for p in pieces)
    assert " ".join(pieces) == text  # no word cut, none lost
    assert chunks("x" * 1000, 470) == ["x" * 470, "x" * 470, "x" * 60]


def test_send_budget_is_a_sliding_window_per_role():
    b = SendBudget(budget=3, privileged_budget=5, window=10.0, channel_gap=1.0)
    for t in (0.0, 1.0, 2.0):
        assert b.wait("c", False, t) == 0
        b.spend("c", False, t)
    assert b.wait("c", False, 3.0) == pytest.approx(7.0)  # the first send leaves the window at t=10
    assert b.wait("m", True, 3.0) == 0  # moderator elsewhere: only the 100-style budget counts
    b.spend("m", True, 3.0)
    b.spend("m", True, 3.0)
    assert b.wait("m", True, 3.0) == pytest.approx(7.0)  # 5 privileged-budget sends in the window
    b2 = SendBudget(budget=20, privileged_budget=100, window=30.0, channel_gap=1.0)
    b2.spend("c", False, 0.0)
    assert b2.wait("c", False, 0.25) == pytest.approx(0.75)  # Twitch's 1-s minimum slow mode
    b2.slow["c"] = 5.0
    assert b2.wait("c", False, 0.25) == pytest.approx(4.75)  # ROOMSTATE slow mode is larger
    assert b2.wait("c", True, 0.25) == 0  # moderators are exempt


def test_bad_settings_say_what_to_fix(tmp_path, monkeypatch):
    from talker_stream.errors import ConfigError

    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(ConfigError, match="no channel given"):
        TwitchAdapter(options(1, channels=[]))
    with pytest.raises(ConfigError, match="bad channel"):
        TwitchAdapter(options(1, channels=["two words"]))
    with pytest.raises(ConfigError, match="ca_file"):
        TwitchAdapter(options(1, tls=True, ca_file=str(tmp_path / "missing.pem")))
    monkeypatch.setenv(ENV, TOKEN)
    with pytest.raises(ConfigError, match="nick must be the login") as err:
        TwitchAdapter(options(1, nick=""))
    assert TOKEN not in str(err.value)


# --- against the fake Twitch ----------------------------------------------------------------
def test_tagged_chat_over_tls_becomes_chat_messages(fake, cert, token, caplog):
    """Badges, bits, display names, a resub with a message; junk in between changes nothing."""
    caplog.set_level(logging.DEBUG)
    server = fake(cert=cert)
    adapter = TwitchAdapter(options(server.port, tls=True, ca_file=str(cert[0])))
    with running(adapter) as got:
        conn = server.joined(1)
        conn.send(chat_line("what is your name?", r"badges=moderator/1,subscriber/6;display-name=Ronni\sX;"
                            r"id=m1;mod=1;user-id=1337"))
        conn.send(chat_line("Cheer250 sing something cheer100", "badges=;bits=350;display-name=BigCheer;"
                            "id=m2;user-id=42", nick="bigcheer"))
        conn.send(b"this is not irc\r\n@bad\r\n:only.prefix\r\n\x00\x01\x02\r\n\xff\xfe\xfd garbage\r\n")
        conn.send(b"@" + b"x=" * 50_000 + b" PRIVMSG #chan :a 100 KB line\r\n")
        conn.send("PING :tmi.twitch.tv")
        conn.send(chat_line("hello from the streamer", "badges=broadcaster/1;display-name=Chan;user-id=7",
                            nick="chan"))
        conn.send(chat_line("hi VIP here", "badges=vip/1;display-name=Vippy;user-id=8", nick="vippy"))
        conn.send(chat_line("Loved the stream for a year!", "badges=subscriber/12;display-name=Subby;"
                            "id=n1;msg-id=resub;msg-param-cumulative-months=12;msg-param-sub-plan=1000;user-id=9",
                            nick="subby", command="USERNOTICE"))
        conn.send(chat_line("", "msg-id=raid;display-name=Raider;msg-param-viewerCount=50", nick="raider",
                            command="USERNOTICE"))
        conn.send(chat_line("\x01ACTION waves\x01", "display-name=;user-id=10", nick="plain"))
        wait_for(lambda: len(got) >= 6, what="six chat messages")
        wait_for(lambda: server.lines("PONG"), what="the PONG")
    assert [(m.author, m.text) for m in got] == [
        ("Ronni X", "what is your name?"), ("BigCheer", "sing something"), ("Chan", "hello from the streamer"),
        ("Vippy", "hi VIP here"), ("Subby", "Loved the stream for a year!"), ("plain", "waves")]
    ronni, cheer, chan, vip, sub, plain = got
    assert (ronni.moderator, ronni.priority, ronni.author_id, ronni.handle.msg_id) == (True, MODERATOR, "1337", "m1")
    assert (cheer.paid, cheer.paid_label, cheer.priority) == (350.0, "350 bits", PAID)
    assert chan.moderator and chan.channel == "chan"
    assert (vip.moderator, vip.priority) == (False, REGULAR)
    assert sub.priority == PAID and sub.paid_label == "Tier 1 resub, 12 months" and sub.handle.msg_id == ""
    assert plain.priority == REGULAR and plain.who == "twitch:10"
    assert adapter.bad_lines >= 4
    assert server.lines("PONG")[0][2] == "PONG :tmi.twitch.tv"
    sent = [line for _, _, line in server.received]
    assert sent[:4] == ["CAP REQ :twitch.tv/tags twitch.tv/commands", f"PASS oauth:{TOKEN}", "NICK tessbot",
                        "USER tessbot 0 * :tessbot"]
    assert "JOIN #chan" in sent
    assert TOKEN not in caplog.text and "PASS oauth:***" in caplog.text


def test_dropped_connection_reconnects_and_misses_nothing_after(fake, cert, token, caplog):
    """Drop mid-line, then a server RECONNECT: every message sent after each rejoin arrives, in order."""
    caplog.set_level(logging.INFO)
    server = fake(cert=cert)
    adapter = TwitchAdapter(options(server.port, tls=True, ca_file=str(cert[0])))
    numbered = iter(range(1000))
    with running(adapter) as got:
        first = server.joined(1)
        for i in [next(numbered) for _ in range(10)]:
            first.send(chat_line(f"question {i}", f"id=q{i};user-id={i}"))
        first.send(b"@id=lost :cut!cut@cut PRIVMSG #chan :this line is cut in the mid")  # no CR LF
        wait_for(lambda: len(got) >= 10, what="the first ten")
        first.drop()
        second = server.joined(2)
        for i in [next(numbered) for _ in range(30)]:
            second.send(chat_line(f"question {i}", f"id=q{i};user-id={i}"))
        second.send(":tmi.twitch.tv RECONNECT")
        third = server.joined(3)
        for i in [next(numbered) for _ in range(30)]:
            third.send(chat_line(f"question {i}", f"id=q{i};user-id={i}"))
        wait_for(lambda: len(got) >= 70, what="all 70 questions")
        time.sleep(0.2)
    assert [m.text for m in got] == [f"question {i}" for i in range(70)]
    assert len(server.conns) == 3
    drops = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(drops) == 2 and "closed the connection" in drops[0] and "asked to reconnect" in drops[1]
    assert any("back after 1 attempt" in r.getMessage() for r in caplog.records)


def test_odd_numbers_in_tags_cost_that_line_at_most(fake, token):
    """'²'.isdigit() is True but int('²') fails; int() refuses 5000 digits: no such tag ends the session."""
    server = fake()
    adapter = TwitchAdapter(options(server.port))
    with running(adapter) as got:
        conn = server.joined(1)
        conn.send(chat_line("superscript bits", "bits=²;display-name=Sup;user-id=1", nick="sup"))
        conn.send(chat_line("endless bits", f"bits={'9' * 5000};display-name=Long;user-id=2", nick="long"))
        conn.send(chat_line("Cheer" + "1" * 5000 + " big cheer", "bits=100;display-name=Cheery;user-id=3",
                            nick="cheery"))
        conn.send(chat_line("odd months", "msg-id=resub;msg-param-cumulative-months=³;display-name=Sub;user-id=4",
                            nick="sub", command="USERNOTICE"))
        conn.send("@slow=² :tmi.twitch.tv ROOMSTATE #chan")
        conn.send(f"@slow={'9' * 5000} :tmi.twitch.tv ROOMSTATE #chan")
        conn.send(chat_line("still here?"))
        wait_for(lambda: len(got) >= 5, what="five messages")
        time.sleep(0.1)
    sup, long, cheery, sub, last = got
    assert (sup.text, sup.paid, long.text, long.paid) == ("superscript bits", 0.0, "endless bits", 0.0)
    assert cheery.text.startswith("Cheer111") and cheery.paid == 100.0  # not a cheer within the bits sent
    assert (sub.text, sub.paid_label, last.text) == ("odd months", "resub", "still here?")
    assert len(server.conns) == 1  # none of it cost the connection
    assert adapter._budget.slow["chan"] <= 3600


@pytest.mark.parametrize("when", ["welcome", "join"])
def test_a_server_answering_every_connection_with_reconnect_is_backed_off(fake, token, when):
    """RECONNECT right after the welcome or the JOIN, every time: the back-off grows, no connect storm."""
    server = fake()
    server.reconnect_at = when
    adapter = TwitchAdapter(options(server.port, reconnect_seconds=0.1, reconnect_max_seconds=0.5))
    with running(adapter):
        wait_for(lambda: len(server.conns) >= 3, what="three connections")
        time.sleep(2.0)
    assert len(server.conns) <= 15, len(server.conns)  # 0.05-0.1, 0.1-0.2, 0.2-0.4, then 0.25-0.5 s apart


def test_an_answer_cut_off_by_a_drop_goes_out_on_the_next_connection(fake, token):
    server = fake()
    adapter = TwitchAdapter(options(server.port, reply_in_chat=True, channel_gap_seconds=0))
    real_send, cut = adapter._send, threading.Event()

    async def send(*lines: str) -> None:
        if cut.is_set() and any(" PRIVMSG " in f" {line}" for line in lines):
            cut.clear()
            adapter._writer.transport.abort()  # the link dies as the answer is written
            raise ConnectionResetError("Connection lost")
        await real_send(*lines)
    adapter._send = send
    with running(adapter) as got:
        server.joined(1).send(chat_line("what now?", "id=p1;user-id=5"))
        wait_for(lambda: got, what="the question")
        cut.set()
        assert adapter.reply(got[0], "the answer")
        server.joined(2)
        wait_for(lambda: server.privmsgs(), what="the answer on the next connection")
        wait_for(lambda: adapter.sent == 1, what="the send to be counted")
    (_, line), = server.privmsgs()
    assert parse_line(line).text == "the answer" and parse_line(line).tags == {"reply-parent-msg-id": "p1"}
    assert [n for _, n, sent in server.received if " PRIVMSG " in f" {sent}"] == [2] and adapter.waiting == 0


def test_answers_keep_to_the_send_budget(fake, token):
    """3 lines per 1 s window: no window at the server ever holds more; threaded replies; long ones split."""
    server = fake()
    adapter = TwitchAdapter(options(server.port, reply_in_chat=True, messages_per_window=3, window_seconds=1.0,
                                    channel_gap_seconds=0, reply_queue=20))
    with running(adapter) as got:
        server.joined(1).send(chat_line("tell me everything", "id=parent-1;user-id=5;display-name=Asker",
                                        nick="asker"))
        wait_for(lambda: got, what="the question")
        assert all(adapter.reply(got[0], f"answer {i}") for i in range(9))
        long_answer = " ".join(f"sentence{i} goes on" for i in range(80))  # about 1400 characters
        assert adapter.reply(got[0], long_answer)
        wait_for(lambda: adapter.sent >= 12 and adapter.waiting == 0, timeout=30, what="all chat lines")
        wait_for(lambda: len(server.privmsgs()) == adapter.sent, what="the server to read them")
    lines = server.privmsgs()
    assert len(lines) >= 12  # 9 short answers and the long one in 3 or more lines
    times = [t for t, _ in lines]
    slack = 0.2  # the server's clock reads lines a little after the client's budget counted them
    assert all(times[i + 3] - times[i] >= 1.0 - slack for i in range(len(times) - 3)), times
    texts = [parse_line(line) for _, line in lines]
    assert all(m.tags == {"reply-parent-msg-id": "parent-1"} and m.params[0] == "#chan" for m in texts)
    assert [m.text for m in texts[:9]] == [f"answer {i}" for i in range(9)]
    assert all(len(m.text) <= 500 for m in texts[9:]) and " ".join(m.text for m in texts[9:]) == long_answer


def test_full_reply_queue_drops_and_moderator_budget_applies(fake, token, caplog):
    server = fake()
    adapter = TwitchAdapter(options(server.port, reply_in_chat=True, messages_per_window=1, window_seconds=60,
                                    reply_queue=3))
    with running(adapter) as got:
        server.joined(1).send(chat_line("q", "id=p;user-id=5"))
        wait_for(lambda: got, what="the question")
        assert adapter.reply(got[0], "first")
        wait_for(lambda: server.privmsgs(), what="the first answer")
        assert [adapter.reply(got[0], f"more {i}") for i in range(4)] == [True, True, True, False]
        assert adapter.waiting == 3 and adapter.dropped_replies == 1
    assert "dropped" in caplog.text and len(server.privmsgs()) == 1

    mod_server = fake(bot_badges="moderator/1")
    adapter = TwitchAdapter(options(mod_server.port, reply_in_chat=True, messages_per_window=1,
                                    privileged_messages_per_window=4, window_seconds=60, reply_queue=10))
    with running(adapter) as got:
        mod_server.joined(1).send(chat_line("q", "id=p;user-id=5"))
        wait_for(lambda: got, what="the question")
        for i in range(6):
            assert adapter.reply(got[0], f"mod answer {i}")
        wait_for(lambda: len(mod_server.privmsgs()) >= 4, what="four answers as moderator")
        wait_for(lambda: adapter.waiting == 2, what="two answers left waiting")
    assert [parse_line(line).text for _, line in mod_server.privmsgs()] == [f"mod answer {i}" for i in range(4)]


def test_a_silent_link_is_noticed_by_our_ping(fake, token):
    """The server stops answering (as a half-open connection would): PING, no PONG, reconnect."""
    server = fake()
    server.answer_pings = False
    adapter = TwitchAdapter(options(server.port, keepalive_seconds=1.0))
    with running(adapter) as got:
        server.joined(1)
        second = server.joined(2)
        server.answer_pings = True
        second.send(chat_line("still there?"))
        wait_for(lambda: got, what="a message on the new connection")
    assert [n for _, n, line in server.received if line.startswith("PING")][:1] == [1]
    assert got[0].text == "still there?"


def test_anonymous_reads_and_never_sends(fake, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    server = fake()
    adapter = TwitchAdapter(options(server.port, reply_in_chat=True))
    with running(adapter) as got:
        server.joined(1).send(chat_line("hi"))
        wait_for(lambda: got, what="a message")
        assert adapter.reply(got[0], "hello") is False
    sent = [line for _, _, line in server.received]
    assert "NICK justinfan12345" in sent and not any(line.startswith("PASS") for line in sent)


def test_refused_login_is_logged_without_the_token(fake, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(ENV, "oauth:wrongtoken0123456789abcdefgh")
    server = fake()
    adapter = TwitchAdapter(options(server.port))
    with running(adapter):
        wait_for(lambda: len(server.conns) >= 3, what="three login attempts")
    assert "login refused" in caplog.text and ENV in caplog.text
    assert "wrongtoken" not in caplog.text
    assert sum("disconnected" in r.getMessage() for r in caplog.records) == 1  # once per state change


def test_stop_returns_in_the_middle_of_a_flood(fake, token):
    """stop() lands while lines keep arriving (on Python 3.11 asyncio.wait_for would swallow it)."""
    server = fake()
    adapter = TwitchAdapter(options(server.port))
    with running(adapter) as got:
        conn = server.joined(1)
        line = (chat_line("flood " * 20, r"badges=subscriber/1;display-name=Flood\sBot;user-id=3") + "\r\n").encode()
        flooding = threading.Event()

        def flood() -> None:
            with contextlib.suppress(OSError):
                while not server.closed:
                    conn.send(line * 200)
                    flooding.set()
        threading.Thread(target=flood, daemon=True).start()
        assert flooding.wait(10)
        wait_for(lambda: len(got) > 1000, what="the flood to arrive")
    # running() asserts that run() returned after stop()
    assert all(m.author == "Flood Bot" for m in got[:1000])


def test_stop_returns_promptly_whatever_it_is_doing(fake, token):
    """Connected; backing off from a closed port; stuck in a TLS handshake nobody answers."""
    server = fake()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts TCP (backlog), never speaks
    closed_port = free_port()
    cases = {"connected": options(server.port),
             "backing off": options(closed_port, reconnect_seconds=60, reconnect_max_seconds=60),
             "handshake": options(silent.getsockname()[1], tls=True)}
    try:
        for what, opts in cases.items():
            adapter = TwitchAdapter(opts)
            thread = threading.Thread(target=adapter.run, args=(lambda m: None,), daemon=True)
            thread.start()
            if what == "connected":
                server.joined(1)
            else:
                time.sleep(0.3)
            adapter.stop()
            thread.join(5)
            assert not thread.is_alive(), f"run() still running 5 s after stop() while {what}"
    finally:
        silent.close()


# --- against a real IRC server ---------------------------------------------------------------
class Ngircd:
    """ngircd in the foreground on a free port, ended by its PID."""

    def __init__(self, root: Path, password: str) -> None:
        self.port = free_port()
        self.conf = root / "ngircd.conf"
        self.conf.write_text(
            "[Global]\nName = irc.local\nInfo = test\nAdminInfo1 = t\nAdminInfo2 = t\nAdminEMail = t@localhost\n"
            f"Password = oauth:{password}\nListen = 127.0.0.1\nPorts = {self.port}\n"
            "[Limits]\nMaxPenaltyTime = 0\n[Options]\nPAM = no\nDNS = no\nIdent = no\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([NGIRCD, "-n", "-f", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def accepting() -> bool:
            assert self.proc.poll() is None, "ngircd exited"
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            return False
        wait_for(accepting, 10, "ngircd's port")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class Viewer:
    """A plain IRC client: the viewer typing in chat."""

    def __init__(self, port: int, nick: str = "viewer") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.send(f"PASS oauth:{TOKEN}", f"NICK {nick}", f"USER {nick} 0 * :{nick}", "JOIN #talk")
        self.expect(lambda line: " 366 " in line)  # end of NAMES: we are in #talk

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(f"{line}\r\n" for line in lines).encode())

    def expect(self, test, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode(errors="replace").rstrip("\r")
                if line.startswith("PING"):
                    self.send("PONG" + line[4:])
                elif test(line):
                    return line
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                data = self.sock.recv(65536)
                assert data, "ngircd closed the viewer's connection"
                self.buf += data
        raise AssertionError("the expected line never came")

    def close(self) -> None:
        self.sock.close()

    def wait_for_bot(self, nick: str = "tessbot", timeout: float = 15.0) -> None:
        """Until *nick* is in #talk. Its JOIN line alone is not enough: when the bot joins
        before this viewer does, the viewer only ever sees it in the NAMES list."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.send("NAMES #talk")
            names = self.expect(lambda line: " 353 " in line).rsplit(":", 1)[-1]
            if nick in names.replace("@", "").replace("+", "").split():
                return
            time.sleep(0.1)
        raise AssertionError(f"{nick} never joined #talk")


@pytest.fixture
def ngircd(tmp_path):
    need(Path(NGIRCD).exists(), "ngircd is not installed (apt-get install ngircd; scripts/setup.sh test does it)")
    server = Ngircd(tmp_path, TOKEN)
    server.start()
    yield server
    server.stop()


def test_plain_irc_chat_in_and_answers_out_through_ngircd(ngircd, token, caplog):
    caplog.set_level(logging.INFO)
    adapter = TwitchAdapter(options(ngircd.port, channels=["#talk"], reply_in_chat=True))
    viewer = Viewer(ngircd.port)
    try:
        with running(adapter) as got:
            viewer.wait_for_bot()
            viewer.send("PRIVMSG #talk :what do you think of IRC?")
            wait_for(lambda: got, what="the viewer's message")
            m = got[0]
            assert (m.platform, m.channel, m.author, m.text, m.moderator, m.priority) == \
                ("twitch", "talk", "viewer", "what do you think of IRC?", False, REGULAR)
            assert adapter.reply(m, "It is older than I am.")
            answer = viewer.expect(lambda line: " PRIVMSG #talk " in line)
    finally:
        viewer.close()
    assert answer.startswith(":tessbot!") and answer.endswith(":@viewer It is older than I am.")
    assert "does not offer Twitch's tags" in caplog.text  # ngircd NAKed the CAP and the adapter went on
    assert TOKEN not in caplog.text


def test_ngircd_restart_reconnects_and_misses_nothing(ngircd, token):
    adapter = TwitchAdapter(options(ngircd.port, channels=["talk"]))
    with running(adapter) as got:
        viewer = Viewer(ngircd.port)
        viewer.wait_for_bot()
        viewer.send("PRIVMSG #talk :before the restart")
        wait_for(lambda: got, what="the first message")
        viewer.close()
        ngircd.stop()
        ngircd.start()
        viewer = Viewer(ngircd.port)
        try:
            viewer.wait_for_bot()
            viewer.send(*(f"PRIVMSG #talk :after {i}" for i in range(50)))
            wait_for(lambda: len(got) >= 51, what="all 50 messages after the restart")
        finally:
            viewer.close()
    assert [m.text for m in got] == ["before the restart"] + [f"after {i}" for i in range(50)]
