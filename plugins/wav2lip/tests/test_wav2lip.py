"""The wav2lip face engine: the real Wav2Lip architecture on random weights, saved the way
the original training script saves it and loaded through the loader users get.

Random weights draw noise where a mouth should be, which is what these tests need: every
pixel the engine changes is visible, so "nothing outside the face changed" is exact.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from conftest import make_settings, need_module  # noqa: E402

torch = need_module("torch", "pip install -e plugins/wav2lip (torch)")
from talker_stream.speech.clock import MediaClock  # noqa: E402
from talker_stream.config import load_settings  # noqa: E402
from talker_stream.errors import ConfigError, EngineUnavailable  # noqa: E402
from talker_stream.face.params import FaceParams  # noqa: E402
from talker_stream.live import LiveAvatar  # noqa: E402
from talker_stream_wav2lip import Wav2LipEngine, Wav2LipOptions  # noqa: E402
from talker_stream_wav2lip.checkpoint import load_generator, save_like_original  # noqa: E402
from talker_stream_wav2lip.crop import match_colour, paste_mask  # noqa: E402
from talker_stream_wav2lip.lips import LipWorker  # noqa: E402
from talker_stream_wav2lip.mel import melspectrogram, windows_at  # noqa: E402
from talker_stream_wav2lip.network import Wav2Lip  # noqa: E402
from talker_stream_wav2lip.runner import OnnxRunner, TorchRunner  # noqa: E402
from test_live import MemorySink  # noqa: E402

CLOCK = MediaClock(48000, 25)


def random_generator(seed: int = 0) -> Wav2Lip:
    """The real network with random weights and non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    model = Wav2Lip()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth"
    save_like_original(random_generator(), path)
    return path


@pytest.fixture(scope="module")
def engine(checkpoint):
    e = Wav2LipEngine(Wav2LipOptions(checkpoint=str(checkpoint), batch_size=4))
    yield e
    e.close()


@pytest.fixture(scope="module")
def w2l_avatar(engine, portrait):
    return engine.prepare(portrait)


def speech(seconds: float, rate: int = 48000) -> np.ndarray:
    """Voiced bursts at syllable rate: a mouth that opens and closes."""
    t = np.arange(int(rate * seconds)) / rate
    return (0.4 * (np.sin(2 * np.pi * 3 * t) > 0) * np.sin(2 * np.pi * 160 * t)).astype(np.float32)


# -- the checkpoint --------------------------------------------------------------------------
def test_original_layout_loads_with_and_without_the_module_prefix(checkpoint, tmp_path):
    raw = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert next(iter(raw)).startswith("module.face_encoder_blocks.0.0.conv_block.0.")
    model = load_generator(checkpoint)
    key = "face_decoder_blocks.6.0.conv_block.0.weight"
    assert torch.equal(model.state_dict()[key], raw["module." + key])
    bare = tmp_path / "bare.pth"
    torch.save({k.removeprefix("module."): v for k, v in raw.items()}, bare)  # a plain state dict, no prefix
    assert torch.equal(load_generator(bare).state_dict()[key], raw["module." + key])


def test_a_wrong_file_names_the_keys_that_do_not_fit(tmp_path):
    syncnet = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": {"module.face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7),
                               "module.face_decoder_blocks.0.0.conv_block.0.weight": torch.zeros(1)}}, syncnet)
    with pytest.raises(EngineUnavailable) as err:
        load_generator(syncnet)
    msg = str(err.value)
    assert "not a Wav2Lip generator checkpoint" in msg and str(syncnet) in msg
    assert "301 weights missing (audio_encoder.0.conv_block.0.bias, audio_encoder.0.conv_block.0.weight" in msg
    assert "1 unexpected (face_encoder.0.conv_block.0.weight)" in msg

    variant = tmp_path / "wav2lip_288.pth"
    sd = random_generator().state_dict()
    sd["output_block.1.weight"] = torch.zeros(3, 64, 1, 1)
    torch.save({"state_dict": sd}, variant)
    with pytest.raises(EngineUnavailable, match=r"other shapes .*output_block\.1\.weight \(3, 64, 1, 1\) != \(3, 32, 1, 1\)"):
        load_generator(variant)

    junk = tmp_path / "download.html"
    junk.write_text("<html>Sign in to continue</html>")
    with pytest.raises(EngineUnavailable, match="not a PyTorch checkpoint"):
        load_generator(junk)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(EngineUnavailable, match=r"needs a checkpoint: set \[face.wav2lip\] checkpoint"):
        Wav2LipEngine(Wav2LipOptions())
    with pytest.raises(EngineUnavailable, match=r"checkpoint not found: .*nowhere/wav2lip.pth .*README"):
        Wav2LipEngine(Wav2LipOptions(checkpoint="nowhere/wav2lip.pth"), base_dir=tmp_path)


