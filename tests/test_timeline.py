"""The timeline lays speech on the one clock and turns it into frames."""
import numpy as np

from talker_stream.speech.clock import MediaClock
from talker_stream.face.expression import Expression, ExpressionSettings
from talker_stream.frames import AudioChunk, Sentence, SpeechSegment
from talker_stream.speech.timeline import Timeline


def tone(seconds, rate=48000, f=220.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def segment(pcm, text="x", emotion="neutral", rate=48000):
    return SpeechSegment(Sentence(text, emotion), AudioChunk(pcm, rate))


def test_frames_carry_all_the_audio_in_order():
    clock = MediaClock(48000, 25)
    tl = Timeline(clock)
    parts = [tone(0.5), tone(0.33, f=330), tone(1.01, f=440)]
    for p in parts:
        tl.append(segment(p))
    plans = [tl.next_frame() for _ in range(tl.queued_frames)]
    audio = np.concatenate([p.audio for p in plans])
    pts = [p.pts for p in plans]
    assert pts == [clock.frame_start(k) for k in range(len(plans))]
    # every segment starts on a frame boundary, padded with silence to its end
    at = 0
    for p in parts:
        assert np.array_equal(audio[at : at + len(p)], p)
        at = clock.frame_start(clock.frames_to_cover(clock.frame_at_sample(at), len(p)) + clock.frame_at_sample(at))
    assert len(audio) == at


def test_idle_frames_are_silent_but_alive():
    tl = Timeline(MediaClock(48000, 25), Expression(ExpressionSettings(seed=3)))
    plans = [tl.next_frame() for _ in range(25 * 8)]
    assert all(not p.speaking and not p.audio.any() for p in plans)
    assert all(len(p.audio) == 1920 for p in plans)
    yaw = np.array([p.params.yaw for p in plans])
    blinks = np.array([p.params.blink_l for p in plans])
    assert yaw.std() > 0.1, "the head keeps moving a little while silent"
    assert blinks.max() > 0.9, "and the eyes blink"


def test_speech_opens_the_mouth_and_sets_the_mood():
    tl = Timeline(MediaClock(48000, 25))
    tl.append(segment(tone(1.0), "I am so happy!", "happy"))
    plans = [tl.next_frame() for _ in range(tl.queued_frames)]
    assert all(p.speaking and p.caption == "I am so happy!" for p in plans)
    assert max(p.params.jaw_open for p in plans) > 0.5
    assert plans[-1].params.smile > 0.5, "the emotion shows on the face"
    idle = [tl.next_frame() for _ in range(25 * 3)]
    assert idle[0].params.jaw_open < 0.2
    assert idle[-1].params.smile < 0.1, "the mood fades back to neutral after speaking"


def test_segments_queue_behind_the_playhead_without_gaps():
    clock = MediaClock(48000, 25)
    tl = Timeline(clock)
    for _ in range(10):
        tl.next_frame()
    tl.append(segment(tone(0.2)))
    assert tl.queued_frames == 5
    first = tl.next_frame()
    assert first.pts == clock.frame_start(10) and first.speaking


def test_blinks_every_two_to_six_seconds():
    for seed in range(20):
        ex = Expression(ExpressionSettings(seed=seed))
        values = np.array([ex.step(k / 25, "neutral", 0.0).blink_l for k in range(25 * 30)])
        starts = np.flatnonzero((values[1:] > 0.5) & (values[:-1] <= 0.5))
        assert len(starts) >= 1 and starts[0] < 6 * 25, "a blink within the first six seconds"
        gaps = np.diff(starts) / 25
        assert (gaps < 6.3).all() and len(starts) >= 5
