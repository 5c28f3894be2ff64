"""Discord's text limits: answers cut into messages a reader can follow."""
from __future__ import annotations

import re

LIMIT = 2000  # Discord refuses longer messages
MAX_MESSAGES = 8  # an answer longer than this many messages is cut short: bounded channel spam
_BREAKS = ("\n\n", "\n", ". ", "! ", "? ", "; ", ", ", " ")


def split_message(text: str, limit: int = LIMIT - 10, max_messages: int = MAX_MESSAGES) -> list[str]:
    """*text* in pieces under *limit*, cut at the strongest break in each piece's second half
    (paragraph, line, sentence, clause, word), so no sentence is split when it need not be."""
    text = text.strip()
    out: list[str] = []
    while text and len(out) < max_messages:
        if len(text) <= limit:
            out.append(text)
            return out
        cut = limit
        for sep in _BREAKS:
            at = text.rfind(sep, limit // 2, limit)
            if at > 0:
                cut = at + len(sep.rstrip()) if sep.strip() else at
                break
        out.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        out[-1] = out[-1][: limit - 1].rstrip() + "…"
    return out


_MENTION = re.compile(r"<@!?&?(\d+)>")


def strip_mentions(text: str, ids: set[int]) -> str:
    """The question without the mentions of the bot (other mentions stay as they were)."""
    return " ".join(_MENTION.sub(lambda m: "" if int(m.group(1)) in ids else m.group(0), text).split())
