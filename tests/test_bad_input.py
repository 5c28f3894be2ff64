"""Bad input gets a clear one-line error, a non-zero exit, and nothing half-written.

Every case here is something a user will hand the program sooner or later: a photo with
no face (or three), a file that is not what its name says, a sideways phone picture, a
script of nothing but emoji, a recording in 5.1. Inputs are generated in tmp_path from
the sample portrait (examples/portrait.png, 352x352, one face about 93 px wide).
"""
from __future__ import annotations

import io
import logging
import random
import struct
import unicodedata
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talker_stream import offline as render_mod
from talker_stream.speech.audio import read_audio
from talker_stream.cli import main
from talker_stream.config import load_settings
from talker_stream.errors import EngineUnavailable, InputError
from talker_stream.face.params import FaceParams
from talker_stream.face.portrait import load_portrait
from talker_stream.offline import render
from talker_stream.speech.text import EMOTIONS, SentenceSplitter, split_sentences

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "examples" / "portrait.png"
MAX_SENTENCE = 400  # the splitter's bound (text._MAX_SENTENCE)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return Image.open(PORTRAIT).convert("RGB")


@pytest.fixture(scope="module")
def original(source) -> np.ndarray:
    return np.asarray(source)


@pytest.fixture(scope="module")
def original_box(animator, original) -> tuple[float, float, float, float]:
    return animator.prepare(original).face.box


def settings_for(portrait: Path, **overrides):
    """Defaults with this portrait and the instant espeak voice (Piper is tested elsewhere)."""
    return load_settings(None, {"avatar.portrait": str(portrait), "tts.engine": "espeak", **overrides})


def assert_one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg.strip(), "an error must say what went wrong"
    assert "\n" not in msg, f"error message is not one line: {msg!r}"
    return msg


def assert_nothing_written(out: Path) -> None:
    """Neither the video nor its temporary .partial file may survive a failed render."""
    assert not out.exists(), f"{out} was left behind by a failed render"
    if out.parent.exists():
        left = sorted(p.name for p in out.parent.iterdir())
        assert left == [], f"files left in the output folder: {left}"


def gradient_image(w: int = 352, h: int = 352) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def noise_image(w: int = 352, h: int = 352) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def on_canvas(face: Image.Image, size: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(face, at)
    return canvas


def box_inside(box, region) -> bool:
    x0, y0, x1, y1 = box
    rx0, ry0, rx1, ry1 = region
    return rx0 <= x0 and ry0 <= y0 and x1 <= rx1 and y1 <= ry1


def words(text: str) -> list[str]:
    return text.split()


# --------------------------------------------------------------------------- portraits


@pytest.mark.parametrize("make", [gradient_image, noise_image], ids=["gradient", "noise"])
def test_picture_without_a_face_is_an_input_error(tmp_path, animator, make):
    path = tmp_path / "nobody.png"
    make().save(path)
    rgb = load_portrait(path)  # a perfectly good image...
    with pytest.raises(InputError) as info:  # ...with nobody in it
        animator.prepare(rgb, source=str(path))
    msg = assert_one_line(info.value)
    assert "no face" in msg.lower()
    assert "nobody.png" in msg


def _text_named_png(path: Path) -> None:
    path.write_text("this is a shopping list, not a photo\n" * 20)


def _truncated_png(path: Path) -> None:
    data = PORTRAIT.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.open(PORTRAIT).convert("RGB").save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _empty_file(path: Path) -> None:
    path.write_bytes(b"")


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 50_000, dtype=np.uint8).tobytes())


