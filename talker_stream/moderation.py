"""Moderation on the way in and out: length caps, a blocklist, and a guard against the
audience rewriting the avatar's instructions.

The guard has two layers. Structurally, an audience message only ever reaches the model
as a quoted question inside a user turn, after a system prompt that says so; the persona
is always first and memory cannot replace it. And messages that plainly try to take over
("ignore previous instructions", "you are now", "system prompt") get a polite refusal
without reaching the model at all, so a tiny local model is never asked to resist them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .text import clean

INJECTION = re.compile(
    r"(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+|your\s+)*(previous|prior|above|earlier|system)?\s*"
    r"(instructions|rules|prompts?|messages)"
    r"|\byou\s+are\s+now\b|\bact\s+as\b|\bpretend\s+(to\s+be|you)\b|\bsystem\s+prompt\b|\bdeveloper\s+mode\b"
    r"|\bjailbreak\b|\bnew\s+(instructions|persona|rules)\b"
    # a fake turn: "SYSTEM:" opening the message or a sentence (newlines are folded by then)
    r"|(^|[.!?\"'>)\]]\s*)(system|assistant|developer)\s*:"
    # chat-template markers (<|im_start|>, [INST], <<SYS>>) that the model's tokenizer may read as real turns
    r"|<\|[\w ]{1,30}\|>|\[/?inst\]|<</?sys>>",
    re.IGNORECASE | re.MULTILINE,
)
REFUSAL = "I'll keep being myself, thanks! Ask me anything else."
BLOCKED = "Let's keep the chat friendly. Ask me something else!"


@dataclass
class Verdict:
    ok: bool
    text: str  # the cleaned question, or the reply to give instead
    reason: str = ""


class Moderator:
    def __init__(self, blocklist: list[str] | None = None, max_question_chars: int = 500) -> None:
        entries = [w.split() for w in (blocklist or []) if w.strip()]
        words = [r"\s+".join(re.escape(x) for x in e) for e in entries]  # "bad  word" across a line break too
        self._blocked = re.compile(r"\b(" + "|".join(words) + r")\b", re.IGNORECASE) if words else None
        self.span = max((len(e) for e in entries), default=1)  # words a streamed reply must hold back
        self.max_question_chars = max_question_chars

    def question(self, text: str) -> Verdict:
        """Clean and check a question before it reaches the model."""
        cleaned, _ = clean(text[: self.max_question_chars * 4])
        cleaned = " ".join(cleaned.split())
        if not cleaned:
            return Verdict(False, "", "empty")
        if len(cleaned) > self.max_question_chars:
            cut = cleaned.rfind(" ", 0, self.max_question_chars)
            cleaned = cleaned[: cut if cut > 0 else self.max_question_chars] + " …"
        if self._blocked and self._blocked.search(cleaned):
            return Verdict(False, BLOCKED, "blocklist")
        if INJECTION.search(cleaned):
            return Verdict(False, REFUSAL, "injection")
        return Verdict(True, cleaned)

    def reply(self, sentence: str) -> str:
        """Mask blocked words in what the avatar is about to say."""
        if self._blocked is None:
            return sentence
        return self._blocked.sub(lambda m: "…", sentence)
