"""Mesh animator speed on one CPU thread, at portrait sizes 256, 512 and 1024 px.

The sample portrait is resized square (PIL LANCZOS) to each size and prepared once;
then ``MeshAnimator.render`` is timed over a fixed 200-frame sequence of realistic
parameters: a jaw that opens and closes like syllables, mouth width/rounding that vary,
and expression, head motion and blinks from ``Expression.step``. Each size gets a warm-up
and then several timed repeats of the same sequence into one reused frame buffer (as the
render job does). Only ``render`` is inside the timed loop; the parameters are computed
beforehand (their cost is reported separately).

Usage:  .venv/bin/python bench/animator_fps.py [--frames 200] [--repeats 5] [--sizes 256 512 1024]
        .venv/bin/python bench/animator_fps.py --stages 512     # where a frame's time goes, per stage

``--stages SIZE`` adds a table of per-stage times at that size: the animator's own steps
(rig displacement with head pose, eyelids, mesh warp, mouth interior), timed by wrapping
those methods, and inside the warp the sparse ``W @ d`` product and the ``cv2.remap`` calls.

Goal (issue 2): >= 100 fps at 512x512 on one core.
"""
from __future__ import annotations

import os

# one thread everywhere, before numpy / cv2 / mediapipe are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("GLOG_minloglevel", "2")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from talker_stream.face.animator import MeshAnimator  # noqa: E402
from talker_stream.face.expression import Expression  # noqa: E402
from talker_stream.face.params import FaceParams  # noqa: E402
from talker_stream.face.portrait import load_portrait  # noqa: E402

from _load import OtherLoad, cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)

cv2.setNumThreads(1)

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "examples" / "portrait.png"
FPS = 25.0
GOAL_FPS = 100.0
GOAL_SIZE = 512
EMOTIONS = ["neutral", "happy", "surprised", "questioning", "sad", "neutral", "angry", "happy"]