@pytest.mark.parametrize(
    "name, make",
    [
        ("list.png", _text_named_png),
        ("half.png", _truncated_png),
        ("half.jpg", _truncated_jpeg),
        ("empty.png", _empty_file),
        ("noise.jpg", _random_bytes),
    ],
)
def test_file_that_is_not_an_image_is_an_input_error(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as info:
        load_portrait(path)
    msg = assert_one_line(info.value)
    assert name in msg and "not a readable image" in msg


@pytest.mark.parametrize("which", ["missing", "directory"])
def test_missing_portrait_is_an_input_error(tmp_path, which):
    path = tmp_path / "nope.png"
    if which == "directory":
        path.mkdir()
    with pytest.raises(InputError) as info:
        load_portrait(path)
    assert "not found" in assert_one_line(info.value)


@pytest.mark.parametrize("size", [(50, 50), (3000, 40)], ids=["thumbnail", "strip"])
def test_image_too_small_to_animate_is_an_input_error(tmp_path, source, size):
    path = tmp_path / "small.png"
    source.resize(size).save(path)
    with pytest.raises(InputError) as info:
        load_portrait(path)
    assert "px" in assert_one_line(info.value)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A 30000x30000 header on a few bytes of data: refused by size, not by running out of memory."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        load_portrait(path)
    assert "too large" in assert_one_line(info.value)


@pytest.mark.parametrize("big_left", [True, False], ids=["big-left", "big-right"])
def test_several_faces_animate_the_largest_with_a_warning(tmp_path, animator, source, caplog, big_left):
    small = source.resize((300, 300))
    gap = 40
    size = (352 + gap + 300, 352)
    if big_left:
        big_at, small_at = (0, 0), (352 + gap, 26)
    else:
        small_at, big_at = (0, 26), (300 + gap, 0)
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(source, big_at)
    canvas.paste(small, small_at)
    path = tmp_path / "two.png"
    canvas.save(path)

    rgb = load_portrait(path)
    with caplog.at_level(logging.WARNING):
        avatar = animator.prepare(rgb, source=str(path))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "faces found" in r.getMessage()]
    assert warnings, f"no warning about several faces; log: {[r.getMessage() for r in caplog.records]}"
    big_region = (big_at[0], big_at[1], big_at[0] + 352, big_at[1] + 352)
    assert box_inside(avatar.face.box, big_region), f"animated face {avatar.face.box} is not the larger copy"
    assert avatar.face.width > 80  # the big copy's face is ~93 px; the small one's ~79 px


@pytest.mark.parametrize("scale", [0.30, 0.36])
def test_tiny_face_is_refused_with_a_clear_message(tmp_path, animator, source, scale):
    """A face of about 28-34 px, under the 40 px floor (``MIN_FACE_PX``): refused with one line
    that says to crop closer, never animated and never a crash. (MediaPipe does not find faces
    this small, so the refusal is the no-face one.)"""
    side = round(352 * scale)  # the face is ~0.26 of the picture
    path = tmp_path / "tiny_face.png"
    on_canvas(source.resize((side, side)), (352, 352), (90, 120)).save(path)
    rgb = load_portrait(path)
    with pytest.raises(InputError) as err:
        animator.prepare(rgb, source=str(path))
    msg = assert_one_line(err.value)
    assert msg.startswith(f"no face found in {path}"), msg
    assert "at least 80 px wide" in msg and "crop closer" in msg, msg


