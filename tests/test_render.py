"""The render job end to end with the real parts: Piper voice, MediaPipe mesh, PyAV mp4.

Lip-sync and blinks are measured on the decoded output by an independent face tracker
(talker_stream.face.lipsync), not read back from the animator's own parameters.
"""
import numpy as np
import pytest

from conftest import PORTRAIT, make_settings
from talker_stream.face.lipsync import decode_frames
from talker_stream.outputs.encoder import probe


def test_both_streams_present_and_durations_agree(piper_clip):
    path, result = piper_clip
    info = probe(path)
    assert info["video"]["codec"] == "h264" and info["audio"]["codec"] == "aac"
    frame = 1 / 25
    assert abs(info["video"]["end"] - info["audio"]["end"]) <= frame
    assert info["video"]["count"] == result.frames
    assert 5.0 < result.seconds < 15.0, "the test sentence should give a clip of about six seconds or more"
    assert not list(path.parent.glob("*.partial*")), "the temporary file must be renamed away"


def test_mouth_follows_loudness_within_one_frame(piper_clip_report):
    r = piper_clip_report
    assert np.isnan(r.mouth).mean() < 0.05, "the tracker must find the face in almost every frame"
    assert abs(r.lag_frames) <= 1, f"lip-sync offset {r.lag_frames} frames"
    assert r.correlation > 0.5, f"mouth opening barely follows the audio (r={r.correlation:.2f})"
    speaking = r.loudness > np.percentile(r.loudness, 75)
    silent = r.loudness < np.percentile(r.loudness, 15)
    assert np.nanmedian(r.mouth[speaking]) > 1.3 * np.nanmedian(r.mouth[silent])


def test_blinks_in_six_seconds(piper_clip_report):
    r = piper_clip_report
    first_six = r.eyes[: int(6 * r.fps)]
    from talker_stream.face.lipsync import count_blinks

    assert count_blinks(first_six) >= 1


def test_pixels_outside_the_head_do_not_change(piper_clip, avatar):
    path, _ = piper_clip
    frames, _ = decode_frames(path)
    head = avatar.head_mask()
    # grow the head region a little: the encoder's 16x16 blocks spill over its edge
    import cv2

    near_head = cv2.dilate(head.astype(np.uint8), np.ones((33, 33), np.uint8)) > 0
    stack = np.stack(frames[::5]).astype(np.int16)
    diff = np.abs(stack - stack[0]).max(axis=3)
    assert diff[:, ~near_head].mean() < 1.0, "the background must stay still (codec noise only)"
    assert diff[:, head].mean() > 2.0, "the head must actually move"


def test_espeak_voice_renders_too(tmp_path):
    from talker_stream.offline import render

    out = tmp_path / "espeak.mp4"
    settings = make_settings(**{"tts.engine": "espeak", "tts.espeak.voice": "cmn"})
    result = render(settings, out, text=["你好，我会说中文。Short test."])
    info = probe(out)
    assert result.frames > 10
    assert abs(info["video"]["end"] - info["audio"]["end"]) <= 1 / 25


def test_render_from_an_audio_file_follows_that_audio(tmp_path):
    """The animator must work from audio alone: bursts of tone open the mouth."""
    import soundfile as sf

    from talker_stream.face.lipsync import measure_file
    from talker_stream.offline import render

    rate = 22050
    t = np.arange(int(rate * 4.0)) / rate
    env = (np.sin(2 * np.pi * 1.5 * t) > 0.2).astype(np.float32)
    voice = 0.4 * env * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 700 * t))
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.column_stack([voice, voice]), rate)  # stereo at 22.05 kHz on purpose
    out = tmp_path / "from_audio.mp4"
    render(make_settings(), out, audio=wav)
    r = measure_file(out)
    assert abs(r.lag_frames) <= 1
    assert r.correlation > 0.5


def test_cli_render_prints_a_summary(tmp_path, capsys):
    from talker_stream.cli import main

    out = tmp_path / "cli.mp4"
    code = main(["-c", "/dev/null", "render", "-p", str(PORTRAIT), "-t", "[happy] Nice to meet you!", "-o", str(out), "-q"])
    assert code == 0
    assert out.is_file() and out.stat().st_size > 10_000
    assert "faster than real time" in capsys.readouterr().out


@pytest.mark.parametrize("fps", [30.0, 29.97])
def test_other_frame_rates_keep_the_streams_together(tmp_path, fps):
    from talker_stream.offline import render

    out = tmp_path / f"fps{fps}.mp4"
    render(make_settings(**{"video.fps": fps}), out, text=["One more sentence at another rate."])
    info = probe(out)
    assert abs(info["video"]["end"] - info["audio"]["end"]) <= 1 / fps
