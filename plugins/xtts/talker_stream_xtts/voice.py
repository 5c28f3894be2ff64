"""The cloned voice: conditioning computed once from the reference clip, then cached.

XTTS conditions every sentence on two tensors derived from the reference clip (a GPT style
latent and a speaker embedding). Computing them takes seconds on a CPU, so they are kept
in a small file keyed by the clip's and the model's fingerprints. The file is a voiceprint
(personal data): it is written owner-only and never leaves the cache folder.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talker_stream.plugin import read_audio
from talker_stream.plugin import InputError

log = logging.getLogger(__name__)

CLONE_RATE = 22050  # XTTS computes both conditionings from 22.05 kHz audio
MIN_SECONDS = 3.0
MAX_SECONDS = 30.0


@dataclass
class Voice:
    gpt_latent: "torch.Tensor"  # noqa: F821 - torch is imported lazily
    speaker_embedding: "torch.Tensor"  # noqa: F821


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "talker-stream" / "voices"


def fingerprint(reference: Path, model_dir: Path) -> str:
    """Changes whenever the clip or the model does, so a stale voice is never reused."""
    h = hashlib.sha256(reference.read_bytes())
    for name in ("config.json", "model.pth"):
        f = model_dir / name
        if f.is_file():
            h.update(f"{name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def read_reference(reference: Path) -> np.ndarray:
    """The clip as mono float32 at 22.05 kHz, checked to be usable for cloning."""
    samples = np.concatenate([c.pcm for c in read_audio(reference, CLONE_RATE)])
    seconds = len(samples) / CLONE_RATE
    if seconds < MIN_SECONDS:
        raise InputError(f"voice reference {reference.name} is {seconds:.1f} s long; XTTS needs at least "
                         f"{MIN_SECONDS:.0f} s (6-30 s of clean speech works best)")
    if float(np.sqrt(np.mean(samples**2))) < 1e-3:
        raise InputError(f"voice reference {reference.name} is silent; record the voice again")
    return samples[: int(MAX_SECONDS * CLONE_RATE)]


def load_voice(model, reference: Path, model_dir: Path, cache_dir: Path | None) -> tuple[Voice, bool]:
    """The conditioning for *reference*; the flag says whether it came from the cache."""
    import torch

    cache = (cache_dir or default_cache_dir()) / f"{fingerprint(reference, model_dir)}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            return Voice(saved["gpt_latent"], saved["speaker_embedding"]), True
        except Exception as exc:  # noqa: BLE001 - a damaged cache is recomputed, not fatal
            log.warning("ignoring unreadable voice cache %s: %s", cache, exc)
    audio = torch.from_numpy(read_reference(reference)).unsqueeze(0).to(model.device)
    with torch.inference_mode():
        latent = model.get_gpt_cond_latents(audio, CLONE_RATE, length=model.config.gpt_cond_len,
                                            chunk_length=model.config.gpt_cond_chunk_len)
        embedding = model.get_speaker_embedding(audio, CLONE_RATE)
    voice = Voice(latent.cpu(), embedding.cpu())
    cache.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cache.parent, 0o700)
    tmp = cache.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        torch.save({"gpt_latent": voice.gpt_latent, "speaker_embedding": voice.speaker_embedding}, f)
    tmp.replace(cache)
    return voice, False