def test_small_face_is_animated_with_a_warning(tmp_path, animator, source, caplog):
    path = tmp_path / "small_face.png"
    side = round(352 * 0.6)  # face ~55 px: above the 40 px floor, below the 80 px comfort line
    on_canvas(source.resize((side, side)), (352, 352), (70, 70)).save(path)
    with caplog.at_level(logging.WARNING):
        avatar = animator.prepare(load_portrait(path), source=str(path))
    assert 40 <= avatar.face.width < 80
    assert any("small" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_face_below_the_floor_names_its_size(animator, original, monkeypatch):
    """The size check itself (the detector rarely finds faces under 40 px to hit it)."""
    monkeypatch.setattr("talker_stream.face.landmarks.MIN_FACE_PX", 120)
    with pytest.raises(InputError) as info:
        animator.prepare(original, source="portrait.png")
    msg = assert_one_line(info.value)
    assert "px wide" in msg and "crop closer" in msg


@pytest.mark.parametrize("size, expect", [((5000, 5000), (1024, 1024)), ((5001, 3001), (614, 1024))])
def test_huge_photo_is_loaded_at_most_max_size(tmp_path, animator, source, caplog, size, expect):
    path = tmp_path / "huge.jpg"
    source.resize(size, Image.BICUBIC).save(path, quality=85)
    with caplog.at_level(logging.WARNING):
        rgb = load_portrait(path, max_size=1024)
    assert rgb.shape == (*expect, 3) and rgb.dtype == np.uint8
    assert max(rgb.shape[:2]) <= 1024 and rgb.shape[0] % 2 == 0 and rgb.shape[1] % 2 == 0
    assert any("downscaled" in r.getMessage() for r in caplog.records)
    avatar = animator.prepare(rgb, source=str(path))
    assert avatar.face.width > 93 * 2  # the face scaled up with the picture


def _mode_image(source: Image.Image, mode: str, path: Path) -> None:
    odd = source.crop((0, 0, 351, 349))  # odd sizes: the loader must make them even
    if mode == "RGBA":
        a = np.asarray(odd.convert("RGBA")).copy()
        a[:40, :, 3] = 0  # a transparent band across the top (a cut-out background)
        Image.fromarray(a, "RGBA").save(path)
    elif mode == "P+transparency":
        odd.convert("P").save(path, transparency=0)
    else:
        odd.convert(mode).save(path)


@pytest.mark.parametrize(
    "mode, name",
    [("L", "grey.png"), ("LA", "grey_alpha.png"), ("RGBA", "cutout.png"), ("CMYK", "print.jpg"),
     ("P", "palette.png"), ("P", "palette.gif"), ("P+transparency", "palette_t.png"), ("I;16", "deep.png")],
)
def test_any_colour_mode_becomes_even_rgb_uint8(tmp_path, source, mode, name):
    path = tmp_path / name
    _mode_image(source, mode, path)
    rgb = load_portrait(path)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[:2] == (348, 350)  # 349x351 cropped to even
    assert rgb.flags.c_contiguous
    ref = np.asarray(source.crop((0, 0, 350, 348)), dtype=np.int16)
    if mode in ("L", "LA", "I;16"):
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
        grey = np.asarray(source.crop((0, 0, 350, 348)).convert("L"), dtype=np.int16)
        assert np.abs(rgb[..., 0].astype(np.int16) - grey).mean() < 2
    elif mode == "RGBA":
        assert (rgb[:40] == 255).all(), "transparency must be flattened on white"
        assert np.abs(rgb[40:].astype(np.int16) - ref[40:]).mean() < 1
    elif mode == "CMYK":  # colour kept through a lossy CMYK JPEG
        assert np.abs(rgb.astype(np.int16) - ref).mean() < 12
    else:  # palette: exactly the palette's colours, the transparent index flattened on white
        with Image.open(path) as im:
            index = np.asarray(im)[:348, :350]
            colours = np.asarray(im.convert("RGB"))[:348, :350]
        clear = index == 0 if mode == "P+transparency" else np.zeros(index.shape, dtype=bool)
        assert (rgb[clear] == 255).all()
        assert (rgb[~clear] == colours[~clear]).all()
        assert np.abs(rgb[~clear].astype(np.int16) - ref[~clear]).mean() < 20  # and it is still the photo


@pytest.mark.parametrize("tag, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_photo_is_loaded_upright(tmp_path, animator, source, original, original_box, tag, stored_as):
    """A phone stores the pixels sideways plus an Orientation tag; the loader must obey it."""
    path = tmp_path / f"phone_{tag}.jpg"
    exif = Image.Exif()
    exif[0x0112] = tag
    source.transpose(stored_as).save(path, exif=exif, quality=95)
    sideways = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    assert np.abs(sideways - original).mean() > 30  # the stored pixels really are rotated

    rgb = load_portrait(path)
    assert rgb.shape == original.shape
    assert np.abs(rgb.astype(np.int16) - original).mean() < 4
    face = animator.prepare(rgb, source=str(path)).face
    assert np.allclose(face.box, original_box, atol=6), (face.box, original_box)


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t  \n", "😀🎉\x00\x07 ❤️\u200b \x1f👍🏽 🙂", "... !!! ??? ---"],
    ids=["empty", "whitespace", "emoji-and-control", "punctuation-only"],
)
def test_unspeakable_text_fails_before_any_output(tmp_path, text):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "talk.mp4"
    with pytest.raises(InputError) as info:
        render(settings_for(PORTRAIT), out, text=[text])
    assert "empty" in assert_one_line(info.value)
    assert_nothing_written(out)


def _unspeakable(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return (cat.startswith("C") and ch != " ") or cat == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF or ch in "\ufe0f\u200d"


def test_control_characters_and_emoji_are_not_spoken():
    text = ("Hello\x00 there 😀, friend! Zero\u200bwidth, bidi\u202e marks and a bell\x07 ring. "
            "A family 👨‍👩‍👧 of flags 🇫🇷 and hearts ❤️ waves 👋🏽. Tabs\tand\nnewlines\r\nend here.")
    sentences = list(split_sentences([text]))
    assert sentences
    for s in sentences:
        bad = [f"U+{ord(c):04X}" for c in s.text if _unspeakable(c)]
        assert not bad, f"unspeakable characters in {s.text!r}: {bad}"
        assert s.text == s.text.strip() and "  " not in s.text
    spoken = " ".join(s.text for s in sentences)
    for w in ("Hello", "there", "friend", "bell", "ring.", "family", "flags", "hearts", "waves", "newlines", "here."):
        assert w in spoken
    assert sentences[0].emotion == "happy"  # the 😀 set the mood though it is not spoken


def test_invisible_characters_inside_words_do_not_split_them():
    """Soft hyphens and joiners (common in text pasted from the web) are silent, not spaces."""
    text = "Infor\u00admation is co\u00adoperative; na\u200cive in\u2060side \ufeffstart and mal\u200dayalam."
    [sentence] = split_sentences([text])
    assert sentence.text == "Information is cooperative; naive inside start and malayalam."


def test_emotion_tags_are_not_spoken_and_set_the_mood():
    text = "[happy] I got the job. It starts Monday. [SAD] The cat is gone. [nonsense] Plain words here. [angry] No"
    sentences = list(split_sentences([text]))
    got = [(s.text, s.emotion) for s in sentences]
    assert got[:4] == [
        ("I got the job.", "happy"),
        ("It starts Monday.", "happy"),  # a tag lasts until the next one
        ("The cat is gone.", "sad"),  # tags are case-insensitive
        ("Plain words here.", "neutral"),  # an unknown tag is dropped and resets the mood
    ]
    assert got[4] == ("No", "angry")
    assert all("[" not in s.text and "]" not in s.text for s in sentences)
    assert all(s.emotion in EMOTIONS for s in sentences)


def test_tag_split_across_pieces_still_works():
    pieces = ["[hap", "py] Hello", " there. [s", "ad] Oh", " no."]
    assert [(s.text, s.emotion) for s in split_sentences(pieces)] == [("Hello there.", "happy"), ("Oh no.", "sad")]


def _long_script(n_bytes: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocab = "the quick brown fox jumps over a lazy dog while Dr. Smith e.g. reads, writes and sings".split()
    out, size = [], 0
    while size < n_bytes:
        s = " ".join(rng.choice(vocab) for _ in range(rng.randint(2, 150))) + rng.choice([". ", "! ", "? ", ".\n\n"])
        out.append(s)
        size += len(s)
    return "".join(out)


@pytest.mark.parametrize("piece", [4096, 997, None], ids=["4k-pieces", "odd-pieces", "one-piece"])
def test_long_text_is_split_into_bounded_sentences_without_losing_words(piece):
    text = _long_script(200_000)
    pieces = [text] if piece is None else [text[i : i + piece] for i in range(0, len(text), piece)]
    sentences = list(split_sentences(pieces))
    assert len(sentences) > 500
    longest = max(len(s.text) for s in sentences)
    assert longest <= MAX_SENTENCE, f"a sentence of {longest} chars"
    assert words(" ".join(s.text for s in sentences)) == words(text), "words were lost, split or glued together"


@pytest.mark.parametrize("piece", [1000, 333, 7])
def test_run_on_text_without_punctuation_is_still_cut(piece):
    rng = random.Random(1)
    text = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "epsilon"]) for _ in range(30_000))
    splitter = SentenceSplitter()
    sentences, max_pending = [], 0
    for i in range(0, len(text), piece):
        sentences.extend(splitter.feed(text[i : i + piece]))
        max_pending = max(max_pending, len(splitter._buffer))
    sentences.extend(splitter.flush())
    assert len(sentences) > len(text) // MAX_SENTENCE
    assert max(len(s.text) for s in sentences) <= MAX_SENTENCE
    assert max_pending <= 2 * MAX_SENTENCE + piece, "the splitter kept a run-on sentence whole in memory"
    assert words(" ".join(s.text for s in sentences)) == words(text), "words were lost or glued at the cuts"


