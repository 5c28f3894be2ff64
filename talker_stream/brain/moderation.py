"""Moderation on the way in and out: length caps, a blocklist, a guard against the
audience rewriting the avatar's instructions, and harmful requests (weapons, hurting
someone, breaking into accounts, drugs, someone's address, insults on demand) answered with
a fixed refusal, and a cry for help with a fixed kind answer, without the model.

The guard has two layers. Structurally, an audience message only ever reaches the model
as a quoted question inside a user turn, after a system prompt that says so; the persona
is always first and memory cannot replace it. And messages that plainly try to take over
("ignore previous instructions", "you are now", "system prompt") get a polite refusal
without reaching the model at all, so a tiny local model is never asked to resist them.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from ..speech.text import clean

INJECTION = re.compile(
    r"(ignore|disregard|forget|override)\s+(all\s+|any\s+|the\s+|your\s+)*(previous|prior|above|earlier|system)?\s*"
    r"(instructions|rules|prompts?|messages)"
    r"|\byou\s+are\s+now\b|\bact\s+as\b|\bpretend\s+(to\s+be|you)\b|\bsystem\s+prompt\b|\bdeveloper\s+mode\b"
    r"|\bjailbreak\b|\bnew\s+(instructions|persona|rules)\b"
    # a fake turn: "SYSTEM:" opening the message or a sentence (newlines are folded by then)
    r"|(^|[.!?\"'>)\]]\s*)(system|assistant|developer)\s*:"
    # chat-template markers (<|im_start|>, [INST], <<SYS>>) that the model's tokenizer may read as real turns
    r"|<\|[\w ]{1,30}\|>|\[/?inst\]|<</?sys>>"
    # the same in Chinese: "ignore the previous instructions", "you are now", "system prompt"...
    r"|(忽略|无视|忘记|忘掉|不要理会)[^。！？]{0,10}(指令|指示|规则|提示|设定)|你现在是|假装你是|系统提示|开发者模式|越狱",
    re.IGNORECASE | re.MULTILINE,
)
REFUSAL = "I'll keep being myself, thanks! Ask me anything else."
BLOCKED = "Let's keep the chat friendly. Ask me something else!"
HARMFUL_REPLY = "That's not something I'll help with on stream. Ask me anything else!"
SUPPORT = ("I'm really sorry you're feeling this way, and you're not alone. Please talk to someone you trust "
           "or call a local crisis line right now: they are there to help.")

# Requests a live avatar must not answer, whatever its model would write: a 135M model
# explains bomb-making or account theft as cheerfully as baking. Each pattern needs the
# harmful aim together with the act, so "kill time", "kill a process" or "make honey" pass.
_PEOPLE = (r"(neighbou?rs?|wife|husband|boyfriend|girlfriend|ex|mom|mum|dad|mother|father|brother|sister|friends?|"
           r"boss|teacher|classmates?|roommates?|partner|kids?|child(ren)?|son|daughter|family|coworkers?|"
           r"colleagues?|baby|man|woman|girl|boy|guy|person|people|stranger|cat|dog)")
_SOMEONE = (rf"(someone|somebody|anyone|everyone|people|him|her|them|others|"
            rf"(a|an|my|his|her|their|your|the|that|this|some) {_PEOPLE})")
HARMFUL = re.compile(
    # weapons and poison
    r"\b(make|making|build|building|assemble|craft|cook|mix)\b[^.?!]{0,40}\b(bombs?|explosives?|grenades?|molotov|napalm|"
    r"detonators?|nerve (gas|agent)|poison|ghost guns?)\b"
    r"|\bhow (do|can|could|would) (i|you|we|one)\b[^.?!]{0,30}\b(poison|stab|shoot|strangle|kidnap)\b"
    # hurting other people
    rf"|\b(hurt|harm|kill|murder|poison|stab|shoot|attack|beat up|torture)\s+{_SOMEONE}\b"
    r"|\bwithout (getting )?(caught|anyone knowing|leaving (a )?trace)"
    # breaking into accounts and stealing
    rf"|\b(get|log)\s+into\s+{_SOMEONE}('s|s'|\u2019s)\s"
    r"|\b(hack|hacking|break|sneak)\s+into\b[^.?!]{0,40}\b(account|phone|email|computer|instagram|facebook|"
    r"wifi|network|server)\b|\bsteal\b[^.?!]{0,30}\b(password|account|identity|credit card|money|car)s?\b"
    r"|\b(someone|somebody|my \w+)'?s? (password|login)\b"
    # drugs
    r"|\b(get|getting|be|stay)\s+high\b|\b(mix|combine)\b[^.?!]{0,30}\b(pills|drugs|medications?)\b"
    r"|\b(make|cook|synthesi[sz]e)\b[^.?!]{0,20}\b(meth|cocaine|heroin|lsd|drugs)\b"
    # someone's private details
    r"|\b(home|house|real|street) address\b|\bphone number\b[^.?!]{0,40}\b(of|for)\b|\b(where|which street|what street)\s+(does|did)\b[^.?!]{0,30}\blives?\b"
    # hate and insults on demand
    r"|\b(say|tell|write|make)\b[^.?!]{0,30}\b(mean|nasty|racist|sexist|hateful|cruel|insulting)\b[^.?!]{0,30}\b(about|to|joke)\b"
    r"|\b(answer|reply|respond|talk)\b[^.?!]{0,20}\b(with|in) insults\b|\binsult (me|everyone|the chat|people|him|her|them)\b",
    re.IGNORECASE,
)
SELF_HARM = re.compile(
    r"\b(hurt|harm|kill|cut|injure)\s+(myself|me)\b|\bsuicid|\bend (my life|it all)\b"
    r"|\b(want|wanna|going) to die\b|\bdon'?t want to (live|be alive)\b",
    re.IGNORECASE,
)
# Asking for the hidden prompt in other words than the injection pattern's
EXTRACTION = re.compile(
    r"\b(repeat|print|show|reveal|recite|output|tell me|write out|list)\b[^.?!]{0,30}"
    r"\b(your\b[^.?!]{0,15}\b(instructions|prompt|guidelines|configuration)"
    r"|the (system|hidden|secret|original|initial|first)\b[^.?!]{0,15}\b(instructions|prompt|rules|message))\b"
    r"|\b(repeat|print|recite)\b[^.?!]{0,20}\b(text|words|everything|message)s? (above|before)\b"
    r"|\bfrom now on\b|\bstarting now,? (you|only)\b",
    re.IGNORECASE,
)


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
        text = text[: self.max_question_chars * 4]
        cleaned, _ = clean(text)
        cleaned = " ".join(cleaned.split())
        if not cleaned:
            return Verdict(False, "", "empty")
        if len(cleaned) > self.max_question_chars:
            cut = cleaned.rfind(" ", 0, self.max_question_chars)
            cleaned = cleaned[: cut if cut > 0 else self.max_question_chars] + " …"
        probe = _probe(text)
        if self._blocked and (self._blocked.search(cleaned) or self._blocked.search(probe)):
            return Verdict(False, BLOCKED, "blocklist")
        if INJECTION.search(cleaned) or INJECTION.search(probe) or EXTRACTION.search(probe):
            return Verdict(False, REFUSAL, "injection")
        if SELF_HARM.search(probe):
            return Verdict(False, SUPPORT, "self-harm")
        if HARMFUL.search(probe):
            return Verdict(False, HARMFUL_REPLY, "harmful")
        return Verdict(True, cleaned)

    def reply(self, sentence: str) -> str:
        """Mask blocked words in what the avatar is about to say."""
        if self._blocked is None:
            return sentence
        return self._blocked.sub(lambda m: "…", sentence)


def _probe(text: str) -> str:
    """The text as a reader sees it, for matching only: fullwidth and other compatibility
    forms folded (ＩＧＮＯＲＥ -> IGNORE), invisible characters inside words removed
    (a zero-width space inside "ignore"), whitespace folded."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(clean(text)[0].split())


def speaker_name(author: str, limit: int = 40) -> str:
    """An audience name as it may appear in the prompt: a display name is chosen by the
    viewer, so it is treated like their message (cleaned, capped, no quotes to break out
    of, no instructions) and replaced by "Someone" when it tries anything."""
    name = " ".join(clean(author)[0].split()).replace('"', "'")[:limit].strip()
    if not name or INJECTION.search(name) or INJECTION.search(_probe(author[: limit * 4])):
        return "Someone"
    return name
