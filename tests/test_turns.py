"""The one turn path: every source gets the same outcome for the same thing, from the real
avatar (Piper voice, mesh face) and a conversation on a scripted model."""
from __future__ import annotations

import time

import pytest

from conftest import make_settings
from talker_stream.brain.turns import Outcome, Turns
from talker_stream.brain.conversation import Conversation
from talker_stream.frames import Interrupt, Question
from talker_stream.brain.llm import GenerationParams
from talker_stream.brain.moderation import Moderator


class Scripted:
    """STAND-IN for a language model (the model is not under test here): writes *words*, or
    raises after the first one when *fail*."""

    name = "scripted"

    def __init__(self, words: list[str], fail: bool = False) -> None:
        self.words, self.fail = words, fail

    def stream(self, messages, params):
        for i, w in enumerate(self.words):
            if self.fail and i == 1:
                raise ConnectionError("the model server went away")
            yield w


@pytest.fixture(scope="module")
def live(animator):
    from talker_stream.live import LiveAvatar
    from talker_stream.speech.tts.piper import PiperTTS

    avatar = LiveAvatar(make_settings(**{"live.sinks": []}), [], tts=PiperTTS(threads=1), engine=animator).start()
    yield avatar
    avatar.stop()


def turns(live, words, fail=False, blocklist=()):
    conv = Conversation(Scripted(words, fail), "You are Tess.", GenerationParams(), Moderator(list(blocklist)), 1200)
    return Turns(live, conv), conv


def test_an_answer_heard_to_the_end_is_answered_and_remembered(live):
    t, conv = turns(live, ["[happy] Paris ", "is ", "the ", "capital."])
    result = t.answer(Question("What is the capital of France?", "ana", "c1"))
    assert result.outcome is Outcome.ANSWERED and result.heard == "Paris is the capital."
    assert [m["content"] for m in conv.history("c1")][1] == "Paris is the capital."


def test_an_interrupted_answer_keeps_only_what_was_heard(live):
    t, conv = turns(live, [f"This is sentence {n}. " for n in ("one", "two", "three", "four", "five", "six")])
    turn = t.ask(Question("Count for me.", "", "c2"))
    assert live_speaking(live, 20)
    time.sleep(1.0)
    live.interrupt(Interrupt("barge-in", "microphone"))
    result = turn.wait(10)
    assert result.outcome is Outcome.INTERRUPTED and "This is sentence one.".startswith(result.heard[:7])
    assert result.interrupt.reason == "barge-in" and result.interrupt.source == "microphone"
    assert "six" not in result.heard and conv.history("c2")[1]["content"] == result.heard


def live_speaking(live, seconds: float) -> bool:
    from conftest import wait_for

    return wait_for(lambda: live.stats()["speaking"], seconds)


def test_a_model_that_fails_is_a_failed_turn_with_an_apology(live):
    t, conv = turns(live, ["Paris ", "is ", "lovely."], fail=True)
    result = t.answer(Question("Tell me about Paris.", "", "c3"))
    assert result.outcome is Outcome.FAILED and isinstance(result.error, ConnectionError)
    assert "lost my train of thought" in result.heard and conv.history("c3") == []


def test_a_question_moderated_at_the_front_door_is_not_moderated_again(live):
    t, conv = turns(live, ["Sure."], blocklist=["banana"])
    refused = t.answer(Question("Say banana.", "", "c4"))
    assert refused.outcome is Outcome.ANSWERED and "banana" not in refused.heard.lower() and conv.history("c4") == []
    allowed = t.answer(Question("Say banana.", "", "c5", moderated=True))  # the chat queue already decided
    assert allowed.heard == "Sure."


def test_an_answer_past_the_time_limit_is_cut_and_says_so(live):
    """Turns.answer's limit cuts the avatar with an Interrupt("timeout"): the source learns
    that the answer was cut for time, not by a listener or the operator."""
    t, conv = turns(live, [f"This is sentence {n}. " for n in ("one", "two", "three", "four", "five", "six")])
    t.max_answer_seconds = 2.0
    result = t.answer(Question("Count slowly.", "", "c6"))
    assert result.outcome in (Outcome.INTERRUPTED, Outcome.DROPPED) and "six" not in result.heard
    assert (result.interrupt.reason, result.interrupt.source) == ("timeout", "turns")