def test_text_without_spaces_is_cut_hard():
    sentences = list(split_sentences(["x" * 5000]))
    assert [len(s.text) for s in sentences][:-1] == [400] * 12 and sum(len(s.text) for s in sentences) == 5000


def test_chinese_punctuation_ends_sentences():
    got = [s.text for s in split_sentences(["你好。今天天气很好！你", "呢？我很好；谢谢"])]
    assert got == ["你好。", "今天天气很好！", "你呢？", "我很好；", "谢谢"]
    mixed = [s.text for s in split_sentences(["Hello。World！Fine？"])]
    assert mixed == ["Hello。", "World！", "Fine？"]


def test_long_chinese_run_is_cut_at_the_fullwidth_comma():
    clause = "我们今天一起去公园散步看花" * 3 + "，"
    sentences = list(split_sentences([clause * 40]))
    assert max(len(s.text) for s in sentences) <= MAX_SENTENCE
    assert all(s.text.endswith("，") for s in sentences)
    assert "".join(s.text for s in sentences) == clause * 40


# --------------------------------------------------------------------------- audio


def _first_chunk(path: Path):
    return next(read_audio(path, 48000))


@pytest.mark.parametrize(
    "name, content",
    [
        ("noise.wav", np.random.default_rng(5).integers(0, 256, 20_000, dtype=np.uint8).tobytes()),
        ("notes.wav", b"this is a text file with a .wav name\n" * 50),
        ("empty.wav", b""),
    ],
)
def test_file_that_is_not_audio_is_an_input_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        _first_chunk(path)
    assert name in assert_one_line(info.value)


