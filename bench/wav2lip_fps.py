"""Wav2Lip face engine speed: network-only and whole-engine frames per second.

The real Wav2Lip generator with random weights (dense convolutions cost the same whatever
the weights are), saved and loaded like a released checkpoint. For each variant:

- ``original``: the network as the original inference script runs it (BatchNorm
  unfolded, the face encoder on every frame, the full 96x96 output), fp32 torch;
- ``torch fp32`` / ``torch bf16``: the plugin's TorchRunner (BatchNorm folded, the face
  encoded once, only the lower half decoded; bf16 channels-last);
- ``onnx fp32``: the plugin's OnnxRunner (the same decoder exported, onnxruntime CPU);
- on a GPU also ``cuda fp16`` (and ``cuda fp32``).

"network" times the runner alone on batches of mel windows (median of the repeats).
"engine" times ``Wav2LipEngine.render`` in render-job mode over 8 s of speech with the
sample portrait: mel spectrogram, network (on the worker thread), colour match, paste
and the mesh warp, i.e. what a frame of the render job costs.

Usage:  .venv/bin/python bench/wav2lip_fps.py [--threads 2] [--batch 16] [--repeats 5] [--frames 200]
"""
from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from talker_stream.clock import MediaClock  # noqa: E402
from talker_stream.face.params import FaceParams  # noqa: E402
from talker_stream.portrait import load_portrait  # noqa: E402
from talker_stream_wav2lip import Wav2LipEngine, Wav2LipOptions  # noqa: E402
from talker_stream_wav2lip.checkpoint import load_generator, save_like_original  # noqa: E402
from talker_stream_wav2lip.network import Wav2Lip  # noqa: E402
from talker_stream_wav2lip.runner import OnnxRunner, TorchRunner, cpu_has_native_bf16  # noqa: E402

from _load import OtherLoad  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "examples" / "portrait.png"
CPU_GOAL, GPU_GOAL = 25.0, 200.0


def timed(fn, batch: int, repeats: int) -> list[float]:
    """Frames per second of fn on *batch* mel windows, once per repeat, after a warm-up call."""
    mels = np.random.default_rng(0).normal(size=(batch, 80, 16)).astype(np.float32)
    fn(mels)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(mels)
        out.append(batch / (time.perf_counter() - t0))
    return out


def original(model: Wav2Lip, face: np.ndarray, device: str):
    """The original inference: the whole network, face encoder included, on every frame."""
    model = model.to(device)
    x = torch.from_numpy(face).to(device)

    def run(mels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            m = torch.from_numpy(mels[:, None]).to(device)
            return model(m, x.expand(len(mels), -1, -1, -1)).cpu().numpy()
    return run


def variants(ckpt: Path, face: np.ndarray, threads: int, device: str) -> list[tuple[str, str, str, object]]:
    """(name, backend, precision, runner) for everything that can run here."""
    out = [("original", "torch", "fp32", original(load_generator(ckpt), face, device))]
    if device == "cuda":
        for precision in ("fp32", "fp16"):
            out.append((f"cuda {precision}", "torch", precision, TorchRunner(load_generator(ckpt), face, "cuda", precision)))
        return out
    out.append(("torch fp32", "torch", "fp32", TorchRunner(load_generator(ckpt), face, "cpu", "fp32")))
    if cpu_has_native_bf16():
        out.append(("torch bf16", "torch", "bf16", TorchRunner(load_generator(ckpt), face, "cpu", "bf16")))
    out.append(("onnx fp32", "onnx", "fp32", OnnxRunner(load_generator(ckpt), face, threads)))
    return out


def engine_fps(ckpt: Path, portrait: np.ndarray, backend: str, precision: str, device: str, batch: int,
               threads: int, frames: int) -> float:
    """Render-job frames per second of the whole engine over *frames* frames of speech."""
    engine = Wav2LipEngine(Wav2LipOptions(checkpoint=str(ckpt), device=device, backend=backend,
                                          precision=precision, batch_size=batch, threads=threads))
    try:
        avatar = engine.prepare(portrait)
        clock = MediaClock(48000, 25)
        t = np.arange(frames * 1920) / 48000
        voice = (0.4 * (np.sin(2 * np.pi * 3 * t) > 0) * np.sin(2 * np.pi * 160 * t)).astype(np.float32)
        frame = portrait.copy()
        t0 = time.perf_counter()
        engine.speech_placed(0, voice, clock)
        for k in range(frames):
            engine.render(avatar, FaceParams(jaw_open=0.3, yaw=1.0), out=frame, frame=k)
        fps = frames / (time.perf_counter() - t0)
        assert avatar.lips.neural_frames == frames
        return fps
    finally:
        engine.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=200, help="frames for the whole-engine run")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = ap.parse_args()
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    if device == "cuda" and args.batch == [1, 16]:
        args.batch = [16, 128]
    torch.set_num_threads(args.threads)
    portrait = load_portrait(PORTRAIT)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "wav2lip_random.pth"
        torch.manual_seed(0)
        save_like_original(Wav2Lip(), ckpt)
        probe = Wav2LipEngine(Wav2LipOptions(checkpoint=str(ckpt), device=device, threads=args.threads))
        face = probe.prepare(portrait).crop.network_input(portrait)
        probe.close()
        other = OtherLoad().start()
        rows = []
        for name, backend, precision, runner in variants(ckpt, face, args.threads, device):
            net = {b: timed(runner, b, args.repeats) for b in args.batch}
            eng = (None if name == "original" else
                   engine_fps(ckpt, portrait, backend, precision, device, max(args.batch), args.threads, args.frames))
            rows.append((name, net, eng))
            print(f"  {name}: {', '.join(f'b{b} {statistics.median(v):.1f}' for b, v in net.items())}"
                  f"{f', engine {eng:.1f}' if eng else ''}", file=sys.stderr, flush=True)
        load = other.stop()

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none used"
    print(f"# wav2lip fps on {device} ({gpu}); torch {torch.__version__}, threads {args.threads} "
          f"(torch.get_num_threads() = {torch.get_num_threads()}), python {platform.python_version()}")
    print(f"portrait {PORTRAIT.relative_to(ROOT)} {portrait.shape[1]}x{portrait.shape[0]}; random weights; "
          f"{args.repeats} repeats per batch size after a warm-up; engine: {args.frames} frames of speech")
    print(load)
    print()
    base = statistics.median(rows[0][1][max(args.batch)])
    heads = " | ".join(f"network fps, batch {b} (median; min-max)" for b in args.batch)
    print(f"| variant | {heads} | vs original (batch {max(args.batch)}) | engine fps (render job) |")
    print("|---|" + "---|" * len(args.batch) + "---|---|")
    for name, net, eng in rows:
        cells = " | ".join(f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in net.values())
        ratio = statistics.median(net[max(args.batch)]) / base
        print(f"| {name} | {cells} | {ratio:.2f}x | {f'{eng:.1f}' if eng else '-'} |")
    best = max((r for r in rows if r[2]), key=lambda r: r[2])
    goal = GPU_GOAL if device == "cuda" else CPU_GOAL
    print()
    print(f"goal: {goal:g} fps on {device}; best whole-engine {best[0]} {best[2]:.1f} fps "
          f"({best[2] / goal:.2f}x the goal: {'met' if best[2] >= goal else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
