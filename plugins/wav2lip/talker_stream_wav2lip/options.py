"""The ``[face.wav2lip]`` settings, checked by talker_stream.config like the core's own.

Kept free of torch so that config validation and ``talker-stream doctor`` work (and say
what is missing) on machines where torch is not installed.
"""
from __future__ import annotations

from dataclasses import dataclass

from talker_stream.plugin import opt


@dataclass
class Wav2LipOptions:
    checkpoint: str = ""  # wav2lip_gan.pth or wav2lip.pth, downloaded by the user; relative to config.toml
    device: str = opt("auto", choices=("auto", "cpu", "cuda"))  # auto: CUDA when torch sees a GPU
    backend: str = opt("torch", choices=("torch", "onnx"))  # onnx: onnxruntime, CPU only
    precision: str = opt("auto", choices=("auto", "fp32", "bf16", "fp16"))  # auto: fp16 on CUDA, bf16 on CPUs with it
    batch_size: int = opt(16, 1, 1024)  # mouths per network call
    threads: int = opt(2, 0, 256)  # CPU threads for the network (process-wide in torch); 0 = the library's default