def test_wav_header_without_samples_is_an_input_error(tmp_path):
    path = tmp_path / "silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
    assert path.stat().st_size == 44  # a header and nothing else
    with pytest.raises(InputError) as info:
        _first_chunk(path)
    assert "no audio samples" in assert_one_line(info.value)


def test_image_given_as_audio_is_an_input_error():
    with pytest.raises(InputError) as info:
        _first_chunk(PORTRAIT)
    assert "no audio stream" in assert_one_line(info.value)


def test_missing_audio_is_an_input_error(tmp_path):
    with pytest.raises(InputError) as info:
        _first_chunk(tmp_path / "gone.wav")
    assert "not found" in assert_one_line(info.value)


def _sine(rate: int, seconds: float, channels: int, amp: float = 0.9, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    x = amp * np.sin(2 * np.pi * hz * t)
    return np.repeat(x[:, None], channels, axis=1)


def _write_wav(path: Path, data: np.ndarray, rate: int, writer: str) -> None:
    if writer == "soundfile":
        import soundfile as sf

        sf.write(str(path), data, rate, subtype="PCM_16")
    else:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(data.shape[1])
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(np.round(data * 32767).astype("<i2").tobytes())


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_any_rate_and_channel_count_becomes_mono_at_48k(tmp_path, rate, channels):
    seconds = 1.5
    path = tmp_path / f"tone_{rate}_{channels}.wav"
    _write_wav(path, _sine(rate, seconds, channels), rate, "wave" if channels == 6 else "soundfile")
    chunks = list(read_audio(path, 48000))
    assert chunks
    for c in chunks:
        assert c.sample_rate == 48000 and c.pcm.dtype == np.float32 and c.pcm.ndim == 1
    pcm = np.concatenate([c.pcm for c in chunks])
    assert abs(len(pcm) / 48000 - seconds) <= 0.01 * seconds
    spectrum = np.abs(np.fft.rfft(pcm))
    assert abs(np.argmax(spectrum) * 48000 / len(pcm) - 440) < 2  # the pitch survived resampling
    # the level survives the downmix: the same 0.9 tone in every channel is a 0.9 tone, not clipped
    body = pcm[4800:-4800]
    assert 0.85 < np.abs(body).max() < 0.95, f"peak {np.abs(body).max():.3f}"
    assert np.mean(np.abs(body) > 0.999) == 0, "the downmix clipped"


def test_long_audio_comes_in_blocks(tmp_path):
    path = tmp_path / "long.wav"
    _write_wav(path, _sine(16000, 2.5, 1), 16000, "soundfile")
    chunks = list(read_audio(path, 48000, block_seconds=1.0))
    assert [len(c.pcm) for c in chunks][:2] == [48000, 48000]
    assert abs(sum(len(c.pcm) for c in chunks) - 2.5 * 48000) <= 0.01 * 2.5 * 48000


def test_audio_with_a_cut_off_tail_keeps_what_decodes(tmp_path):
    path = tmp_path / "cut.wav"
    _write_wav(path, _sine(22050, 2.0, 1), 22050, "wave")
    data = path.read_bytes()
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])  # the header still promises 2 s
    pcm = np.concatenate([c.pcm for c in read_audio(path, 48000)])
    assert abs(len(pcm) / 48000 - 1.0) < 0.02


