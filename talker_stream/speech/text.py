"""Text going into a voice: cleaned, split into sentences, tagged with an emotion.

Sentences are the unit of streaming: the first one is spoken while the rest is still being
read (or, later, still being written by the LLM), so the splitter takes text in pieces and
never needs the whole of it.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator

from ..frames import Sentence

EMOTIONS = ("neutral", "happy", "sad", "surprised", "angry", "questioning")

_TAG = re.compile(r"\[(\w+)\]")


def strip_tags(text: str) -> str:
    """*text* without its ``[emotion]`` tags: what was said, for memory, chat and captions.
    The one place outside the splitter that knows what a tag looks like."""
    return _TAG.sub("", text)
_SENTENCE_END = re.compile(r"([.!?…]+[\"')\]]*\s+|[。！？；]+\s*|\n\s*\n)")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "e.g.", "i.e.", "etc.", "prof.", "jr.", "sr."}
# Invisible format characters that sit inside words (soft hyphen, zero-width (non-)joiner,
# word joiner, BOM): dropped, since turning them into spaces would split the word.
_IN_WORD = "\u00ad\u200c\u200d\u2060\ufeff"
_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")  # terminal colour codes from pasted logs
_CLAUSE_END = re.compile(r"[,;:—]\s+|[，、；：]")
_FIRST_CLAUSE_WORDS = 4
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_MAX_SENTENCE = 400  # characters; a run-on sentence is cut at a comma or space past this

_EMOJI_EMOTION = {
    "😀": "happy", "😃": "happy", "😄": "happy", "😁": "happy", "😊": "happy", "🙂": "happy",
    "😂": "happy", "❤": "happy", "👍": "happy", "🎉": "happy",
    "😢": "sad", "😭": "sad", "☹": "sad", "🙁": "sad", "😞": "sad",
    "😮": "surprised", "😲": "surprised", "😯": "surprised", "🤯": "surprised",
    "😠": "angry", "😡": "angry", "🤬": "angry",
    "🤔": "questioning",
}

_LEXICON = {
    "happy": {"happy", "glad", "great", "love", "wonderful", "awesome", "fantastic", "thanks",
              "thank", "welcome", "excited", "delighted", "enjoy", "fun", "nice", "congratulations",
              "yay", "haha", "hello", "hi", "hey", "welcome", "开心", "高兴", "谢谢", "喜欢"},
    "sad": {"sad", "sorry", "unfortunately", "miss", "lost", "regret", "afraid", "alas",
            "tragic", "难过", "遗憾", "抱歉"},
    "angry": {"angry", "hate", "furious", "annoying", "outrageous", "unacceptable", "stop",
              "生气", "讨厌"},
    "surprised": {"wow", "whoa", "amazing", "incredible", "unbelievable", "really", "omg",
                  "哇", "天哪"},
}


def _word_count(text: str) -> int:
    """Words in *text*, counting two CJK characters as a word (Chinese and Japanese are
    written without spaces, so a long clause would otherwise count as one word)."""
    cjk = len(_CJK.findall(text))
    return len(_CJK.sub(" ", text).split()) + cjk // 2


def clean(text: str) -> tuple[str, str | None]:
    """Remove what a voice cannot say; return (speakable text, emotion hinted by emoji).

    Control characters become spaces, emoji are dropped (their mood is kept), and
    whitespace is folded, so espeak-ng does not read out "smiling face with open mouth".
    """
    hint: str | None = None
    out: list[str] = []
    text = _ANSI.sub(" ", text)
    for ch in text:
        if ch in _EMOJI_EMOTION and hint is None:
            hint = _EMOJI_EMOTION[ch]
        cat = unicodedata.category(ch)
        if ch in "\n\t":
            out.append(ch)
        elif ch in _IN_WORD:
            continue
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append(" ")
        elif cat == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF or ch in "\ufe0f\u200d":
            continue
        else:
            out.append(ch)
    cleaned = "".join(out)
    cleaned = re.sub(r"[ \t]+", " ", cleaned)
    cleaned = re.sub(r" +([,.!?;:，。！？；：])", r"\1", cleaned)  # where an emoji stood before a comma
    return cleaned, hint


def classify_emotion(sentence: str) -> str:
    """A light lexicon classifier: cheap, predictable, and good enough for a face."""
    words = re.findall(r"\w+", sentence.lower())
    scores = {emo: sum(w in lex for w in words) for emo, lex in _LEXICON.items()}
    for emo, lex in _LEXICON.items():  # CJK text has no spaces between words
        scores[emo] += sum(1 for w in lex if not w.isascii() and w in sentence)
    best = max(scores, key=lambda e: scores[e])
    stripped = sentence.rstrip()
    if scores[best] == 0:
        if stripped.endswith(("?", "？")):
            return "questioning"
        if stripped.endswith(("!", "！")):
            return "surprised" if len(words) <= 3 else "happy"
        return "neutral"
    return best


def _split_long(sentence: str) -> Iterator[str]:
    while len(sentence) > _MAX_SENTENCE:
        cut = max(sentence.rfind(",", 0, _MAX_SENTENCE), sentence.rfind("，", 0, _MAX_SENTENCE))
        if cut < _MAX_SENTENCE // 3:
            cut = sentence.rfind(" ", 0, _MAX_SENTENCE)
        if cut < _MAX_SENTENCE // 3:
            cut = _MAX_SENTENCE - 1
        yield sentence[: cut + 1].strip()
        sentence = sentence[cut + 1 :]
    if sentence.strip():
        yield sentence.strip()


class SentenceSplitter:
    """Feed text in pieces; get whole sentences out, each with its emotion.

    An `[emotion]` tag sets the mood until the next tag and is never spoken. Without a
    tag, each sentence is classified on its own words.
    """

    def __init__(self, fast_start: bool = False) -> None:
        """*fast_start*: the first piece may end at a comma once it has a few words, so the
        voice can start while a model is still writing the rest of the first sentence."""
        self._fast_start = fast_start
        self._buffer = ""
        self._tagged: str | None = None
        self._emoji_hint: str | None = None

    def feed(self, piece: str) -> Iterator[Sentence]:
        self._buffer += piece
        while True:
            cut = self._find_end(self._buffer)
            if cut is None:
                break
            head, self._buffer = self._buffer[:cut], self._buffer[cut:]
            yield from self._emit(head)
        if len(self._buffer) > 2 * _MAX_SENTENCE:  # no punctuation in sight: cut anyway
            # _split_long strips each piece: give the kept tail back its trailing space, or
            # its last word is glued to the first word of the next piece ("beta" + "delta").
            tail_space = self._buffer[len(self._buffer.rstrip()) :]
            pieces = list(_split_long(self._buffer))
            self._buffer = pieces.pop() + tail_space if pieces else ""
            for p in pieces:
                yield from self._emit(p)

    def flush(self) -> Iterator[Sentence]:
        head, self._buffer = self._buffer, ""
        yield from self._emit(head)

    def _find_end(self, text: str) -> int | None:
        end = self._sentence_end(text)
        if self._fast_start:
            # the first clause end (before the sentence's own) that has words enough to say
            for m in _CLAUSE_END.finditer(text, 0, len(text) if end is None else end):
                if _word_count(text[: m.start()]) >= _FIRST_CLAUSE_WORDS:
                    self._fast_start = False
                    return m.end()
        return end

    @staticmethod
    def _sentence_end(text: str) -> int | None:
        for m in _SENTENCE_END.finditer(text):
            # only the last few characters can hold an abbreviation: keeps this linear
            before = text[max(0, m.start() - 8) : m.start() + 1].split()[-1:]
            if before and before[0].lower() in _ABBREVIATIONS:
                continue
            return m.end()
        return None

    def _emit(self, raw: str) -> Iterator[Sentence]:
        self._fast_start = False
        raw, hint = clean(raw)
        # A tag applies to the text after it, so split the raw piece at tags.
        parts = _TAG.split(raw)
        for i, part in enumerate(parts):
            if i % 2 == 1:
                tag = part.lower()
                self._tagged = tag if tag in EMOTIONS else None
                continue
            for text in _split_long(" ".join(part.split())):
                if not any(ch.isalnum() for ch in text):
                    continue
                emotion = self._tagged or hint or classify_emotion(text)
                yield Sentence(text=text, emotion=emotion)


def split_sentences(pieces: Iterable[str], fast_start: bool = False) -> Iterator[Sentence]:
    """Sentences from a stream of text pieces (a file read in blocks, LLM tokens)."""
    splitter = SentenceSplitter(fast_start)
    for piece in pieces:
        yield from splitter.feed(piece)
    yield from splitter.flush()
