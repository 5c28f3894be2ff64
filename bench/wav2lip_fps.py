"""Wav2Lip face engine speed: network-only and whole-engine frames per second.

The real Wav2Lip generator with random weights (dense convolutions cost the same whatever
the weights are), saved and loaded like a released checkpoint. For each variant:

- ``original``: the network as the original inference script runs it (BatchNorm
  unfolded, the face encoder on every frame, the full 96x96 output), fp32 torch;
- ``torch fp32`` / ``torch bf16``: the plugin's TorchRunner (BatchNorm folded, the face
  encoded once, only the lower half decoded; bf16 channels-last);
- ``onnx fp32``: the plugin's OnnxRunner (the same decoder exported, onnxruntime CPU);
- on a GPU also ``cuda fp16`` (and ``cuda fp32``).

"network" times the runner alone on batches of mel windows. "engine" times
``Wav2LipEngine.render`` in render-job mode on rounds of 100 frames (4 s) of speech with
the sample portrait: mel spectrogram, network (on the worker thread), colour match, paste
and the mesh warp, i.e. what a frame of the render job costs. Both are interleaved
across variants (each variant once per repeat) and reported as medians, because on a
shared 2-core machine another process's burst slows a 2-thread run by up to 4x.

"live" (with ``--live SECONDS``) runs ``LiveAvatar`` with the fastest variant, the Piper
voice and a sink that only counts, saying one sentence after another: frames per second
delivered, pictures dropped by the frame loop, and the share of speaking frames that got
a neural mouth in time (the rest fell back to the mesh mouth).

Usage:  .venv/bin/python bench/wav2lip_fps.py [--threads 2] [--batch 1 16] [--repeats 5] [--frames 200] [--live 30]
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

from talker_stream.speech.clock import MediaClock  # noqa: E402
from talker_stream.face.params import FaceParams  # noqa: E402
from talker_stream.face.portrait import load_portrait  # noqa: E402
from talker_stream_wav2lip import Wav2LipEngine, Wav2LipOptions  # noqa: E402
from talker_stream_wav2lip.checkpoint import load_generator, save_like_original  # noqa: E402
from talker_stream_wav2lip.network import Wav2Lip  # noqa: E402
from talker_stream_wav2lip.runner import OnnxRunner, TorchRunner, cpu_has_native_bf16  # noqa: E402

from _load import OtherLoad  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "examples" / "portrait.png"
CPU_GOAL, GPU_GOAL = 25.0, 200.0
CLOCK = MediaClock(48000, 25)


def timed(runners: dict, batches: list[int], repeats: int) -> dict[str, dict[int, list[float]]]:
    """Frames per second of each runner on each batch size, once per repeat after a warm-up.

    Interleaved (every runner once per repeat) so that load from elsewhere on a shared
    machine falls on all of them alike.
    """
    mels = {b: np.random.default_rng(b).normal(size=(b, 80, 16)).astype(np.float32) for b in batches}
    out = {name: {b: [] for b in batches} for name in runners}
    for name, run in runners.items():
        for b in batches:
            run(mels[b])
    for _ in range(repeats):
        for name, run in runners.items():
            for b in batches:
                t0 = time.perf_counter()
                run(mels[b])
                out[name][b].append(b / (time.perf_counter() - t0))
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


class EngineRun:
    """One engine in render-job mode, fed a fresh stretch of speech per round."""

    def __init__(self, ckpt: Path, portrait: np.ndarray, backend: str, precision: str, device: str, batch: int,
                 threads: int) -> None:
        self.engine = Wav2LipEngine(Wav2LipOptions(checkpoint=str(ckpt), device=device, backend=backend,
                                                   precision=precision, batch_size=batch, threads=threads))
        self.avatar = self.engine.prepare(portrait)
        self.frame = portrait.copy()
        self.next = 0

    def round(self, frames: int) -> float:
        """Frames per second over *frames* frames: mel, network, paste and mesh warp."""
        t = np.arange(frames * 1920) / 48000
        voice = (0.4 * (np.sin(2 * np.pi * 3 * t) > 0) * np.sin(2 * np.pi * 160 * t)).astype(np.float32)
        first, self.next = self.next, self.next + frames
        done = self.avatar.lips.neural_frames
        t0 = time.perf_counter()
        self.engine.speech_placed(first, voice, CLOCK)
        for k in range(first, first + frames):
            self.engine.render(self.avatar, FaceParams(jaw_open=0.3, yaw=1.0), out=self.frame, frame=k)
        fps = frames / (time.perf_counter() - t0)
        assert self.avatar.lips.neural_frames - done == frames
        return fps


class CountingSink:
    name = "count"

    def __init__(self) -> None:
        self.frames = self.pictures = self.speaking = 0

    def open(self, size, clock) -> None:
        pass

    def write(self, frame) -> None:
        self.frames += 1
        self.pictures += frame.image is not None
        self.speaking += frame.speaking

    def close(self) -> None:
        pass


def live_run(ckpt: Path, backend: str, precision: str, batch: int, threads: int, seconds: float) -> dict:
    """The live avatar speaking for *seconds* with the wav2lip engine: what reached the sink."""
    from talker_stream.config import load_settings
    from talker_stream.live import LiveAvatar

    settings = load_settings(None, {"avatar.portrait": str(PORTRAIT), "live.sinks": [], "face.engine": "wav2lip",
                                    "face.wav2lip": {"checkpoint": str(ckpt), "backend": backend, "precision": precision,
                                                     "batch_size": batch, "threads": threads}})
    sink = CountingSink()
    live = LiveAvatar(settings, [sink]).start()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            if live.stats()["queue_utterances"] == 0 and live.stats()["queued_seconds"] < 2:
                live.say("This is the live avatar with a neural mouth, speaking one sentence after another.")
            time.sleep(0.2)
        wall = time.monotonic() - t0
    finally:
        live.stop()
        live.engine.close()
    lips = live.avatar.lips
    judged = lips.neural_frames + lips.missed_frames
    return {"fps": sink.frames / wall, "dropped": live.dropped, "frames": sink.frames, "speaking": sink.speaking,
            "neural_share": lips.neural_frames / judged if judged else 0.0, "gave_up": lips.gave_up}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=100, help="frames of speech per whole-engine repeat")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--live", type=float, default=0, help="seconds of live avatar with the fastest variant (0: skip)")
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
        found = variants(ckpt, face, args.threads, device)
        kinds = [(name, backend, precision) for name, backend, precision, _ in found]
        net = timed({name: run for name, _, _, run in found}, args.batch, args.repeats)
        del found  # the runners' models: the engines below hold their own
        runs = {name: EngineRun(ckpt, portrait, backend, precision, device, max(args.batch), args.threads)
                for name, backend, precision in kinds if name != "original"}
        eng = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                eng[name].append(run.round(args.frames))
        for run in runs.values():
            run.engine.close()
        rows = [{"name": name, "backend": backend, "precision": precision, "net": net[name],
                 "engine": statistics.median(eng[name]) if name in eng else None,
                 "engine_all": eng.get(name, [])} for name, backend, precision in kinds]
        best = max((r for r in rows if r["engine"]), key=lambda r: r["engine"])
        live = None
        if args.live:
            live = live_run(ckpt, best["backend"], best["precision"], max(args.batch), args.threads, args.live)
        load = other.stop()

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none used"
    print(f"# wav2lip fps on {device} ({gpu}); torch {torch.__version__}, threads {args.threads} "
          f"(torch.get_num_threads() = {torch.get_num_threads()}), python {platform.python_version()}")
    print(f"portrait {PORTRAIT.relative_to(ROOT)} {portrait.shape[1]}x{portrait.shape[0]}; random weights; "
          f"{args.repeats} interleaved repeats per batch size after a warm-up; engine: {args.repeats} interleaved "
          f"rounds of {args.frames} frames of speech, batch {max(args.batch)}")
    print(load)
    print()
    base = statistics.median(rows[0]["net"][max(args.batch)])
    heads = " | ".join(f"network fps, batch {b} (median; min-max)" for b in args.batch)
    print(f"| variant | {heads} | vs original (batch {max(args.batch)}) | engine fps, render job (median; min-max) |")
    print("|---|" + "---|" * len(args.batch) + "---|---|")
    for r in rows:
        name, net, eng = r["name"], r["net"], r["engine"]
        cells = " | ".join(f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in net.values())
        ratio = statistics.median(net[max(args.batch)]) / base
        spread = f" ({min(r['engine_all']):.1f}-{max(r['engine_all']):.1f})" if eng else ""
        print(f"| {name} | {cells} | {ratio:.2f}x | {f'{eng:.1f}' if eng else '-'}{spread} |")
    goal = GPU_GOAL if device == "cuda" else CPU_GOAL
    print()
    fps = best["engine"]
    print(f"goal: {goal:g} fps on {device}; best whole-engine {best['name']} {fps:.1f} fps "
          f"({fps / goal:.2f}x the goal: {'met' if fps >= goal else 'NOT met'})")
    if live is not None:
        print(f"live, {best['name']}, {args.live:g} s: {live['fps']:.1f} fps delivered ({live['frames']} frames, "
              f"{live['speaking']} speaking), {live['dropped']} pictures dropped by the frame loop, "
              f"{100 * live['neural_share']:.0f}% of speaking frames with a neural mouth in time, "
              f"{'gave up on real time (mesh mouth)' if live['gave_up'] else 'kept the neural mouth'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