# --------------------------------------------------------------------------- CLI


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_one_error_line(err: str, *needles: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, f"expected exactly one 'error:' line, got: {err!r}"
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def out(tmp_path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder / "talk.mp4"


def test_cli_no_face_portrait(tmp_path, capsys, out):
    noface = tmp_path / "landscape.png"
    gradient_image().save(noface)
    rc, stdout, err = run_cli(capsys, ["-c", "/dev/null", "render", "-p", str(noface), "-t", "hi", "-o", str(out)])
    assert rc == 2
    assert_one_error_line(err, "no face", "landscape.png")
    assert "wrote" not in stdout
    assert_nothing_written(out)


def test_cli_missing_portrait(tmp_path, capsys, out):
    missing = tmp_path / "holiday.jpg"
    rc, stdout, err = run_cli(capsys, ["-c", "/dev/null", "render", "-p", str(missing), "-t", "hi", "-o", str(out)])
    assert rc == 2
    assert_one_error_line(err, "not found", "holiday.jpg")
    assert_nothing_written(out)


@pytest.mark.parametrize("content", [b"", b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(range(256)) * 8],
                         ids=["empty", "broken-header"])
def test_cli_broken_audio(tmp_path, capsys, out, content):
    broken = tmp_path / "speech.wav"
    broken.write_bytes(content)
    argv = ["-c", "/dev/null", "render", "-p", str(PORTRAIT), "--audio", str(broken), "-o", str(out)]
    rc, stdout, err = run_cli(capsys, argv)
    assert rc == 2
    assert_one_error_line(err, "speech.wav")
    assert_nothing_written(out)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-t", "  \n "], "empty"),
        (["-t", "🙂🙂\x00"], "empty"),
        (["--text-file", "/nonexistent/script.txt"], "text file not found"),
    ],
    ids=["blank-text", "emoji-text", "missing-text-file"],
)
def test_cli_bad_text(capsys, out, args, needle):
    argv = ["-c", "/dev/null", "render", "-p", str(PORTRAIT), *args, "-o", str(out)]
    rc, stdout, err = run_cli(capsys, argv)
    assert rc == 2
    assert_one_error_line(err, needle)
    assert_nothing_written(out)


