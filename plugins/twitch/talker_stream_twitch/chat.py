"""Twitch's chat semantics on top of IRC: who said what, with which badges, for how much.

Kept apart from the connection so the mapping from tags to a ChatMessage can be read
(and tested) on its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from talker_stream.plugin import ChatMessage

from .irc import IrcMessage

MAX_CHAT_CHARS = 500  # Twitch cuts a chat message at 500 characters
MAX_NAME_CHARS = 64
PRIVILEGED = {"broadcaster", "moderator", "vip"}  # the badges with the higher send budget
# A subscription with a message is worth answering first; in bits-equivalents (100 bits =
# 1 USD to the streamer, roughly what a Tier 1 sub brings), so the queue can compare them.
SUB_PLANS = {"Prime": ("Prime", 500), "1000": ("Tier 1", 500), "2000": ("Tier 2", 1000), "3000": ("Tier 3", 2500)}
SUB_NOTICES = {"sub", "resub"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CHEER = re.compile(r"^[A-Za-z0-9]*[A-Za-z](\d+)$")


@dataclass(frozen=True)
class TwitchHandle:
    """What reply() needs: the channel, the message id to thread under, the asker's login."""

    channel: str
    msg_id: str = ""
    login: str = ""
    badges: frozenset[str] = field(default_factory=frozenset)


def badges(tags: dict[str, str]) -> dict[str, str]:
    """'broadcaster/1,subscriber/12' -> {'broadcaster': '1', 'subscriber': '12'}."""
    out = {}
    for item in tags.get("badges", "").split(","):
        name, _, version = item.partition("/")
        if name:
            out[name] = version
    return out


def is_moderator(tags: dict[str, str]) -> bool:
    b = badges(tags)
    return tags.get("mod") == "1" or "broadcaster" in b or "moderator" in b


def is_privileged(tags: dict[str, str]) -> bool:
    """Moderators, VIPs and the broadcaster: Twitch gives them the 100-per-30-s budget
    and no per-channel slow mode."""
    return is_moderator(tags) or bool(PRIVILEGED & badges(tags).keys())


def clean(text: str, limit: int) -> str:
    """Control characters out, whitespace collapsed, at most *limit* characters."""
    return " ".join(_CONTROL.sub(" ", text).split())[:limit]


def _strip_cheers(text: str, bits: int) -> str:
    """'Cheer100 how old are you?' -> 'how old are you?': the avatar should not read out
    cheermotes. Only tokens whose number fits within the bits sent are taken for one."""
    words = [w for w in text.split() if not ((m := _CHEER.match(w)) and 0 < _int(m.group(1)) <= bits)]
    return " ".join(words)


def _int(value: str) -> int:
    """A tag's count: ASCII digits only ('²'.isdigit() is True, yet int('²') fails), and short
    enough to be a count (int() refuses over 4300 digits); anything else is 0."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else 0


def to_chat_message(msg: IrcMessage, max_chars: int = MAX_CHAT_CHARS) -> ChatMessage | None:
    """A PRIVMSG (or a USERNOTICE that carries the viewer's own words) -> ChatMessage."""
    if msg.command not in ("PRIVMSG", "USERNOTICE") or len(msg.params) < 2:
        return None
    channel = msg.params[0].lstrip("#").lower()
    tags = msg.tags
    text = msg.text
    if text.startswith("\x01ACTION ") and text.endswith("\x01"):  # /me waves
        text = text[8:-1]
    paid, label = 0.0, ""
    bits = _int(tags.get("bits", ""))
    if msg.command == "USERNOTICE":
        if tags.get("msg-id") not in SUB_NOTICES:
            return None
        tier, worth = SUB_PLANS.get(tags.get("msg-param-sub-plan", ""), ("", 500))
        months = _int(tags.get("msg-param-cumulative-months", ""))
        paid = float(worth)
        label = " ".join(filter(None, [tier, tags["msg-id"]])) + (f", {months} months" if months > 1 else "")
    elif bits > 0:
        text = _strip_cheers(text, bits)
        paid, label = float(bits), f"{bits} bit{'s' if bits != 1 else ''}"
    text = clean(text, max_chars)
    if not text:
        return None
    login = (tags.get("login") or msg.nick).lower()
    author = clean(tags.get("display-name") or login or "someone", MAX_NAME_CHARS)
    # Twitch threads replies under chat messages only, not under sub notices
    msg_id = tags.get("id", "") if msg.command == "PRIVMSG" else ""
    handle = TwitchHandle(channel, msg_id, login, frozenset(badges(tags)))
    return ChatMessage(platform="twitch", channel=channel, author=author, text=text,
                       author_id=tags.get("user-id", "") or login, paid=paid, paid_label=label,
                       moderator=is_moderator(tags), handle=handle)


def chunks(text: str, limit: int = MAX_CHAT_CHARS) -> list[str]:
    """*text* cut at word boundaries into pieces of at most *limit* characters; a word
    longer than that is cut where it must be."""
    out: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > limit:
            if current:
                out.append(current)
                current = ""
            out.append(word[:limit])
            word = word[limit:]
        if not word:
            continue
        if current and len(current) + 1 + len(word) > limit:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


def outgoing_text(text: str) -> str:
    """A reply as it may be posted: one line, and never read by Twitch as a chat command
    ('/ban', '.timeout'), whatever the model wrote."""
    return clean(text, 100_000).lstrip("/.").strip()