def test_missing_checkpoint_stops_live_before_the_feed_starts(tmp_path):
    settings = make_settings(**{"face.engine": "wav2lip", "face.wav2lip.checkpoint": str(tmp_path / "gone.pth"),
                                "live.sinks": []})
    with pytest.raises(EngineUnavailable, match="gone.pth"):
        LiveAvatar(settings, [MemorySink()])


@pytest.mark.parametrize("body,error", [
    ('[face]\nengine = "wav2lip"\n\n[face.wav2lip]\ncheckpoint = "w.pth"\ndevice = "tpu"\n',
     ":6: face.wav2lip.device: must be one of auto, cpu, cuda"),
    ("[face.wav2lip]\nbatch_size = 0\n", ":2: face.wav2lip.batch_size: must be between 1 and 1024"),
    ('[face.wav2lip]\nchekpoint = "w.pth"\n', ":2: face.wav2lip.chekpoint: unknown setting (did you mean checkpoint?)"),
    ('[face]\nengine = "wav2lip"\n[face.wav2lip]\ncheckpoint = "models/w.pth"\nthreads = 1\n', None),
])
def test_face_wav2lip_settings_are_validated_with_the_line(tmp_path, body, error):
    p = tmp_path / "config.toml"
    p.write_text(body)
    if error is None:
        options = load_settings(p).face.options("wav2lip")
        assert (options.checkpoint, options.threads, options.device) == ("models/w.pth", 1, "auto")
        return
    with pytest.raises(ConfigError) as err:
        load_settings(p)
    assert str(err.value).startswith(f"{p}{error}")


# -- the network and its front end -------------------------------------------------------------
def test_device_auto_follows_the_backend(monkeypatch):
    """On a CUDA machine (pretended: torch.cuda.is_available is patched), auto means CUDA
    for torch but the CPU for ONNX Runtime, whose path here is CPU-only."""
    from talker_stream_wav2lip.runner import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto", "torch") == "cuda"
    assert pick_device("auto", "onnx") == "cpu"
    assert pick_device("cpu", "torch") == "cpu"


def test_mel_front_end_matches_the_original_audio_py():
    """Reference values from the original recipe (librosa.stft reflect-padded, librosa.filters.mel)."""
    t = np.arange(8000) / 16000
    wav = 0.4 * np.sin(2 * np.pi * (150 + 400 * t) * t) + 0.1 * np.sin(2 * np.pi * 2500 * t)
    mel = melspectrogram(wav)
    assert mel.shape == (80, 41)
    for band, frame, expected in [(68, 39, -1.81038), (12, 38, 2.03672), (1, 14, -3.25296), (69, 1, -1.50936),
                                  (51, 4, -0.23875), (4, 40, -0.03334), (49, 26, -0.24754), (10, 0, -1.54567)]:
        assert mel[band, frame] == pytest.approx(expected, abs=1e-4)
    assert (melspectrogram(np.zeros(3200)) == -4.0).all(), "silence is the bottom of the range"
    w = windows_at(mel, np.array([0.0, 20.0]))
    assert w.shape == (2, 80, 16)
    assert np.array_equal(w[1], mel[:, 12:28].astype(np.float32)) and (w[0][:, :8] == -4.0).all()


def test_decoding_only_the_lower_half_is_exact():
    model = random_generator(1)
    mel = torch.randn(3, 1, 80, 16)
    face = torch.rand(1, 6, 96, 96)
    with torch.inference_mode():
        full = model(mel, face.expand(3, -1, -1, -1))
        lower = model.decode(mel, model.encode_face(face), 48)
    assert lower.shape == (3, 3, 48, 96)
    assert full[:, :, :48].std() > 0.01, "the comparison means something only if the output varies"
    assert torch.allclose(lower, full[:, :, 48:], atol=1e-5)


