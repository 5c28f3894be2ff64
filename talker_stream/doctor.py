"""doctor: what can run on this machine, and for each thing that cannot, why and how to fix it."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .engines import registry
from .config import Settings


def _writer_check() -> str | None:
    try:
        import av
    except ImportError as exc:
        return f"PyAV is not installed ({exc}); pip install av"
    missing = [c for c in ("libx264", "aac") if c not in av.codecs_available]
    return f"PyAV lacks encoders {missing}; reinstall the av wheel from PyPI" if missing else None


def rows(settings: Settings) -> list[tuple[str, str, str, str | None]]:
    """(kind, name, role, problem or None) for everything the project can use."""
    out = []
    roles = {("tts", settings.tts.engine): "selected", ("tts", settings.tts.fallback): "fallback",
             ("face", settings.face.engine): "selected", ("llm", settings.llm.engine): "selected"}
    roles.update({("sink", name): "selected" for name in settings.live.sinks})
    roles.update({("adapter", name): "selected" for name in settings.chat.adapters})
    chosen = {"tts": {settings.tts.engine, settings.tts.fallback} - {""}, "face": {settings.face.engine},
              "llm": {settings.llm.engine}, "sink": set(settings.live.sinks), "adapter": set(settings.chat.adapters)}
    for kind in ("tts", "face", "llm", "sink", "adapter"):
        for name, ep in sorted(registry.available(kind).items()):
            role = roles.get((kind, name), "")
            try:
                cls = ep.load()
                problem = cls.check() if hasattr(cls, "check") else None
            except Exception as exc:  # noqa: BLE001 - a broken plugin is exactly what doctor reports
                problem = f"cannot import: {exc}"
            out.append((kind, name, role, problem))
        for name in sorted(chosen.get(kind, set()) - set(registry.available(kind))):
            out.append((kind, name, roles[(kind, name)], "not installed: no plugin registers this name"))
    from .brain.asr.whisper import WhisperASR

    out.append(("asr", "faster-whisper", "", WhisperASR.check(settings.asr, settings.base_dir)))
    out.append(("writer", "mp4 (h264+aac)", "", _writer_check()))
    out.append(("model fit", _model_fit(settings), "", None))
    out.append(("voice rule", settings.tts.engine, "selected", _voice_rule(settings)))
    out += _probes(settings, out)
    portrait = settings.portrait_path()
    out.append(("portrait", str(portrait), "", None if portrait.is_file() else "file not found; set avatar.portrait"))
    return out


def _model_fit(settings: Settings) -> str:
    """Which recommended local LLM this machine's memory and cores carry (talker-stream models)."""
    from .brain.models import best_fit, machine

    cores, avail = machine()
    model, why = best_fit(cores, avail, cores)
    set_to = settings.llm.llamacpp.threads
    if model is not None and set_to and set_to < cores:
        why += f"; with [llm.llamacpp] threads = {cores} (now {set_to})"
    return why


def _voice_rule(settings: Settings) -> str | None:
    """The selected voice's own rule (XTTS: the speaker's consent), as doctor's row."""
    from .errors import ConfigError
    from .speech.tts import validate

    try:
        validate(settings)
    except ConfigError as exc:
        return str(exc)
    return None


def _probes(settings: Settings, found: list) -> list[tuple[str, str, str, str | None]]:
    """A tiny job for each selected native engine that is installed, in a child process:
    an engine that loads but crashes on this CPU (SIGSEGV, SIGILL) shows up here by name."""
    from .engines.preflight import Target, run, targets_for

    usable = {(kind, name) for kind, name, role, problem in found if problem is None}
    targets = [t for t in targets_for(settings, llm=True, asr=True) if (t.kind, t.name) in usable]
    roles = {Target("tts", settings.tts.fallback): "fallback", Target("asr", "faster-whisper"): ""}
    return [(f"{r.target.kind} run", r.target.name, roles.get(r.target, "selected"), r.problem)
            for r in run(settings, targets)]


def report(settings: Settings, console: Console | None = None) -> bool:
    """Print the table; True when everything selected can run."""
    console = console or Console()
    table = Table(title="talker-stream doctor")
    for col in ("kind", "name", "", "status"):
        table.add_column(col)
    ok = True
    for kind, name, role, problem in rows(settings):
        if problem and (role or kind in ("writer", "portrait")):
            ok = False
        table.add_row(kind, name, role, "[green]ok[/]" if not problem else f"[red]{problem}[/]")
    console.print(table)
    console.print("[green]ready[/]" if ok else "[red]something selected cannot run: see above[/]")
    return ok
