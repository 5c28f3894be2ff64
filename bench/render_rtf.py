"""Full render job speed: text -> real voice -> mesh face -> H.264/AAC mp4, on this CPU.

A fixed three-sentence English paragraph is rendered with the sample portrait through
``talker_stream.offline.render`` with each TTS engine (piper, espeak; no fallback, so the
engine named is the engine measured), several runs each, interleaved. Per engine it
reports the median media seconds, wall seconds and real-time factor (wall / media, below
1 is faster than real time). ``RenderResult.wall_seconds`` starts after the portrait is
loaded, the face prepared and the voice opened; the "total wall" column also counts that
setup (the whole ``render`` call). One output is then measured with
``talker_stream.face.lipsync.measure_file`` for lip-sync lag and correlation.

Threads are left at their defaults (the render job uses the whole machine). Outputs go to
a temporary folder that is deleted at the end.

Usage:  .venv/bin/python bench/render_rtf.py [--runs 3] [--engines piper espeak] [--sync-engine piper]
        .venv/bin/python bench/render_rtf.py --profile espeak      # where the render loop's time goes

``--profile ENGINE`` renders the paragraph once more with that voice under cProfile (after
the timed runs, outside them) and prints cumulative seconds per stage: the render loop,
the writer (H.264 and AAC encoding), the face (warp, mouth, rig), the voice's synthesis,
and the set-up before the loop. cProfile slows Python-heavy code, so these are shares,
not speeds.
"""
from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from talker_stream.config import load_settings  # noqa: E402
from talker_stream.face.lipsync import measure_file  # noqa: E402
from talker_stream.offline import render  # noqa: E402
from talker_stream.outputs.encoder import probe  # noqa: E402

from _load import OtherLoad, cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = ROOT / "examples" / "portrait.png"
PARAGRAPH = (
    "Good morning, and thank you for joining today's project update. "
    "Over the last two weeks we rebuilt the rendering pipeline so that a single photo "
    "can speak any text on an ordinary laptop. "
    "In the next few minutes I will walk you through what changed, what we measured, and what comes next."
)


def one_render(engine: str, out: Path) -> dict:
    settings = load_settings(None, {"avatar.portrait": str(PORTRAIT), "tts.engine": engine, "tts.fallback": ""})
    c0, t0 = time.process_time(), time.perf_counter()
    result = render(settings, out, text=[PARAGRAPH])
    total = time.perf_counter() - t0
    cpu = time.process_time() - c0
    info = probe(out)
    return {
        "engine": engine,
        "path": out,
        "frames": result.frames,
        "media_s": result.seconds,
        "wall_s": result.wall_seconds,
        "total_s": total,
        "rtf": result.realtime_factor,
        "total_rtf": total / result.seconds,
        "cpu_s": cpu,
        "video_end": info.get("video", {}).get("end", float("nan")),
        "audio_end": info.get("audio", {}).get("end", float("nan")),
        "mb": out.stat().st_size / 1e6,
    }


# (label, file name or "~" for built-ins, function name or a piece of a built-in's name)
PROFILE_STAGES = [
    ("whole render() call", "render.py", "render"),
    ("set-up: face prepare (MediaPipe load + mesh)", "animator.py", "prepare"),
    ("set-up: Piper voice load", "piper.py", "__init__"),
    ("render loop (`_encode`)", "render.py", "_encode"),
    ("  writer", "writer.py", "write"),
    ("    H.264 encode", "~", "'encode' of 'av.video.stream.VideoStream'"),
    ("    AAC encode", "~", "'encode' of 'av.audio.stream.AudioStream'"),
    ("    frame conversion (from_ndarray)", "~", "from_ndarray"),
    ("  writer finish (flush encoders)", "writer.py", "finish"),
    ("  face (MeshAnimator.render)", "animator.py", "render"),
    ("    mesh warp", "warp.py", "warp"),
    ("    mouth interior", "mouth.py", "paint"),
    ("    rig displacement", "rig.py", "displacement"),
    ("  voice synthesis (Piper)", "piper.py", "stream"),
    ("  voice synthesis (espeak-ng)", "espeak.py", "stream"),
]


