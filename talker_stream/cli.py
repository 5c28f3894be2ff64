"""talker-stream: render | live | chat | serve | engines | doctor | models."""
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
    if getattr(args, "sinks", None):
        overrides["live.sinks"] = [x.strip() for x in args.sinks.split(",") if x.strip()]
    if getattr(args, "fps", None):
        overrides["video.fps"] = float(args.fps)
    return load_settings(path, overrides)


def cmd_render(args) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .offline import read_text_pieces, render

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
        f"wrote {result.path} ({result.frames} frames, {result.seconds:.1f} s) in {result.wall_seconds:.1f} s "
        f"(+{result.setup_seconds:.1f} s set-up): {1 / result.realtime_factor:.1f}x faster than real time"
    )
    return 0


def _start_live(settings):
    """The avatar with the configured sinks, and the control page when [server] is enabled.

    Shared by ``live`` and ``chat``: both show the same feed in the preview and every sink.
    """
    from .live import LiveAvatar
    from .server import ControlServer
    from .outputs import open_sinks

    sinks = open_sinks(settings)
    avatar = LiveAvatar(settings, sinks)
    server = None
    if settings.server.enabled:
        preview = next((s for s in sinks if s.name == "preview"), None)
        token = os.environ.get(settings.server.token_env) or None
        server = ControlServer(avatar, preview, settings.server.host, settings.server.port, token).start()
        hint = "" if token else f"#token={server.token}"
        print(f"control page: {server.url}{hint}", file=sys.stderr)
    try:
        avatar.start()
    except BaseException:
        if server:
            server.stop()
        raise
    return avatar, server


def _stop_live(avatar, server) -> None:
    avatar.stop()
    if server:
        server.stop()


def cmd_live(args) -> int:
    import threading
    import time

    from .engines.preflight import before_start

    settings = _settings(args)
    # each native engine runs a tiny job in a child process first: a crash is one line, not a dead stream
    if not before_start(settings, llm="optional" if settings.chat.adapters else ""):
        settings.chat.adapters = []
    brain = _audience_parts(settings)  # a missing model or a bad adapter setting fails before the avatar starts
    avatar, server = _start_live(settings)
    audience = None
    if brain is not None:
        from .audience.runner import Audience

        audience = Audience.from_settings(settings, avatar, *brain).start()
        print(f"answering chat from: {', '.join(settings.chat.adapters)}", file=sys.stderr)
    for line in args.say or []:
        avatar.say(line)

    def read_stdin() -> None:  # each line typed (or piped) is said
        for line in sys.stdin:
            if line.strip():
                try:
                    avatar.say(line.strip())
                except Exception as exc:  # noqa: BLE001 - a full queue must not end the session
                    log.warning("not queued: %s", exc)

    if not args.no_stdin:
        threading.Thread(target=read_stdin, daemon=True).start()
    tty = sys.stderr.isatty()
    deadline = time.monotonic() + args.duration if args.duration else None
    ticks = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(settings.live.status_interval)
            ticks += 1
            if tty:
                print("\r" + avatar.status_line()[: os.get_terminal_size(2).columns - 1], end="", file=sys.stderr)
            elif ticks % 10 == 0:
                print(f"status: {avatar.status_line()}", file=sys.stderr, flush=True)  # a status, not a warning
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            print(file=sys.stderr)
        if audience is not None:
            audience.stop()
        _stop_live(avatar, server)
    print(avatar.status_line())
    return 0


def _audience_parts(settings):
    """(conversation, adapters) when [chat] adapters names any, else None; the model is warm."""
    if not settings.chat.adapters:
        return None
    from .audience.runner import open_adapters
    from .brain.conversation import open_conversation

    conversation = open_conversation(settings)
    adapters = open_adapters(settings)
    conversation.warm_up()
    return conversation, adapters


def cmd_chat(args) -> int:
    from .brain.turns import MAX_ANSWER_S
    from .inputs.chat import chat_from_mic, chat_from_terminal, mic_listener, open_microphone, open_recording
    from .brain.conversation import open_conversation

    from .engines.preflight import before_start

    settings = _settings(args)
    before_start(settings, llm="essential", asr=bool(args.mic or args.listen))  # a crashing engine: one line, no start
    conversation = open_conversation(settings)  # a missing model, ear, microphone or file fails before the avatar starts
    listener, source = None, None
    if args.mic or args.listen:
        listener = mic_listener(settings)
        source = open_recording(args.listen) if args.listen else open_microphone()
    conversation.warm_up()
    avatar, server = _start_live(settings)
    try:
        if listener is not None:
            print(f"listening to {args.listen} in real time" if args.listen else
                  "listening: speak a question (Ctrl-C to end)", file=sys.stderr)
            chat_from_mic(avatar, conversation, listener, source, sys.stdout, linger=MAX_ANSWER_S if args.listen else 0.0,
                          who="recording" if args.listen else "microphone")
        else:
            chat_from_terminal(avatar, conversation, sys.stdin, sys.stdout, prompt=sys.stdin.isatty())
    except KeyboardInterrupt:
        pass
    finally:
        _stop_live(avatar, server)
    log.info("%s", avatar.status_line())
    return 0


