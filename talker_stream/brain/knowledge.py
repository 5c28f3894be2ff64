"""The streamer's own facts: a plain-text or markdown file, searched per question with BM25.

``[llm] knowledge = "facts.md"`` names the file. It is indexed once, when the conversation
opens: each paragraph, list item or line of facts becomes a passage (long paragraphs are cut
into pieces of about :data:`PASSAGE_WORDS` words), carrying its section heading for context.
For each question the best-matching passages (Okapi BM25 with a light English stemmer, all in
this module, nothing to download) go into the prompt as notes the model answers from. The
heading helps find a passage but is not shown to the model: a 135M model copies a "Rules:"
prefix into its answer.

What the file says is data, never instructions: passages are quoted into the user's turn,
below a system prompt that says so; chat-template markers are removed from them; and a line
that plainly tries to rewrite the avatar ("ignore previous instructions", "you are now ...")
is left out of the index with a warning naming its line.

Bounded memory: the file is read as a stream and the passages' text stays on disk (the index
keeps byte offsets, term ids and counts in compact arrays); only the first
:data:`MAX_INDEX_BYTES` are indexed, and a larger file is cut there with a warning.
"""
from __future__ import annotations

import functools
import logging
import math
import re
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

MAX_INDEX_BYTES = 4 * 1024 * 1024  # ~800 pages of text (seconds to index); a streamer's FAQ is a few KB
PASSAGE_WORDS = 60  # a longer paragraph is cut into pieces of about this many words
MAX_LINE_BYTES = 64 * 1024  # a "line" longer than this is read in pieces (a file without newlines)
K1, B = 1.2, 0.75  # BM25's usual constants
MIN_COVER = 0.35  # share of a question's weight a passage must hold to be about it
MIN_COVER_YOU = 0.12  # ... for the best passage, when the question asks the avatar about itself
FOCUS = 0.75  # share of the best passage's cover a further passage must hold to go with it

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_YOU = re.compile(r"\b(you|your|yours|yourself|you're|you've|you'd|u|ur)\b", re.IGNORECASE)
_TEMPLATE = re.compile(r"<\|[^|<>]{0,40}\|>|\[/?INST\]|<</?SYS>>|</?s>", re.IGNORECASE)
STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as into onto about over under than then so
is are was were be been being am do does did doing done have has had having will would shall should
can could may might must i me my mine myself you your yours yourself we us our ours he him his she her
hers it its they them their theirs this that these those there here what which who whom whose when
where why how all any both each few more most other some such no nor not only own same too very just
s t don't isn't aren't wasn't weren't what's who's where's when's how's it's that's there's i'm you're
let's tell please know like get got also one ever really
""".split())


# Everyday words: they count a quarter as much when judging whether a passage is about the
# question at all ("What do bees make?" shares only "make" with "keyboards ... make quiet ...").
COMMON_WORDS = frozenset("""
able add air allow also always appear area around art ask back bad be become begin believe best
better big body book bring build business buy call car case certain change child city clear come
community company consider continue country create cut day die different do door early easy
education end even ever expect eye face fact fall family father feel few find first follow force
free friend full game get girl give go good government great group grow guy hand happen hard have
head health hear here high history hold home hour house idea important include information issue job
keep kid kill kind know large last law lead learn leave let level life like line little live long
look lose lot love make man many mean meet member minute moment money month more morning most mother
move much name need never new next night now number offer office often old open other others own
parent part party pay people person place play point power president problem program provide public
put question reach read real really reason recent remain remember research result right room run
same say school see seem send serve service set show side sit small speak special spend stand state
stay still stop story student study sure system take teacher team tell then there thing think time
today true try understand use wait walk want war watch water way week well whole win woman word work
world write year young
""".split())


# The past forms of everyday irregular verbs: "Who made you?" finds "Tess was built by ..." only
# if made is make (and RELATED holds make and build together); and US spellings read as British
# ones ("favorite color" finds "favourite colour").
_IRREGULAR = {
    "made": "make", "built": "build", "wrote": "write", "written": "write", "ran": "run", "began": "begin",
    "begun": "begin", "bought": "buy", "sold": "sell", "taught": "teach", "thought": "think", "found": "find",
    "won": "win", "lost": "lose", "met": "meet", "left": "leave", "held": "hold", "kept": "keep", "told": "tell",
    "said": "say", "paid": "pay", "sent": "send", "spent": "spend", "grew": "grow", "grown": "grow",
    "drew": "draw", "drawn": "draw", "gave": "give", "given": "give", "took": "take", "taken": "take",
    "came": "come", "went": "go", "gone": "go", "saw": "see", "seen": "see", "ate": "eat", "eaten": "eat",
    "spoke": "speak", "spoken": "speak", "chose": "choose", "chosen": "choose", "born": "birth",
    "fell": "fall", "fallen": "fall", "sang": "sing", "sung": "sing", "knew": "know", "known": "know",
    "brought": "bring", "caught": "catch", "fought": "fight", "led": "lead",
    "favorite": "favourite", "favorites": "favourites", "color": "colour", "colors": "colours",
}


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A light English stemmer: plurals, -ing, -ed, and the possessive 's (sponsors, sponsored
    and sponsoring all become sponsor; moderators moderator; named name)."""
    w = word.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    w = _IRREGULAR.get(w, w)
    if len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith("sses"):
        return w[:-2]
    for suffix, keep in (("ing", 5), ("ed", 4)):
        if w.endswith(suffix) and len(w) - len(suffix) >= keep - 1:
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":  # stopped -> stop
                w = w[:-1]
            elif w.endswith(("at", "iz", "bl")):  # created -> create, named -> name below
                w += "e"
            return _e(w)
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return _e(w)


