"""talker-stream: render | doctor."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import TalkerError

DEMO_TEXT = (
    "Hello! [happy] I am your talking avatar, made from a single photo. "
    "I blink, I breathe, and my lips follow every word I say. "
    "[questioning] Would you like me to read something for you?"
)

log = logging.getLogger("talker_stream")


def _settings(args):
    from .config import load_settings

    path = args.config
    if path is None and Path("config.toml").is_file():
        path = "config.toml"
    overrides = {}
    if getattr(args, "portrait", None):
        overrides["avatar.portrait"] = str(Path(args.portrait).resolve())
    if getattr(args, "voice", None):
        overrides["tts.engine"] = args.voice
    if getattr(args, "fps", None):
        overrides["video.fps"] = float(args.fps)
    return load_settings(path, overrides)


def cmd_render(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .render import read_text_pieces, render

    settings = _settings(args)
    output = args.output or str(settings.path(settings.render.output))
    if args.audio:
        text, total, what = None, None, "audio"
    elif args.text_file:
        if not os.path.isfile(args.text_file):
            raise TalkerError(f"text file not found: {args.text_file}")
        text, total, what = read_text_pieces(args.text_file), os.path.getsize(args.text_file), "text"
    else:
        line = args.text if args.text is not None else DEMO_TEXT
        text, total, what = [line], len(line), "text"

    columns = [TextColumn("[bold]rendering"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TextColumn("{task.fields[frames]} frames"), TimeElapsedColumn()]
    with Progress(*columns, disable=args.quiet or not sys.stderr.isatty(), transient=True) as bar:
        # audio progress is counted in samples, which the file size does not tell: pulse instead
        task = bar.add_task("render", total=None if what == "audio" else total, frames=0)

        def on_progress(done: int, frames: int) -> None:
            completed = None if what == "audio" else min(done, total or done)
            bar.update(task, completed=completed, frames=frames)

        result = render(settings, output, text=text, audio=args.audio, progress=on_progress)
    print(
        f"wrote {result.path} ({result.frames} frames, {result.seconds:.1f} s) in {result.wall_seconds:.1f} s: "
        f"{1 / result.realtime_factor:.1f}x faster than real time"
    )
    return 0


def cmd_doctor(args) -> int:
    from .doctor import report

    settings = _settings(args)
    ok = report(settings)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="talker-stream", description="A live AI avatar from one portrait photo.")
    p.add_argument("--version", action="version", version=f"talker-stream {__version__}")
    p.add_argument("-c", "--config", help="config file (default: ./config.toml if present, else built-in defaults)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("render", help="render a talking-head mp4 from a portrait and text or audio")
    src = r.add_mutually_exclusive_group()
    src.add_argument("-t", "--text", help="what the avatar says; [happy]-style tags set the emotion")
    src.add_argument("--text-file", help="read the script from a UTF-8 file (any length)")
    src.add_argument("--audio", help="lip-sync to this recording instead of speaking text")
    r.add_argument("-p", "--portrait", help="portrait photo (overrides avatar.portrait)")
    r.add_argument("-o", "--output", help="mp4 to write (overrides render.output)")
    r.add_argument("--voice", help="TTS engine: piper or espeak (overrides tts.engine)")
    r.add_argument("--fps", type=float, help="frames per second (overrides video.fps)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_render)

    d = sub.add_parser("doctor", help="which engines, sinks and models work on this machine, and how to fix the rest")
    d.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except TalkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