def cmd_serve(args) -> int:
    from .engines.preflight import before_start
    from .server.webapp import serve

    settings = _settings(args)
    if args.host:
        settings.serve.host = args.host
    if args.port is not None:
        settings.serve.port = args.port
    if args.ray:
        from .server.cluster import check_engines_are_services

        check_engines_are_services(settings)  # the sessions' nodes reach the engines as services
    else:
        before_start(settings, llm="essential", asr=True)  # a crashing engine: one line, no start
    serve(settings, args.ray)
    return 0


def cmd_engines(args) -> int:
    from .server.engines import serve_engines

    serve_engines(_settings(args), args.host, args.port)
    return 0


def cmd_models(args) -> int:
    from .brain.models import run_cli

    path = args.config or ("config.toml" if Path("config.toml").is_file() else None)
    return run_cli(args, Path(path) if path else None)


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

    lv = sub.add_parser("live", help="run the avatar live: idle when silent, speaking what it is sent")
    lv.add_argument("-p", "--portrait", help="portrait photo (overrides avatar.portrait)")
    lv.add_argument("--sinks", help="comma-separated sinks (overrides live.sinks), e.g. preview,virtualcam,obs")
    lv.add_argument("--say", action="append", help="something to say right away (repeatable)")
    lv.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    lv.add_argument("--no-stdin", action="store_true", help="do not read lines to say from standard input")
    lv.add_argument("--fps", type=float, help="frames per second (overrides video.fps)")
    lv.set_defaults(func=cmd_live)

    ch = sub.add_parser("chat", help="talk with the avatar: it answers each question (typed or spoken) live")
    ch.add_argument("-p", "--portrait", help="portrait photo (overrides avatar.portrait)")
    ch.add_argument("--sinks", help="comma-separated sinks (overrides live.sinks)")
    ch.add_argument("--voice", help="TTS engine: piper or espeak (overrides tts.engine)")
    heard = ch.add_mutually_exclusive_group()
    heard.add_argument("--mic", action="store_true", help="listen on the microphone instead of reading typed lines")
    heard.add_argument("--listen", metavar="AUDIO", help="spoken questions from an audio file, heard in real time; "
                       "ends once the last answer has been spoken")
    ch.set_defaults(func=cmd_chat)

    sv = sub.add_parser("serve", help="a web page where each visitor talks to an avatar of their own (WebRTC)")
    sv.add_argument("-p", "--portrait", help="portrait photo (overrides avatar.portrait)")
    sv.add_argument("--host", help="address to bind (overrides serve.host; not loopback: needs $TALKER_INVITE)")
    sv.add_argument("--port", type=int, help="port (overrides serve.port; 0 = any free one)")
    sv.add_argument("--ray", metavar="ADDRESS", help="run each session as an actor on this Ray cluster "
                    "(pip install 'talker-stream[cluster]'; engines must be services)")
    sv.set_defaults(func=cmd_serve)

    en = sub.add_parser("engines", help="serve this machine's LLM, voice and Whisper behind OpenAI-compatible "
                        "endpoints, for avatars elsewhere")
    en.add_argument("--host", default="127.0.0.1", help="address to bind (not loopback: needs $TALKER_ENGINES_KEY)")
    en.add_argument("--port", type=int, default=8800, help="port (0 = any free one)")
    en.set_defaults(func=cmd_engines)

    d = sub.add_parser("doctor", help="which engines, sinks and models work on this machine, and how to fix the rest")
    d.set_defaults(func=cmd_doctor)

    md = sub.add_parser("models", help="recommended local LLMs (size, licence, speed here); `models pull NAME` "
                        "downloads one and points [llm.llamacpp] model at it")
    md.add_argument("--threads", type=int, help="speeds for this many threads (default: this machine's cores)")
    md.add_argument("--measure", action="store_true", help="time the embedded and downloaded models on this machine")
    md.set_defaults(func=cmd_models, action="list", quiet=False)
    msub = md.add_subparsers(dest="action")
    pl = msub.add_parser("pull", help="download NAME from Hugging Face (resumes; sha256 checked) into the cache "
                         "and set [llm.llamacpp] model in the config file")
    pl.add_argument("name", help="a name from `talker-stream models`")
    pl.add_argument("--no-config", action="store_true", help="leave the config file alone; print the line to add")
    pl.add_argument("--sha256", help="the checksum to expect (default: the one Hugging Face publishes)")
    pl.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pl.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.verbose:  # -v: each stage's timing (INFO), and the native libraries' own logs too
        os.environ.setdefault("TALKER_NATIVE_LOGS", "1")
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