def test_onnx_runner_matches_torch():
    face = np.random.default_rng(0).random((1, 6, 96, 96), dtype=np.float32)
    mels = np.random.default_rng(1).normal(size=(5, 80, 16)).astype(np.float32)
    a = TorchRunner(random_generator(), face, "cpu", "fp32")(mels)
    b = OnnxRunner(random_generator(), face, threads=2)(mels)
    assert a.shape == b.shape == (5, 48, 96, 3)
    assert np.abs(a - b).max() < 1e-4


# -- paste-back ---------------------------------------------------------------------------------
def test_paste_changes_nothing_outside_the_face_box(engine, w2l_avatar, portrait):
    engine.speech_placed(0, speech(1.0), CLOCK)
    crop = w2l_avatar.crop
    # blinks and brows around the mouth, no head motion: the warp moves nothing near the box
    still = FaceParams(jaw_open=0.6, brow_raise=0.8, blink_l=1.0)
    for k in range(0, 25, 6):
        frame = engine.render(w2l_avatar, still, frame=k)
        mesh = engine.mesh.render(w2l_avatar.mesh, FaceParams(brow_raise=0.8, blink_l=1.0))
        assert frame.shape == portrait.shape
        changed = np.abs(frame.astype(int) - mesh).sum(axis=2) > 0
        inside = np.zeros_like(changed)
        inside[crop.paste_rows, crop.paste_cols] = True
        assert changed[inside].mean() > 0.3, "the neural mouth replaced the mesh mouth"
        assert not changed[~inside].any(), "pixels outside the paste box are exactly the mesh frame"
    moving = FaceParams(yaw=4.0, pitch=-2.0, roll=1.5, blink_l=1.0, blink_r=1.0)
    for k in range(25, 50, 8):
        engine.speech_placed(k, speech(0.04), CLOCK)
        frame = engine.render(w2l_avatar, moving, frame=k)
        outside = ~w2l_avatar.head_mask()
        assert np.array_equal(frame[outside], portrait[outside]), "outside the head the photo is untouched"
    assert w2l_avatar.lips.neural_frames >= 7


def test_colour_matching_removes_a_tint_at_the_seam(portrait):
    under = portrait[150:200, 120:230].astype(np.float32)
    mask = paste_mask(under.shape[1], under.shape[0])
    tinted = np.clip(under * 0.8 + np.array([40.0, -10.0, 25.0]), 0, 255)
    band = (mask > 0.02) & (mask < 0.98)
    before = np.abs(tinted - under)[band].mean()
    after = np.abs(match_colour(tinted, under, mask) - under)[band].mean()
    assert before > 20 and after < 3
    assert mask[0].max() < 0.01 and mask[:, 0].max() < 0.01 and mask[-1].max() < 0.05, "ramps to 0 at the edges"
    assert mask.max() > 0.99


def test_interrupt_drops_mouths_that_will_never_be_shown():
    calls = []

    def run(mels):
        calls.append(len(mels))
        return np.zeros((len(mels), 48, 96, 3), np.float32)

    lips = LipWorker(run, batch_size=4)
    try:
        lips.add(100, speech(1.0), CLOCK)
        assert lips.mouth(100, realtime=False) is not None
        lips.cut(110)
        assert lips.mouth(105, realtime=False) is not None, "frames before the cut keep their mouths"
        assert lips.mouth(110, realtime=False) is None, "after the cut frame 110 is idle, not waited for"
        lips.add(111, speech(0.2), CLOCK)  # new speech reuses the withdrawn frames
        assert lips.mouth(113, realtime=False) is not None
    finally:
        lips.stop()
    assert sum(calls) <= 25 + 5