def _e(w: str) -> str:
    """One form for words that end in a silent e or not: name/nam, made/mad are cut alike."""
    return w[:-1] if len(w) > 3 and w.endswith("e") and not w.endswith("ee") else w


_COMMON = frozenset(stem(w) for w in COMMON_WORDS)

# Words a viewer uses for what a streamer's file says in other words: each line is one idea
# for the search, so "When were you first turned on?" finds "switched on for the first time"
# and "Who is in charge of the mods?" finds "The head moderator is ...". A word of the
# question matches its own word fully and the others of its line at RELATED_TF of a count.
# (General vocabulary of a channel's FAQ: who made it, when, schedule, rules, sponsors,
# shop, charity, pets, food; not the words of any one file.)
RELATED_LINES = """
name call nickname title
make build create develop design program invent found founder
turn switch activate boot
start begin launch open
birth birthday anniversary
old age
head lead leader chief boss charge manage manager
mod moderator admin
favourite prefer love
game play
sponsor partner brand
discount code coupon promo voucher deal
shop store merch merchandise buy sell
charity fundraiser donate donation raise
rule allow allowed forbid ban banned permit
stream live broadcast
speak language
pet cat dog animal
food eat snack dish meal drink
song music
subscribe subscriber sub follow follower
team crew staff
"""
RELATED_TF = 0.6
_RELATED: dict[str, frozenset[str]] = {}
for _line in RELATED_LINES.strip().splitlines():
    _group = frozenset(stem(w) for w in _line.split())
    for _w in _group:
        _RELATED[_w] = _RELATED.get(_w, frozenset()) | _group