def profile_render(engine: str, out: Path) -> list[tuple[str, float, int]]:
    """(stage, cumulative seconds, calls) for one render with *engine* under cProfile."""
    import cProfile
    import pstats

    settings = load_settings(None, {"avatar.portrait": str(PORTRAIT), "tts.engine": engine, "tts.fallback": ""})
    prof = cProfile.Profile()
    prof.enable()
    result = render(settings, out, text=[PARAGRAPH])
    prof.disable()
    stats = pstats.Stats(prof).stats
    rows = []
    for label, file, func in PROFILE_STAGES:
        hits = [(ct, nc) for (f, _line, name), (_cc, nc, _tt, ct, _callers) in stats.items()
                if (f == "~" and file == "~" and func in name) or (file != "~" and f.endswith("/" + file) and name == func)]
        if hits:
            rows.append((label, sum(ct for ct, _ in hits), sum(nc for _, nc in hits)))
    rows.append((f"({result.frames} frames, {result.seconds:.2f} s of media)", 0.0, 0))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", nargs="+", default=["piper", "espeak"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sync-engine", default="piper", help="engine whose first output is measured for lip-sync")
    ap.add_argument("--profile", metavar="ENGINE", help="then profile one render with this voice, per stage")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    other = OtherLoad().start()
    runs: dict[str, list[dict]] = {e: [] for e in args.engines}
    with tempfile.TemporaryDirectory(prefix="talker-bench-") as tmp:
        for i in range(args.runs):  # interleaved, so drift in machine speed hits both engines alike
            for engine in args.engines:
                r = one_render(engine, Path(tmp) / f"{engine}-{i}.mp4")
                runs[engine].append(r)
                print(f"run {i + 1}/{args.runs} {engine}: {r['frames']} frames, {r['media_s']:.2f} s media, "
                      f"{r['wall_s']:.2f} s wall ({r['total_s']:.2f} s with setup), RTF {r['rtf']:.3f}",
                      file=sys.stderr, flush=True)
        sync = None
        if args.sync_engine in runs and runs[args.sync_engine]:
            target = runs[args.sync_engine][0]
            t0 = time.perf_counter()
            rep = measure_file(target["path"])
            sync = (target, rep, time.perf_counter() - t0)
        other_load = other.stop()
        profile = profile_render(args.profile, Path(tmp) / "profiled.mp4") if args.profile else None
    # the temporary folder and every mp4 in it are gone here

    print(f"# render job, {len(PARAGRAPH.split())} words / {len(PARAGRAPH)} characters of text, "
          f"portrait {PORTRAIT.relative_to(ROOT)}, face engine mesh, 25 fps, crf 20 veryfast, "
          f"median of {args.runs} runs per engine (threads: defaults, {os.cpu_count()} CPUs)")
    print(cpu_model())
    print(f"renders and lip-sync check: {other_load}")
    print()
    print("| tts engine | frames | media s | wall s (render loop) | real-time factor (wall/media) | "
          "x faster than real time | wall s incl. setup | RTF incl. setup | CPU s incl. setup | per-run RTF | mp4 MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, rs in runs.items():
        keys = ("frames", "media_s", "wall_s", "total_s", "cpu_s", "mb")
        med = {k: statistics.median(r[k] for r in rs) for k in keys}
        rtf = statistics.median(r["rtf"] for r in rs)
        total_rtf = statistics.median(r["total_rtf"] for r in rs)
        per_run = ", ".join(f"{r['rtf']:.3f}" for r in rs)
        print(f"| {engine} | {med['frames']:.0f} | {med['media_s']:.2f} | {med['wall_s']:.2f} | {rtf:.3f} | "
              f"{1 / rtf:.1f}x | {med['total_s']:.2f} | {total_rtf:.3f} | {med['cpu_s']:.2f} | {per_run} | "
              f"{med['mb']:.2f} |")
    print()
    print("stream ends in the files (s, from packet timestamps): " + "; ".join(
        f"{e}: video {rs[0]['video_end']:.3f}, audio {rs[0]['audio_end']:.3f}" for e, rs in runs.items()))
    if sync is not None:
        target, rep, took = sync
        print()
        print(f"lip-sync (measure_file on the first {target['engine']} output, {len(rep.mouth)} frames at "
              f"{rep.fps:g} fps, measured in {took:.1f} s):")
        print()
        print("| engine | lag frames (>0: mouth after sound) | correlation at that lag | blinks seen | "
              "frames without a face found |")
        print("|---|---|---|---|---|")
        missing = int(sum(1 for m in rep.mouth if m != m))
        print(f"| {target['engine']} | {rep.lag_frames} | {rep.correlation:.3f} | {rep.blinks} | {missing} |")
    if profile:
        loop = next((sec for label, sec, _ in profile if label.startswith("render loop")), 0.0) or 1.0
        print()
        print(f"where the time goes: one {args.profile} render under cProfile ({cpu_model()}):")
        print()
        print("| stage | seconds (cumulative, profiled) | calls | share of the render loop |")
        print("|---|---|---|---|")
        for label, sec, calls in profile:
            share = f"{sec / loop * 100:.0f} %" if sec and not label.startswith(("whole", "set-up")) else ""
            print(f"| {label} | {sec:.2f} | {calls or ''} | {share} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
