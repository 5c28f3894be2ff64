"""Running the per-frame half of the network: torch (CUDA or CPU) or ONNX Runtime (CPU).

Both runners take a batch of mel windows and return the generated lower halves of the
face as RGB in [0, 1]; the portrait's face features are computed once, when the runner
is made. What makes them fast where they run:

- batch norm is folded into the convolutions (eval mode: it is a fixed affine map);
- only the rows that are pasted back are decoded (``Wav2Lip.decode(from_row=48)``);
- torch on CUDA runs fp16, on a CPU with native bfloat16 (AVX512-BF16/AMX) bf16,
  channels-last; otherwise fp32;
- ONNX Runtime gets the decoder exported once, in memory, with the face features as
  inputs, so one graph serves any portrait.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval

from talker_stream.plugin import EngineUnavailable

from .crop import HALF
from .network import ConvBlock, Wav2Lip

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware; elsewhere oneDNN emulates it, slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def pick_device(option: str, backend: str = "torch") -> str:
    if option == "cpu" or (option == "auto" and backend == "onnx"):  # the ONNX path runs on the CPU only
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if option == "cuda":
        raise EngineUnavailable('[face.wav2lip] device = "cuda", but torch sees no CUDA GPU '
                                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                                'use device = "auto" or "cpu"')
    return "cpu"


def pick_precision(option: str, device: str, backend: str) -> str:
    if backend == "onnx":
        if option not in ("auto", "fp32"):
            raise EngineUnavailable(f'[face.wav2lip] backend = "onnx" runs fp32 only; got precision = "{option}"')
        return "fp32"
    if option == "auto":
        return "fp16" if device == "cuda" else ("bf16" if cpu_has_native_bf16() else "fp32")
    if option == "fp16" and device == "cpu":
        raise EngineUnavailable('[face.wav2lip] precision = "fp16" is for CUDA; on the CPU use "bf16" or "fp32"')
    return option


def fold_batch_norm(model: Wav2Lip) -> Wav2Lip:
    """*model* (changed in place) with every BatchNorm merged into the conv before it."""
    for block in model.modules():
        if isinstance(block, ConvBlock) and len(block.conv_block) == 2:
            conv, bn = block.conv_block
            transpose = isinstance(conv, torch.nn.ConvTranspose2d)
            block.conv_block = torch.nn.Sequential(fuse_conv_bn_eval(conv, bn, transpose=transpose))
    return model


def _to_rgb(faces: np.ndarray) -> np.ndarray:
    """B x 3 x H x W BGR (the network's order) -> B x H x W x 3 RGB."""
    return np.ascontiguousarray(faces[:, ::-1].transpose(0, 2, 3, 1), dtype=np.float32)


class TorchRunner:
    def __init__(self, model: Wav2Lip, face: np.ndarray, device: str, precision: str) -> None:
        self.device = torch.device(device)
        self.dtype = DTYPES[precision]
        self.memory = torch.channels_last if device == "cuda" or precision == "bf16" else torch.contiguous_format
        self.model = fold_batch_norm(model).to(self.device, self.dtype).to(memory_format=self.memory)
        if device == "cuda":
            torch.backends.cudnn.benchmark = True
        with torch.inference_mode():
            x = torch.from_numpy(face).to(self.device, self.dtype).contiguous(memory_format=self.memory)
            self.feats = self.model.encode_face(x)
        self.name = f"torch {precision} on {device}"

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """B x 80 x 16 mel windows -> B x 48 x 96 x 3 generated lower faces, RGB in [0, 1]."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mels[:, None], dtype=np.float32))
            x = x.to(self.device, self.dtype).contiguous(memory_format=self.memory)
            out = self.model.decode(x, self.feats, HALF)
            return _to_rgb(out.float().cpu().numpy())


class _Decoder(torch.nn.Module):
    """decode() with the face features as separate inputs, the shape ONNX export needs."""

    def __init__(self, model: Wav2Lip) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: torch.Tensor, *feats: torch.Tensor) -> torch.Tensor:
        return self.model.decode(mel, list(feats), HALF)


def export_onnx(model: Wav2Lip, feats: list[torch.Tensor]) -> bytes:
    """The folded fp32 decoder as an ONNX model (batch size dynamic)."""
    names = [f"feat{i}" for i in range(len(feats))]
    buf = io.BytesIO()
    mel = torch.zeros(2, 1, 80, 16)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; the new one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_Decoder(model), (mel, *feats), buf, input_names=["mel", *names], output_names=["face"],
                          dynamic_axes={"mel": {0: "batch"}, "face": {0: "batch"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


class OnnxRunner:
    def __init__(self, model: Wav2Lip, face: np.ndarray, threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailable(f'[face.wav2lip] backend = "onnx" needs onnxruntime ({exc}); pip install onnxruntime') from None
        model = fold_batch_norm(model).float().eval()
        with torch.inference_mode():
            feats = model.encode_face(torch.from_numpy(face))
        feats = [f.clone() for f in feats]
        opts = ort.SessionOptions()
        # idle pool threads sleep instead of spinning: spinning ones take the CPU from torch,
        # the mesh warp and the voice (measured: a 2-thread torch call right after an
        # onnxruntime call ran 10x slower on 2 cores)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(export_onnx(model, feats), opts, providers=["CPUExecutionProvider"])
        self.feeds = {f"feat{i}": f.numpy() for i, f in enumerate(feats)}
        self.name = "onnxruntime fp32 on cpu"

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(mels[:, None], dtype=np.float32)
        return _to_rgb(self.session.run(None, {"mel": x, **self.feeds})[0])


def make_runner(model: Wav2Lip, face: np.ndarray, device: str, precision: str, backend: str, threads: int):
    """A runner for a copy of *model* on the portrait's network input *face* (1 x 6 x 96 x 96)."""
    model = copy.deepcopy(model)
    if backend == "onnx":
        if device == "cuda":
            raise EngineUnavailable('[face.wav2lip] backend = "onnx" runs on the CPU; use backend = "torch" for CUDA, '
                                    'or device = "cpu"')
        return OnnxRunner(model, face, threads)
    return TorchRunner(model, face, device, precision)
