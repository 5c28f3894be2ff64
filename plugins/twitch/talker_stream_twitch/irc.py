"""IRC lines with IRCv3 message tags, as Twitch sends them.

Parsing never raises: chat is untrusted input, and one odd line from a server (or a
proxy in between) must not cost the connection. A line that does not look like IRC
gives None and the caller drops it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINE_BYTES = 8192  # RFC 1459 says 512; Twitch's tags alone can pass that, 8 KiB is ample
_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_ESCAPE = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_COMMAND = re.compile(r"^(?:[A-Za-z]+|\d{3})$")


@dataclass
class IrcMessage:
    command: str  # upper case, or a three-digit numeric
    params: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    prefix: str = ""  # nick!user@host or a server name

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    @property
    def text(self) -> str:
        """The last parameter: the message of a PRIVMSG, USERNOTICE or NOTICE."""
        return self.params[-1] if self.params else ""


def unescape_tag(value: str) -> str:
    r"""IRCv3 tag value unescaping: \: \s \\ \r \n; an unknown escape keeps the character,
    and a lone trailing backslash is dropped, as the spec says."""
    if "\\" not in value:
        return value
    out, it = [], iter(value)
    for ch in it:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(it, "")
        out.append(_UNESCAPE.get(nxt, nxt))
    return "".join(out)


def escape_tag(value: str) -> str:
    return "".join(_ESCAPE.get(ch, ch) for ch in value)


def _parse_tags(raw: str) -> dict[str, str]:
    tags = {}
    for item in raw.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        tags[key] = unescape_tag(value)
    return tags


def parse_line(line: str) -> IrcMessage | None:
    """One line (without CR LF) -> IrcMessage, or None when it is not IRC."""
    rest = line.strip("\r\n").lstrip(" ")
    tags: dict[str, str] = {}
    prefix = ""
    if rest.startswith("@"):
        raw, _, rest = rest[1:].partition(" ")
        tags = _parse_tags(raw)
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    head, sep, trailing = rest.partition(" :")
    words = head.split()
    if not words or not _COMMAND.match(words[0]):
        return None
    params = words[1:] + ([trailing] if sep else [])
    return IrcMessage(words[0].upper(), params, tags, prefix)


def format_line(command: str, *params: str, tags: dict[str, str] | None = None) -> str:
    """An outgoing line; the last parameter always as trailing, so spaces are safe in it.
    Any CR or LF is replaced by a space: text from a model must never inject a command."""
    parts = []
    if tags:
        parts.append("@" + ";".join(f"{k}={escape_tag(v)}" for k, v in tags.items()))
    parts.append(command)
    if params:
        parts.extend(params[:-1])
        parts.append(":" + params[-1])
    return re.sub(r"[\r\n\0]", " ", " ".join(parts))


class LineBuffer:
    """Bytes from the socket -> complete lines, never holding more than *max_bytes*.

    A line longer than that (a broken or hostile server) is dropped whole: the bytes up to
    its end are discarded as they arrive rather than buffered.
    """

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.discarding = False
        self.dropped = 0  # overlong lines dropped so far

    def feed(self, data: bytes) -> list[str]:
        lines = []
        self.buf += data
        while True:
            end = self.buf.find(b"\n")
            if end < 0:
                if len(self.buf) > self.max_bytes:
                    if not self.discarding:
                        self.dropped += 1
                    self.discarding = True
                    self.buf.clear()
                return lines
            raw = bytes(self.buf[:end])
            del self.buf[: end + 1]
            if self.discarding or len(raw) > self.max_bytes:
                if not self.discarding:
                    self.dropped += 1
                self.discarding = False
                continue
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if line:
                lines.append(line)
