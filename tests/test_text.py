from talker_stream.frames import Sentence
from talker_stream.speech.text import SentenceSplitter, classify_emotion, split_sentences


def test_sentences_come_out_as_soon_as_they_end():
    s = SentenceSplitter()
    assert list(s.feed("Hello there. How ar")) == [Sentence("Hello there.", "happy")]  # a greeting reads as happy
    assert list(s.feed("e you? Fine")) == [Sentence("How are you?", "questioning")]
    assert list(s.flush()) == [Sentence("Fine", "neutral")]


def test_abbreviations_do_not_end_a_sentence():
    out = [s.text for s in split_sentences(["Dr. Smith met Mr. Jones. They talked."])]
    assert out == ["Dr. Smith met Mr. Jones.", "They talked."]


def test_tags_set_emotion_and_are_not_spoken():
    out = list(split_sentences(["[sad] I lost my keys. [happy] Found them!"]))
    assert [(s.text, s.emotion) for s in out] == [("I lost my keys.", "sad"), ("Found them!", "happy")]


def test_classifier():
    assert classify_emotion("Thank you so much, I love it") == "happy"
    assert classify_emotion("Unfortunately the show is cancelled") == "sad"
    assert classify_emotion("Where is the station?") == "questioning"
    assert classify_emotion("The train leaves at nine.") == "neutral"
    assert classify_emotion("我今天很开心") == "happy"


def _first_piece(tokens: list[str]) -> tuple[str, int]:
    """The first sentence a fast-start splitter gives, and how many tokens it took."""
    s = SentenceSplitter(fast_start=True)
    for n, token in enumerate(tokens, 1):
        out = list(s.feed(token))
        if out:
            return out[0].text, n
    return next(iter(s.flush())).text, len(tokens)


def test_fast_start_takes_the_first_clause_that_is_long_enough():
    tokens = "Oh , well , I really think so , and then we went home after the show .".replace(" ,", ",").split(" ")
    tokens = [t + " " for t in tokens]
    text, n = _first_piece(tokens)
    assert text == "Oh, well, I really think so,", text  # not "Oh," (too short), not the whole sentence
    assert n < len(tokens) - 5


def test_fast_start_counts_chinese_characters_as_words():
    tokens = list("我觉得这个问题很有意思，因为它让我想起了小时候的事情。")
    text, n = _first_piece(tokens)
    assert text == "我觉得这个问题很有意思，", text
    assert list(SentenceSplitter(fast_start=True).feed("你好，今天好吗？")) [0].text == "你好，今天好吗？", \
        "a two-character greeting is too short to go alone"


def test_fast_start_never_reaches_past_the_first_sentence_end():
    out = [x.text for x in split_sentences(["Hi. I am so glad you came, friend. Bye."], fast_start=True)]
    assert out == ["Hi.", "I am so glad you came, friend.", "Bye."], out
