"""XttsTTS: the talker-stream TTS engine over coqui-tts's XTTS-v2 model class."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from talker_stream.plugin import EngineUnavailable
from talker_stream.plugin import AudioChunk

from .options import XttsOptions, resolve
from .voice import load_voice

log = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "model.pth", "vocab.json")


def load_model(model_dir: Path, device: str):
    """XTTS from a folder in coqui's own layout: the same call whether the weights are the
    published XTTS-v2 or a fine-tune."""
    missing = [n for n in MODEL_FILES if not (model_dir / n).is_file()]
    if missing:
        raise EngineUnavailable(
            f"XTTS model folder {model_dir} lacks {', '.join(missing)}; download XTTS-v2 from "
            "https://huggingface.co/coqui/XTTS-v2 (Coqui Public Model License) into it"
        )
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    config = XttsConfig()
    config.load_json(str(model_dir / "config.json"))
    model = Xtts(config)
    try:
        model.load_checkpoint(config, checkpoint_dir=str(model_dir), eval=True, use_deepspeed=False)
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineUnavailable(f"{model_dir / 'model.pth'} is not an XTTS checkpoint for this config.json: {first}") from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device)


class XttsTTS:
    """A cloned voice that streams: the first audio arrives after ``chunk_tokens`` GPT
    steps instead of after the whole sentence."""

    name = "xtts"
    native = True  # torch: the live avatar runs it in a worker process ([tts] isolate)
    native_modules = ("torch",)  # preflight: a rebuilt runtime is probed again
    Options = XttsOptions
    sample_rate = 24000

    def __init__(self, options: XttsOptions | None = None, base_dir: Path | None = None, threads: int | None = None) -> None:
        self.options = options or XttsOptions()
        model_dir, reference = resolve(self.options, base_dir or Path.cwd())
        import torch

        if threads:
            torch.set_num_threads(threads)
        t0 = time.perf_counter()
        self.model = load_model(model_dir, self.options.device)
        self.sample_rate = int(self.model.args.output_sample_rate)
        cache_dir = Path(self.options.cache_dir).expanduser() if self.options.cache_dir else None
        self.voice, cached = load_voice(self.model, reference, model_dir, cache_dir)
        log.info("XTTS ready on %s in %.1f s (voice %s)", self.model.device, time.perf_counter() - t0,
                 "from cache" if cached else "computed from the reference clip")
        self.voice_from_cache = cached

    @classmethod
    def validate(cls, options: XttsOptions, base_dir: Path | None = None) -> None:
        """The consent rule (and the two paths it needs), without importing torch: a refusal
        stops the command; open_tts never falls back to another voice over it."""
        resolve(options, base_dir or Path.cwd())

    @classmethod
    def check(cls) -> str | None:
        try:
            import torch  # noqa: F401
            import TTS  # noqa: F401  (raises ImportError when torchaudio or torchcodec is missing)
        except ImportError as exc:
            return f"coqui-tts cannot be imported ({str(exc).strip().splitlines()[0]}); pip install -e plugins/xtts"
        return None

    def stream(self, text: str) -> Iterator[AudioChunk]:
        import torch

        text = text.strip()
        if not text:
            return
        limit = self.model.tokenizer.char_limits.get(self.options.language.split("-")[0], 250)
        with torch.inference_mode():
            for wav in self.model.inference_stream(
                text,
                self.options.language,
                self.voice.gpt_latent,
                self.voice.speaker_embedding,
                stream_chunk_size=self.options.chunk_tokens,
                temperature=self.options.temperature,
                speed=self.options.speed,
                enable_text_splitting=len(text) > limit,
            ):
                samples = np.clip(wav.detach().float().cpu().numpy().reshape(-1), -1.0, 1.0).astype(np.float32)
                if samples.size:
                    yield AudioChunk(samples, self.sample_rate, None)