# -- the render job and the live feed -----------------------------------------------------------
def test_render_job_pastes_the_networks_mouth_into_every_spoken_frame_of_the_mp4(checkpoint, tmp_path, portrait, w2l_avatar):
    """The render job with ``[face] engine = "wav2lip"``: every frame of the file, the photo
    outside the face, the network's output in the mouth box while there is sound. Lip-sync is NOT measured here:
    with random weights the network draws noise, not a mouth that follows the sound, so
    ``talker_stream.face.lipsync`` has nothing to track; that needs the real released weights."""
    import av
    import soundfile as sf

    from talker_stream.offline import render

    wav = tmp_path / "speech.wav"
    sf.write(wav, speech(2.0, 16000), 16000)
    out = tmp_path / "w2l.mp4"
    settings = make_settings(**{"face.engine": "wav2lip", "face.wav2lip.checkpoint": str(checkpoint),
                                "face.wav2lip.batch_size": 8})
    result = render(settings, out, audio=wav)
    assert out.is_file() and result.frames >= 50
    with av.open(str(out)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == result.frames
    assert frames[10].shape == portrait.shape
    h = portrait.shape[0]
    crop = w2l_avatar.crop  # the same portrait, so the same box
    still = portrait.astype(int)
    corner = [np.abs(f[: h // 8, : h // 8].astype(int) - still[: h // 8, : h // 8]).mean() for f in frames]
    assert max(corner) < 4, "the background is the photo (up to H.264) in every frame"
    mouth = [np.abs(f[crop.paste_rows, crop.paste_cols].astype(int) - still[crop.paste_rows, crop.paste_cols]).mean()
             for f in frames]
    spoken = 2 * 25  # the 2 s recording at 25 fps; the render then holds the face for its closing pause
    assert len(frames) > spoken
    assert min(mouth[:spoken]) > 10, ("random weights draw noise where the mouth was: the network's output is in "
                                      "every frame with sound", np.round(mouth, 1).tolist())
    assert max(mouth[spoken:]) < 10, ("after the sound, the mesh animator's closed mouth again",
                                      np.round(mouth, 1).tolist())


def test_live_feed_shows_neural_mouths_at_its_own_pace(engine, portrait, piper_live):
    sink = MemorySink()
    settings = make_settings(**{"live.sinks": [], "video.fps": 8.0})  # slow enough for any CPU, so no fallback
    live = LiveAvatar(settings, [sink], tts=piper_live, engine=engine, portrait=portrait).start()
    try:
        live.say("Hello there, this mouth comes from a neural network.")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (any(f.speaking for f in sink.frames) and not sink.frames[-1].speaking):
            time.sleep(0.2)
    finally:
        live.stop()
    lips = live.avatar.lips
    speaking = [f for f in sink.frames if f.speaking and f.image is not None]
    assert len(speaking) > 10 and not lips.gave_up
    assert lips.neural_frames >= len(speaking) // 2
    outside = ~live.avatar.head_mask()
    for f in sink.frames:
        if f.image is not None:
            assert f.image.shape == portrait.shape
            assert np.array_equal(f.image[outside], portrait[outside])


@pytest.mark.parametrize("trouble", ["slow", "broken"])
def test_live_falls_back_to_the_mesh_mouth_and_keeps_its_rate(checkpoint, portrait, piper_live, caplog, trouble):
    engine = Wav2LipEngine(Wav2LipOptions(checkpoint=str(checkpoint), batch_size=4))
    sink = MemorySink()
    live = LiveAvatar(make_settings(**{"live.sinks": []}), [sink], tts=piper_live, engine=engine, portrait=portrait)
    lips = live.avatar.lips
    real = lips._run

    def run(mels):
        if trouble == "broken":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        time.sleep(0.4)  # 10 mouths per second: far below real time
        return real(mels)

    lips._run = run
    with caplog.at_level(logging.WARNING, logger="talker_stream_wav2lip"):
        live.start()
        live.say("This sentence is long enough to show that the network cannot keep up with it at all.")
        time.sleep(6.0)
        live.stop()
    engine.close()
    assert lips.gave_up
    assert "Using the mesh animator's mouth from now on" in caplog.text
    assert ("cannot keep real time" if trouble == "slow" else "illegal memory access") in caplog.text
    assert len(sink.frames) > 75 and [f.pts for f in sink.frames] == [k * 1920 for k in range(len(sink.frames))]
    assert sum(f.speaking for f in sink.frames) > 25
    assert all(f.image is None or f.image.shape == portrait.shape for f in sink.frames)


@pytest.fixture(scope="module")
def piper_live():
    from talker_stream.speech.tts.piper import PiperTTS

    return PiperTTS(threads=1)
