"""Loading a released Wav2Lip checkpoint, with errors a user can act on.

The original training script saves ``{"state_dict": ..., "optimizer": ..., "global_step":
..., "global_epoch": ...}``, and because it trained under DataParallel every key starts
with ``module.``. Both that and a bare state dict (with or without the prefix) load.
Anything else (the SyncNet expert, the discriminator, a truncated download) is refused
with the keys that do not fit, before a single frame is rendered.
"""
from __future__ import annotations

from pathlib import Path

import torch

from talker_stream.plugin import EngineUnavailable

from .network import Wav2Lip

NEEDED = ("the wav2lip face engine needs a checkpoint: set [face.wav2lip] checkpoint = \"/path/to/wav2lip_gan.pth\" "
          "in config.toml")
WHERE = "see plugins/wav2lip/README.md for where to download wav2lip_gan.pth or wav2lip.pth"
SHOWN = 3  # example keys named in an error


def _state_dict(path: Path) -> dict:
    if path.is_dir():
        raise EngineUnavailable(f"Wav2Lip checkpoint {path} is a folder; name the .pth file in it ({WHERE})")
    if not path.is_file():
        raise EngineUnavailable(f"Wav2Lip checkpoint not found: {path} ([face.wav2lip] checkpoint, relative to "
                                f"config.toml's folder); {WHERE}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not a usable file"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineUnavailable(f"{path} is not a PyTorch checkpoint that can be loaded safely ({first}); {WHERE}") from None
    sd = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EngineUnavailable(f"{path} holds no state dict of tensors (expected {{'state_dict': {{...}}}}); {WHERE}")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _examples(keys: set[str]) -> str:
    shown = ", ".join(sorted(keys)[:SHOWN])
    return f"{shown}{', ...' if len(keys) > SHOWN else ''}"


def load_generator(path: str | Path) -> Wav2Lip:
    """The Wav2Lip generator with the weights in *path*, in eval mode on the CPU."""
    path = Path(path)
    sd = _state_dict(path)
    model = Wav2Lip()
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}  # absent from very old saves
    missing = set(expected) - set(sd) - optional
    unexpected = set(sd) - set(expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
        raise EngineUnavailable(f"{path} is not a Wav2Lip generator checkpoint: {'; '.join(parts)}. "
                                f"lipsync_expert.pth and the discriminator do not work here; {WHERE}")
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    if wrong:
        raise EngineUnavailable(f"{path} has Wav2Lip's layer names but other shapes (a variant model?): "
                                f"{'; '.join(wrong[:SHOWN])}{'; ...' if len(wrong) > SHOWN else ''}")
    model.load_state_dict(sd, strict=False)
    return model.eval()


def save_like_original(model: Wav2Lip, path: str | Path) -> None:
    """Write *model* the way the original training script did (used by tests and benchmarks)."""
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "optimizer": {}, "global_step": 0, "global_epoch": 0}, path)