# A weekday is a day and a month a month: "which days do you stream?" finds "every Tuesday".
_KIND_OF = {**{d: "day" for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")},
            **{m: "month" for m in ("january", "february", "march", "april", "may", "june", "july", "august",
                                    "september", "october", "november", "december")}}


def terms(text: str) -> list[str]:
    out = []
    for w in _WORD.findall(text.lower()):
        if w in STOPWORDS and not w.isdigit() or len(w) < 2 and not w.isdigit():
            continue
        out.append(stem(w))
        kind = _KIND_OF.get(w.removesuffix("s"))
        if kind:
            out.append(kind)
    return out


@dataclass
class Passage:
    text: str  # the fact, as the model gets it
    line: int  # where it starts in the file (1-based)
    score: float
    heading: str = ""  # the section it stands in (searched with it, not shown to the model)


class Knowledge:
    """An index of one knowledge file. :meth:`search` returns the passages for a question."""

    def __init__(self, path: str | Path, max_bytes: int = MAX_INDEX_BYTES) -> None:
        self.path = Path(path)
        self.truncated = False
        self.skipped: list[int] = []  # lines left out: they read as instructions, not facts
        self._vocab: dict[str, int] = {}
        self._postings: list[array] = []  # term id -> passage ids (each once, ascending)
        self._freqs: list[array] = []  # term id -> the term's count in each of those passages
        self._offsets = array("Q")  # passage -> byte offset of its text in the file
        self._lengths = array("I")  # passage -> byte length of its text
        self._lines = array("I")  # passage -> its first line
        self._heads = array("i")  # passage -> index of its heading in self._headings, or -1
        self._headings: list[str] = []
        self._doclen = array("I")  # passage -> terms in it (heading included)
        check_file(self.path)
        self._index(max_bytes)
        n = len(self._doclen)
        self._avg = (sum(self._doclen) / n) if n else 1.0
        log.info("knowledge: %d passages from %s", n, self.path)

    def __len__(self) -> int:
        return len(self._doclen)

    # -- indexing ----------------------------------------------------------------------------
    def _index(self, max_bytes: int) -> None:
        heading = -1
        comment = False  # inside <!-- ... -->: notes for whoever edits the file, not facts
        block: list[tuple[int, bytes, int]] = []  # (offset, bytes, line number) of the lines of this passage
        offset = 0
        try:
            f = self.path.open("rb")
        except OSError as exc:
            raise ConfigError(f"cannot read the knowledge file {self.path}: {exc.strerror or exc}") from None
        with f:
            for no, raw in enumerate(_lines(f), 1):
                start, offset = offset, offset + len(raw)
                if offset > max_bytes:
                    self.truncated = True
                    log.warning("knowledge file %s is larger than %d MB: only its first %d MB are indexed",
                                self.path, max_bytes >> 20, max_bytes >> 20)
                    break
                if b"\x00" in raw:
                    raise ConfigError(f"the knowledge file {self.path} is not text (a NUL byte on line {no}); "
                                      "[llm] knowledge takes a plain-text or markdown file")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ConfigError(f"the knowledge file {self.path} is not UTF-8 text (line {no}); "
                                      "save it as UTF-8") from None
                body = line.strip()
                if comment or body.startswith("<!--"):
                    comment = "-->" not in body
                    continue
                h = _HEADING.match(line)
                if not body or h or _BULLET.match(line) or body.startswith(("```", "---", "===")):
                    self._flush(block, heading)
                    block = []
                    if h:
                        self._headings.append(_clean(h.group(2)))
                        heading = len(self._headings) - 1
                    if not body or h or body.startswith(("```", "---", "===")):
                        continue
                if _injection(body):
                    self.skipped.append(no)
                    log.warning("%s:%d reads as an instruction to the model, not a fact: left out", self.path, no)
                    self._flush(block, heading)  # a passage never spans a line left out
                    block = []
                    continue
                block.append((start, raw, no))
                if _ends_fact(body) and not _BULLET.match(line):
                    self._flush(block, heading)  # a line that ends a sentence: one fact per line
                    block = []
                elif sum(len(r) for _, r, _ in block) > PASSAGE_WORDS * 7:
                    self._flush(block, heading)
                    block = []
        self._flush(block, heading)

    def _flush(self, block: list[tuple[int, bytes, int]], heading: int) -> None:
        if not block:
            return
        data = b"".join(raw for _, raw, _ in block)  # consecutive lines of the file
        stripped = data.strip()
        start = block[0][0] + data.index(stripped[:1]) if stripped else block[0][0]
        end = start + len(stripped)
        text = stripped.decode("utf-8")
        if len(text.split()) > PASSAGE_WORDS * 1.5:  # a long paragraph: pieces of about PASSAGE_WORDS words, at sentences
            for a, b in _spans(text):
                byte_at = start + len(text[:a].encode("utf-8"))
                self._add(byte_at, len(text[a:b].encode("utf-8")), block[0][2] + text[:a].count("\n"), heading, text[a:b])
            return
        self._add(start, end - start, block[0][2], heading, text)

    def _add(self, offset: int, length: int, line: int, heading: int, text: str) -> None:
        pid = len(self._doclen)
        words = terms(text) + (terms(self._headings[heading]) if heading >= 0 else [])
        for t, n in Counter(words).items():
            tid = self._vocab.get(t)
            if tid is None:
                tid = self._vocab[t] = len(self._postings)
                self._postings.append(array("I"))
                self._freqs.append(array("H"))
            self._postings[tid].append(pid)
            self._freqs[tid].append(min(n, 65535))
        self._offsets.append(offset)
        self._lengths.append(length)
        self._lines.append(line)
        self._heads.append(heading)
        self._doclen.append(len(words))

    def _read(self, offset: int, length: int) -> str:
        with self.path.open("rb") as f:
            f.seek(offset)
            return f.read(length).decode("utf-8", "replace")

    # -- search ------------------------------------------------------------------------------
    def search(self, question: str, k: int = 3, min_share: float = 0.5, me: str = "",
               min_cover: float = MIN_COVER) -> list[Passage]:
        """The passages about *question*, best first: at most *k*, each scoring at least
        *min_share* of the best one (a weak second match is left out).

        Relevance: a passage must hold at least *min_cover* of the question's weight (each
        word weighs its rarity in the file, a word the file lacks the most, an everyday word
        a quarter; a word found only in other words of its :data:`RELATED_LINES` line counts
        :data:`RELATED_TF` of its weight), so a question about something else gets no notes
        at all; and a passage after the best must hold :data:`FOCUS` of what the best one
        holds, so the notes stay on the question's point ("your favourite game" is not
        answered with the favourite food as well). *me*: the avatar's name. A question that
        says "you" or the name is about the avatar: the name counts for ranking only ("your
        cat" finds "Tess's cat"; "Hi Tess!" is not a question about every passage that names
        her), and the best passage needs only :data:`MIN_COVER_YOU`."""
        n = len(self._doclen)
        if not n:
            return []
        words = set(terms(question))
        name = set(terms(me)) if me else set()
        about_me = bool(me) and (bool(_YOU.search(question)) or bool(words & name))
        words -= name  # "Hi Tess, how are you?": the name addresses the avatar, it is not the topic
        extra = name if about_me else set()
        unseen = math.log(1 + (n + 0.5) / 0.5)
        weight: dict[str, float] = {}
        scores: dict[int, float] = {}
        covered: dict[int, float] = {}
        for t in words | extra:
            tf: dict[int, float] = {}  # passage -> count of t, and of its related words at RELATED_TF
            exact: set[int] = set()
            for alt in (_RELATED.get(t, frozenset()) | {t}) if t in words else (t,):
                tid = self._vocab.get(alt)
                if tid is None:
                    continue
                share = 1.0 if alt == t else RELATED_TF
                for pid, count in zip(self._postings[tid], self._freqs[tid]):
                    tf[pid] = tf.get(pid, 0.0) + share * count
                    if alt == t:
                        exact.add(pid)
            df = len(tf)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5)) if df else unseen
            if t in words:
                weight[t] = t_weight(t, idf)
            for pid, f in tf.items():
                norm = f + K1 * (1 - B + B * self._doclen[pid] / self._avg)
                scores[pid] = scores.get(pid, 0.0) + idf * f * (K1 + 1) / norm
                if t in words:
                    covered[pid] = covered.get(pid, 0.0) + weight[t] * (1.0 if pid in exact else RELATED_TF)
        total = sum(weight.values())
        if not scores or total <= 0:
            return []
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        top = best[0][1]
        top_cover = covered.get(best[0][0], 0.0) / total
        out = []
        for rank, (pid, score) in enumerate(best):
            cover = covered.get(pid, 0.0) / total
            enough = cover >= min_cover or (about_me and rank == 0 and cover >= MIN_COVER_YOU)
            if score >= top * min_share and enough and cover >= FOCUS * top_cover:
                out.append(self.passage(pid, score))
        return out

    def passage(self, pid: int, score: float = 0.0) -> Passage:
        text = " ".join(self._read(self._offsets[pid], self._lengths[pid]).split())
        text = _clean(_BULLET.sub("", text, count=1))
        h = self._heads[pid]
        return Passage(text, self._lines[pid], score, self._headings[h] if h >= 0 else "")


