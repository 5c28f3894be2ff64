"""YouTube Data API v3 live chat resources -> ChatMessages, and API errors -> what to do.

Wire format (developers.google.com/youtube/v3/live/docs/liveChatMessages):
``GET {base}/liveChat/messages?liveChatId=ID&part=snippet,authorDetails&pageToken=T`` answers

    {"kind": "youtube#liveChatMessageListResponse", "nextPageToken": "...",
     "pollingIntervalMillis": 5000, "offlineAt": "...",   # offlineAt only once the stream ended
     "items": [{"kind": "youtube#liveChatMessage", "id": "...",
                "snippet": {"type": "textMessageEvent", "liveChatId": "...", "authorChannelId": "...",
                            "publishedAt": "...", "hasDisplayContent": true, "displayMessage": "...",
                            "textMessageDetails": {"messageText": "..."},
                            "superChatDetails": {"amountMicros": "5000000", "currency": "USD",
                                                 "amountDisplayString": "$5.00", "userComment": "...", "tier": 2},
                            "superStickerDetails": {"superStickerMetadata": {"stickerId": "...", "altText": "...",
                                                    "language": "en"}, "amountMicros": ..., "currency": ...,
                                                    "amountDisplayString": ..., "tier": ...},
                            "memberMilestoneChatDetails": {"memberLevelName": "...", "memberMonth": 12,
                                                           "userComment": "..."}},
                "authorDetails": {"channelId": "...", "displayName": "...", "isChatOwner": false,
                                  "isChatSponsor": false, "isChatModerator": false, "isVerified": false}}]}

Errors come as ``{"error": {"code": 403, "message": "...", "errors": [{"domain": "youtube.quota",
"reason": "quotaExceeded", "message": "..."}]}}``; the reasons handled are quotaExceeded,
rateLimitExceeded, liveChatEnded, liveChatDisabled, liveChatNotFound, forbidden, keyInvalid.

Which events become questions: every event that carries words. A Super Chat's comment,
a Super Sticker's alt text (what the sticker shows, so the avatar can react to it) and a
membership milestone's comment; a paid event with no words has nothing to answer and is
only logged. Deletions, bans, new members and polls are not questions.
"""
from __future__ import annotations

import math
from typing import Any

from talker_stream.plugin import ChatMessage

PLATFORM = "youtube"

# what the poller does with an error reason
QUOTA, RATE, ENDED, AUTH, RETRY = "quota", "rate", "ended", "auth", "retry"
_REASONS = {
    "quotaExceeded": QUOTA, "dailyLimitExceeded": QUOTA,
    "rateLimitExceeded": RATE, "userRateLimitExceeded": RATE,
    "liveChatEnded": ENDED, "liveChatNotFound": ENDED, "liveChatDisabled": ENDED,
    "forbidden": AUTH, "keyInvalid": AUTH, "authError": AUTH, "insufficientPermissions": AUTH,
}


def _text(value: Any, limit: int = 2000) -> str:
    return " ".join(value.split())[:limit] if isinstance(value, str) else ""


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _money(details: dict, kind: str) -> tuple[float, str]:
    try:
        amount = int(details.get("amountMicros") or 0) / 1e6
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite or 400-digit amount
        amount = 0.0
    if not math.isfinite(amount) or amount < 0:
        amount = 0.0
    shown = _text(details.get("amountDisplayString"), 40) or f"{amount:g} {_text(details.get('currency'), 8)}".strip()
    return amount, f"{shown} {kind}" if amount > 0 else ""


def to_message(item: Any, channel: str) -> tuple[ChatMessage | None, str]:
    """A liveChatMessage resource -> (ChatMessage or None, a note for the log when dropped)."""
    if not isinstance(item, dict):
        return None, "not an object"
    snippet, author = item.get("snippet"), _dict(item.get("authorDetails"))
    if not isinstance(snippet, dict):
        return None, "no snippet"
    kind = snippet.get("type")
    paid, label = 0.0, ""
    if kind == "textMessageEvent":
        text = _text(_dict(snippet.get("textMessageDetails")).get("messageText"))
        text = text or _text(snippet.get("displayMessage"))
    elif kind == "superChatEvent":
        details = _dict(snippet.get("superChatDetails"))
        text = _text(details.get("userComment"))
        paid, label = _money(details, "Super Chat")
    elif kind == "superStickerEvent":
        details = _dict(snippet.get("superStickerDetails"))
        text = _text(_dict(details.get("superStickerMetadata")).get("altText"))
        paid, label = _money(details, "Super Sticker")
    elif kind == "memberMilestoneChatEvent":
        details = _dict(snippet.get("memberMilestoneChatDetails"))
        text = _text(details.get("userComment"))
        months = details.get("memberMonth")
        label = f"member for {months} months" if type(months) is int and 0 < months < 10_000 else ""
    else:
        return None, f"{_text(kind, 60) or 'an event without a type'} is not a question"
    name = _text(author.get("displayName"), 100) or "someone"
    if not text:
        return None, f"{label or kind} from {name} without words"
    return ChatMessage(
        platform=PLATFORM, channel=channel, author=name, text=text,
        author_id=_text(author.get("channelId") or snippet.get("authorChannelId"), 100),
        paid=paid, paid_label=label,
        moderator=bool(author.get("isChatModerator") or author.get("isChatOwner")),
        handle=_text(item.get("id"), 200),
    ), ""


def error_reason(status: int, body: Any) -> tuple[str, str]:
    """(what to do, the API's own words) for an error answer; a malformed body is a plain HTTP error."""
    error = _dict(body.get("error") if isinstance(body, dict) else None)
    errors = error.get("errors")
    reasons = [e.get("reason") for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    words = _text(error.get("message"), 300) or f"HTTP {status}"
    for reason in reasons:
        if isinstance(reason, str) and reason in _REASONS:
            return _REASONS[reason], f"{reason}: {words}"
    if status == 404:
        return ENDED, words
    if status in (400, 401, 403):
        return AUTH, words
    return RETRY, words
