from fractions import Fraction

import pytest

from talker_stream.speech.clock import MediaClock


@pytest.mark.parametrize("rate,fps", [(48000, 25), (48000, Fraction(30000, 1001)), (44100, 30), (22050, 24), (16000, 60)])
def test_frames_tile_the_audio_exactly(rate, fps):
    clock = MediaClock(rate, fps)
    prev_end = 0
    for k in range(2000):
        a, b = clock.frame_window(k)
        assert a == prev_end, "frame windows must tile the audio with no gap or overlap"
        assert b > a
        assert clock.frame_at_sample(a) == k and clock.frame_at_sample(b - 1) == k
        prev_end = b


def test_no_drift_after_ten_hours():
    clock = MediaClock(48000, Fraction(30000, 1001))
    k = int(10 * 3600 * 30000 / 1001)
    # the pts of frame k is exactly k * 1001/30000 s in samples, floored: no accumulated error
    assert clock.frame_start(k) == (k * 48000 * 1001) // 30000
    assert abs(clock.frame_start(k) / 48000 - k * 1001 / 30000) < 1 / 48000


def test_frames_to_cover():
    clock = MediaClock(48000, 25)
    assert clock.frames_to_cover(0, 1920) == 1
    assert clock.frames_to_cover(0, 1921) == 2
    assert clock.frames_to_cover(10, 0) == 0
    clock = MediaClock(48000, Fraction(30000, 1001))
    for first in range(0, 50, 7):
        n = clock.frames_to_cover(first, 100_000)
        covered = clock.frame_start(first + n) - clock.frame_start(first)
        assert covered >= 100_000 > clock.frame_start(first + n - 1) - clock.frame_start(first)


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        MediaClock(0, 25)
    with pytest.raises(ValueError):
        MediaClock(48000, 0)