def param_sequence(n: int, fps: float = FPS) -> list[FaceParams]:
    """*n* frames of talking: syllable-rate jaw, varying lips, emotions every 2 s, blinks."""
    expr = Expression()  # seeded: the same sequence every run
    seq = []
    for k in range(n):
        t = (k + 0.5) / fps
        # syllables at ~3.5 Hz, louder/softer over ~1.3 s, a short pause every 4 s
        talking = 0.0 if (t % 4.0) > 3.4 else 1.0
        jaw = talking * (0.55 + 0.35 * math.sin(2 * math.pi * 0.75 * t)) * 0.5 * (1 - math.cos(2 * math.pi * 3.5 * t))
        emotion = EMOTIONS[int(t // 2.0) % len(EMOTIONS)]
        p = expr.step(t, emotion, jaw)
        p.jaw_open += jaw
        p.mouth_wide += talking * 0.3 * max(0.0, math.sin(2 * math.pi * 1.1 * t))
        p.mouth_round += talking * 0.3 * max(0.0, -math.sin(2 * math.pi * 1.1 * t))
        seq.append(p)
    # make sure the sequence holds at least two blinks, whatever the generator did
    blinking = sum(1 for p in seq if max(p.blink_l, p.blink_r) > 0.01)
    if blinking < 8 and n >= 60:
        shape = [0.3, 0.8, 1.0, 1.0, 0.6, 0.2]
        for start in (n // 3, 2 * n // 3):
            for j, b in enumerate(shape):
                seq[start + j].blink_l = max(seq[start + j].blink_l, b)
                seq[start + j].blink_r = max(seq[start + j].blink_r, b)
    return seq


def describe(seq: list[FaceParams]) -> dict[str, float]:
    n = len(seq)
    return {
        "frames": n,
        "blink_frames": sum(1 for p in seq if max(p.blink_l, p.blink_r) > 0.01),
        "open_mouth_frames": sum(1 for p in seq if p.jaw_open > 0.15),
        "posed_frames": sum(1 for p in seq if p.yaw or p.pitch or p.roll or p.lift),
        "jaw_max": max(p.jaw_open for p in seq),
        "yaw_range": max(p.yaw for p in seq) - min(p.yaw for p in seq),
    }


def time_params(n: int) -> float:
    """Microseconds per frame spent making parameters (Expression.step + the mouth)."""
    t0 = time.perf_counter()
    param_sequence(n)
    return (time.perf_counter() - t0) / n * 1e6


def bench_size(
    animator: MeshAnimator, base: np.ndarray, size: int, seq: list[FaceParams], repeats: int, warmup: int
) -> dict:
    rgb = np.asarray(Image.fromarray(base).resize((size, size), Image.LANCZOS))
    t0 = time.perf_counter()
    avatar = animator.prepare(rgb, source=f"portrait@{size}")
    prepare_s = time.perf_counter() - t0
    frame = rgb.copy()
    for k in range(warmup):
        animator.render(avatar, seq[k % len(seq)], out=frame)
    fps, cpu_ratio = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for p in seq:
            animator.render(avatar, p, out=frame)
        wall = time.perf_counter() - w0
        fps.append(len(seq) / wall)
        cpu_ratio.append((time.process_time() - c0) / wall)
    w = avatar.warper
    return {
        "size": size,
        "face_px": avatar.face.width,
        "roi": f"{w.x1 - w.x0}x{w.y1 - w.y0}",
        "prepare_ms": prepare_s * 1e3,
        "fps": fps,
        "median": statistics.median(fps),
        "cpu_ratio": statistics.median(cpu_ratio),
    }


class StageTimer:
    """Wall time per stage of ``MeshAnimator.render``, by wrapping the methods it calls on one
    avatar (rig, eyelids, warper, mouth), the warper's sparse matrix and ``cv2.remap``. The
    wrappers cost about a microsecond a call, small against the stages (tenths of ms)."""

    STAGES = {"rig": ("displacement", "displacement and head pose (rig)"),
              "eyelids": ("close", "eyelids (only blink frames do work)"),
              "warper": ("warp", "mesh warp"),
              "mouth": ("paint", "mouth interior")}

    def __init__(self, avatar) -> None:
        self.seconds: dict[str, float] = {}
        self._inside: list[str] = []
        for attr, (method, label) in self.STAGES.items():
            part = getattr(avatar, attr)
            setattr(part, method, self._timed(label, getattr(part, method)))
        warper = avatar.warper
        if hasattr(warper, "weights"):
            warper.weights = self._TimedMatrix(warper.weights, self)
        self._remap = cv2.remap

    class _TimedMatrix:
        def __init__(self, matrix, timer: "StageTimer") -> None:
            self.matrix, self.timer = matrix, timer

        def __matmul__(self, other):
            t0 = time.perf_counter()
            try:
                return self.matrix @ other
            finally:
                self.timer.add("  of which sparse W @ d", time.perf_counter() - t0)

        def __getattr__(self, name):
            return getattr(self.matrix, name)

    def _timed(self, label: str, fn):
        def wrapper(*args, **kwargs):
            self._inside.append(label)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - t0)
                self._inside.pop()
        return wrapper

    def add(self, label: str, seconds: float) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds

    def __enter__(self) -> "StageTimer":
        def remap(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self._remap(*args, **kwargs)
            finally:
                where = "  of which cv2.remap (all calls)" if "mesh warp" in self._inside else "cv2.remap elsewhere"
                self.add(where, time.perf_counter() - t0)
        cv2.remap = remap
        return self

    def __exit__(self, *exc) -> None:
        cv2.remap = self._remap


def bench_stages(animator: MeshAnimator, base: np.ndarray, size: int, seq: list[FaceParams], repeats: int,
                 warmup: int) -> list[tuple[str, float]]:
    """(stage, ms per frame) at *size*, the median over *repeats* of the sequence, plus the whole frame."""
    rgb = np.asarray(Image.fromarray(base).resize((size, size), Image.LANCZOS))
    avatar = animator.prepare(rgb, source=f"portrait@{size}")
    frame = rgb.copy()
    for k in range(warmup):
        animator.render(avatar, seq[k % len(seq)], out=frame)
    timer = StageTimer(avatar)
    per_repeat: list[dict[str, float]] = []
    with timer:
        for _ in range(repeats):
            timer.seconds = {}
            t0 = time.perf_counter()
            for p in seq:
                animator.render(avatar, p, out=frame)
            timer.add("whole frame (render)", time.perf_counter() - t0)
            per_repeat.append({k: v / len(seq) * 1e3 for k, v in timer.seconds.items()})
    labels = ["whole frame (render)"] + [label for _, label in StageTimer.STAGES.values()]
    labels[labels.index("mesh warp") + 1:labels.index("mesh warp") + 1] = ["  of which sparse W @ d",
                                                                           "  of which cv2.remap (all calls)"]
    labels += sorted({k for r in per_repeat for k in r} - set(labels))
    return [(label, statistics.median(r.get(label, 0.0) for r in per_repeat)) for label in labels]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--frames", type=int, default=200, help="frames per timed repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument("--stages", type=int, metavar="SIZE", help="also time each stage of a frame at this size")
    args = ap.parse_args()

    pinned = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        pinned = cpu

    base = load_portrait(PORTRAIT)
    seq = param_sequence(args.frames)
    info = describe(seq)
    us_per_frame = time_params(args.frames)

    animator = MeshAnimator()
    t0 = time.perf_counter()
    animator.prepare(base, source="portrait (model load)")  # loads the MediaPipe model once
    first_prepare_s = time.perf_counter() - t0

    other = OtherLoad().start()
    rows = [bench_size(animator, base, s, seq, args.repeats, args.warmup) for s in args.sizes]
    stages = bench_stages(animator, base, args.stages, seq, args.repeats, args.warmup) if args.stages else None
    animator.close()
    other_load = other.stop()

    print(f"# mesh animator, one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1, cv2.setNumThreads(1)"
          f"{f', pinned to CPU {pinned}' if pinned is not None else ''})")
    print(cpu_model())
    print(f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}, "
          f"cv2.getNumThreads()={cv2.getNumThreads()}")
    print(f"portrait: {PORTRAIT.relative_to(ROOT)} {base.shape[1]}x{base.shape[0]}, resized square with LANCZOS")
    print(f"sequence: {info['frames']} frames at {FPS:g} fps of media; {info['blink_frames']} with a blink, "
          f"{info['open_mouth_frames']} with jaw_open > 0.15 (max {info['jaw_max']:.2f}), "
          f"{info['posed_frames']} with head pose (yaw range {info['yaw_range']:.1f} deg)")
    print(f"timing: {args.warmup} warm-up frames, then {args.repeats} repeats of the sequence per size")
    print(f"first prepare (incl. MediaPipe model load, 352 px): {first_prepare_s * 1e3:.0f} ms; "
          f"parameter generation: {us_per_frame:.0f} us/frame (not in the fps below)")
    print(f"sizes loop: {other_load}; CPU/wall below 1.00 means this thread was kept off the CPU")
    print()
    print("| size | face width px | warp ROI px | prepare ms | median fps | min-max fps (repeats) | ms/frame | "
          f"vs {GOAL_FPS:g} fps goal | CPU/wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        spread = f"{min(r['fps']):.0f}-{max(r['fps']):.0f} ({', '.join(f'{f:.0f}' for f in r['fps'])})"
        print(f"| {r['size']}x{r['size']} | {r['face_px']:.0f} | {r['roi']} | {r['prepare_ms']:.0f} | "
              f"{r['median']:.0f} | "
              f"{spread} | {1e3 / r['median']:.2f} | {r['median'] / GOAL_FPS:.2f}x | {r['cpu_ratio']:.2f} |")
    goal = next((r for r in rows if r["size"] == GOAL_SIZE), None)
    if goal is not None:
        verdict = "meets" if goal["median"] >= GOAL_FPS else "misses"
        print()
        print(f"goal: {goal['median']:.0f} fps at {GOAL_SIZE}x{GOAL_SIZE} on one thread {verdict} "
              f">= {GOAL_FPS:g} fps ({goal['median'] / GOAL_FPS:.2f}x)")
    if stages:
        whole = stages[0][1]
        print()
        print(f"## where a {args.stages}x{args.stages} frame's time goes (median of {args.repeats} repeats, "
              f"wrapped methods; {cpu_model()})")
        print()
        print("| stage | ms/frame | share of the frame |")
        print("|---|---|---|")
        for label, ms in stages:
            print(f"| {label} | {ms:.3f} | {ms / whole * 100:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