def t_weight(t: str, idf: float) -> float:
    return (0.25 if t in _COMMON else 1.0) * idf


def check_file(path: Path) -> None:
    """A clear error for a knowledge file that is missing, a folder, or not text."""
    if not path.exists():
        raise ConfigError(f"knowledge file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"the knowledge file {path} is not a file")
    try:
        with path.open("rb") as f:
            head = f.read(8192)
    except OSError as exc:
        raise ConfigError(f"cannot read the knowledge file {path}: {exc.strerror or exc}") from None
    if b"\x00" in head:
        raise ConfigError(f"the knowledge file {path} is not text (it holds NUL bytes: a binary file?); "
                          "[llm] knowledge takes a plain-text or markdown file")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 8 KB boundary
            raise ConfigError(f"the knowledge file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _lines(f, limit: int = MAX_LINE_BYTES):
    """The file's lines as bytes, a line longer than *limit* in pieces (memory stays bounded),
    never cutting a UTF-8 character in two."""
    while True:
        raw = f.readline(limit)
        if not raw:
            return
        while not raw.endswith(b"\n") and (f.peek(1)[:1] or b"\x00")[0] & 0xC0 == 0x80:
            raw += f.read(1)  # the next byte continues this line's last character
        yield raw


def _clean(text: str) -> str:
    text = _TEMPLATE.sub(" ", text)
    text = re.sub(r"\*\*|__|`|^#+\s*", "", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # [label](url) -> label
    return " ".join(text.split())


def _ends_fact(body: str) -> bool:
    return body.endswith((".", "!", "?", ":", ";", "\u3002", "\uff01", "\uff1f"))


def _spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of pieces of about PASSAGE_WORDS words, cut after a sentence where possible."""
    spans, start, words = [], None, 0
    for m in re.finditer(r"\S+", text):
        start = m.start() if start is None else start
        words += 1
        if words >= PASSAGE_WORDS and m.group().endswith((".", "!", "?")) or words >= 2 * PASSAGE_WORDS:
            spans.append((start, m.end()))
            start, words = None, 0
    if start is not None:
        spans.append((start, len(text)))
    return spans


def _injection(text: str) -> bool:
    from .moderation import INJECTION

    return bool(INJECTION.search(text))
