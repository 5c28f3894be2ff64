"""A fake of Twitch's chat servers (irc.chat.twitch.tv), for tests only.

``FakeTwitch`` speaks Twitch's dialect of IRC, over TLS when given a certificate: it ACKs
the CAP request, checks the token, answers JOIN with USERSTATE/ROOMSTATE, and lets a test
send tagged PRIVMSG/USERNOTICE lines, RECONNECT, or drop a connection. Everything it reads
from the client is recorded. The client side (the adapter) is always the real code.
"""
from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

TOKEN = "s3cr3t0123456789abcdefghijklm"  # what a Twitch OAuth token looks like (30 chars)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.nick = ""
        self.joined = threading.Event()
        self.lock = threading.Lock()

    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
        with self.lock:
            self.sock.sendall(data)

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class FakeTwitch:
    """Stands in for irc.chat.twitch.tv (see the module docstring)."""

    def __init__(self, cert: tuple[Path, Path] | None = None, token: str = TOKEN, bot_badges: str = "") -> None:
        self.token = token
        self.bot_badges = bot_badges  # what USERSTATE says about the bot, e.g. "moderator/1"
        self.answer_pings = True  # False: a link that went silent (half-open TCP)
        self.reconnect_at = ""  # "welcome" or "join": answer every connection with RECONNECT right then
        self.ctx = None
        if cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*map(str, cert))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[Conn] = []
        self.received: list[tuple[float, int, str]] = []  # (time, connection number, line)
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.ctx:
                sock = self.ctx.wrap_socket(sock, server_side=True)
            conn = Conn(sock)
            with self.lock:
                self.conns.append(conn)
                number = len(self.conns)
            for raw in sock.makefile("rb"):
                line = raw.decode().rstrip("\r\n")
                with self.lock:
                    self.received.append((time.monotonic(), number, line))
                self._answer(conn, line)
        except (OSError, ValueError):
            pass

    def _answer(self, conn: Conn, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "CAP" and rest.startswith("REQ"):
            conn.send(":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands")
        elif word == "PASS":
            conn.password = rest
        elif word == "NICK":
            conn.nick = rest
            if not rest.startswith("justinfan") and getattr(conn, "password", "") != f"oauth:{self.token}":
                conn.send(":tmi.twitch.tv NOTICE * :Login authentication failed")
                conn.drop()
                return
            for n, text in (("001", "Welcome, GLHF!"), ("002", "Your host is tmi.twitch.tv"), ("376", ">")):
                conn.send(f":tmi.twitch.tv {n} {rest} :{text}")
            if self.reconnect_at == "welcome":
                conn.send(":tmi.twitch.tv RECONNECT")
        elif word == "JOIN":
            for channel in rest.split(","):
                conn.send(f":{conn.nick}!{conn.nick}@{conn.nick}.tmi.twitch.tv JOIN {channel}")
                conn.send(f"@badge-info=;badges={self.bot_badges};color=;display-name=TessBot;emote-sets=0;"
                          f"mod={int('moderator' in self.bot_badges)};subscriber=0;user-type= :tmi.twitch.tv "
                          f"USERSTATE {channel}")
                conn.send(f"@emote-only=0;followers-only=-1;r9k=0;room-id=1;slow=0;subs-only=0 "
                          f":tmi.twitch.tv ROOMSTATE {channel}")
            conn.joined.set()
            if self.reconnect_at == "join":
                conn.send(":tmi.twitch.tv RECONNECT")
        elif word == "PING" and self.answer_pings:
            conn.send(f":tmi.twitch.tv PONG tmi.twitch.tv {rest}")

    def joined(self, number: int, timeout: float = 15.0) -> Conn:
        """The *number*-th connection, once it has joined."""
        wait_for(lambda: len(self.conns) >= number, timeout, f"connection {number}")
        conn = self.conns[number - 1]
        assert conn.joined.wait(timeout), f"connection {number} never joined"
        return conn

    def lines(self, prefix: str) -> list[tuple[float, int, str]]:
        with self.lock:
            return [r for r in self.received if r[2].startswith(prefix)]

    def privmsgs(self) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, line) for t, _, line in self.received if " PRIVMSG " in f" {line}"]

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for c in self.conns:
            c.drop()


def chat_line(text: str, tags: str = "", nick: str = "viewer", channel: str = "chan",
              command: str = "PRIVMSG") -> str:
    tags = tags or f"display-name={nick.title()};user-id=1;badges="
    return f"@{tags} :{nick}!{nick}@{nick}.tmi.twitch.tv {command} #{channel} :{text}"


def self_signed_cert(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 in *d* (the adapter trusts it via ca_file)."""
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return crt, key