# --------------------------------------------------------------------------- failing midway


class _Boom(RuntimeError):
    pass


def _failing_tts(monkeypatch, exc: BaseException, calls: list[str]):
    """Wrap the real engine so that voicing the 2nd sentence raises *exc*."""
    real_open = render_mod.open_tts

    def open_tts(settings):
        engine = real_open(settings)
        real_stream = engine.stream

        def stream(text):
            calls.append(text)
            if len(calls) == 2:
                raise exc
            return real_stream(text)

        monkeypatch.setattr(engine, "stream", stream)
        return engine

    monkeypatch.setattr(render_mod, "open_tts", open_tts)


SCRIPT = "First I say this. Then the voice breaks. And this is never heard."


@pytest.mark.parametrize(
    "exc",
    [EngineUnavailable("espeak-ng died"), _Boom("unexpected bug"), KeyboardInterrupt()],
    ids=["engine-unavailable", "bug", "ctrl-c"],
)
def test_render_failing_midway_leaves_nothing(monkeypatch, out, exc):
    calls: list[str] = []
    _failing_tts(monkeypatch, exc, calls)
    frames_seen: list[int] = []
    with pytest.raises(type(exc)):
        render(settings_for(PORTRAIT), out, text=[SCRIPT], progress=lambda done, frames: frames_seen.append(frames))
    assert len(calls) == 2, calls
    assert frames_seen and frames_seen[-1] > 0, "the failure was meant to come after frames were written"
    assert_nothing_written(out)


def test_failed_render_keeps_the_previous_video(monkeypatch, out):
    out.write_bytes(b"yesterday's video")
    _failing_tts(monkeypatch, EngineUnavailable("espeak-ng died"), [])
    with pytest.raises(EngineUnavailable):
        render(settings_for(PORTRAIT), out, text=[SCRIPT])
    assert out.read_bytes() == b"yesterday's video"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_cli_failing_midway(monkeypatch, capsys, out):
    _failing_tts(monkeypatch, EngineUnavailable("espeak-ng died"), [])
    argv = ["-c", "/dev/null", "render", "-p", str(PORTRAIT), "--voice", "espeak", "-t", SCRIPT, "-o", str(out)]
    rc, stdout, err = run_cli(capsys, argv)
    assert rc == 2
    assert_one_error_line(err, "espeak-ng died")
    assert_nothing_written(out)


def test_cli_interrupted_midway(monkeypatch, capsys, out):
    _failing_tts(monkeypatch, KeyboardInterrupt(), [])
    argv = ["-c", "/dev/null", "render", "-p", str(PORTRAIT), "--voice", "espeak", "-t", SCRIPT, "-o", str(out)]
    rc, stdout, err = run_cli(capsys, argv)
    assert rc == 130
    assert "nothing was written" in err and "Traceback" not in err
    assert_nothing_written(out)


def test_successful_render_leaves_only_the_video(out):
    """The control case: the same setup, no fault, writes the file and no temporary."""
    result = render(settings_for(PORTRAIT), out, text=["Hello there."])
    assert result.frames > 0
    assert out.is_file() and out.stat().st_size > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
