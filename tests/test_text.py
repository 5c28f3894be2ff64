from talker_stream.text import SentenceSplitter, classify_emotion, split_sentences


def test_sentences_come_out_as_soon_as_they_end():
    s = SentenceSplitter()
    assert list(s.feed("Hello there. How ar")) == [s_ for s_ in list(split_sentences(["Hello there."]))]
    out = list(s.feed("e you? Fine"))
    assert [x.text for x in out] == ["How are you?"]
    assert [x.text for x in s.flush()] == ["Fine"]


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
