"""Engines checked before they are trusted: a tiny job for each native engine, in a child process.

A native engine built for another CPU (llama.cpp compiled with ``-march=native`` elsewhere,
AMX kernels that crash on some Xeons) dies with SIGSEGV or SIGILL on its first real use.
Found on stream, that ends the show; found here, it is one clear line before anything
starts, and the avatar starts without that engine, on its fallback, or not at all when it
is essential. Each probe writes a few tokens, transcribes a second of sound, speaks a word
or draws one frame, in ``python -m talker_stream.engines.preflight``, so only the child can die.

A probe that passed is remembered (in the user's cache folder) for the same engine, options,
CPU and installed native libraries, so a start costs nothing the second time; a failure is
checked again at every start, since the user may have fixed it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import registry
from .isolation import signal_name

log = logging.getLogger(__name__)

TIMEOUT_S = 180.0  # loading a large model from a slow disk
CACHE_VERSION = 1


@dataclass(frozen=True)
class Target:
    """One engine to probe: *kind* (llm, asr, tts, face) and its registry *name*."""

    kind: str
    name: str

    @property
    def label(self) -> str:
        return {"llm": f"the local LLM ({self.name})", "asr": f"speech recognition ({self.name})",
                "tts": f"the voice ({self.name})", "face": f"the face engine ({self.name})"}[self.kind]


@dataclass
class Result:
    target: Target
    problem: str | None  # None: it ran
    crashed: bool = False  # died by a signal or an unexpected exit, not a Python error
    seconds: float = 0.0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        return f"{self.target.label} is ready" if self.ok else f"{self.target.label}: {self.problem}"


# -- what each probe does (in the child) ---------------------------------------------------
def _probe_llm(settings, name: str) -> str:
    from ..brain.llm import GenerationParams

    options = getattr(settings.llm, name, None)
    engine = registry.load("llm", name)(options, base_dir=settings.base_dir)
    text = "".join(engine.stream([{"role": "user", "content": "Say hi."}], GenerationParams(0.0, 1.0, 4)))
    return f"wrote {text!r}"


def _probe_asr(settings, name: str) -> str:
    import numpy as np

    from ..brain.asr.whisper import WhisperASR

    rng = np.random.default_rng(0)
    heard = WhisperASR(settings.asr, base_dir=settings.base_dir).transcribe((rng.standard_normal(16000) * 0.01).astype(np.float32))
    return f"heard {heard!r}"


def _probe_tts(settings, name: str) -> str:
    engine = registry.load("tts", name)(settings.tts.options(name), base_dir=settings.base_dir)
    samples = sum(len(chunk.pcm) for chunk in engine.stream("Hello."))
    return f"spoke {samples} samples"


def _probe_face(settings, name: str) -> str:
    from ..face import FaceParams, render_frame
    from ..face.portrait import load_portrait
    from ..face import open_face

    engine = open_face(settings)
    avatar = engine.prepare(load_portrait(settings.portrait_path()))
    frame = render_frame(engine, avatar, FaceParams(), None, 0)
    return f"drew a {frame.shape[1]}x{frame.shape[0]} frame"


PROBES = {"llm": _probe_llm, "asr": _probe_asr, "tts": _probe_tts, "face": _probe_face}


def _child() -> None:
    """The child: read (settings, target) on stdin, run its probe, print one JSON line."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    settings, target = pickle.load(sys.stdin.buffer)
    try:
        detail = PROBES[target.kind](settings, target.name)
    except Exception as exc:  # noqa: BLE001 - an ordinary failure is reported, not a crash
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}" if not _talker(exc) else str(exc)}), flush=True)
        sys.exit(3)
    print(json.dumps({"ok": detail}), flush=True)


def _talker(exc: Exception) -> bool:
    from ..errors import TalkerError

    return isinstance(exc, TalkerError)


# -- the parent ------------------------------------------------------------------------------
def run(settings, targets: list[Target], use_cache: bool = True) -> list[Result]:
    """Probe each target (two at a time), in the order given."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda t: probe(settings, t, use_cache), targets))


def probe(settings, target: Target, use_cache: bool = True) -> Result:
    key = _cache_key(settings, target)
    if use_cache and key is not None and key in _read_cache():
        return Result(target, None, cached=True)
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "talker_stream.engines.preflight"], input=pickle.dumps((settings, target)),
                              capture_output=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return Result(target, f"did not finish a tiny job in {TIMEOUT_S:.0f} s", crashed=True,
                      seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    report = _last_json(proc.stdout)
    if proc.returncode == 0 and "ok" in report:
        log.info("%s: %s in %.1f s", target.label, report["ok"], seconds)
        if key is not None:
            _write_cache(key)
        return Result(target, None, seconds=seconds)
    if "error" in report:
        return Result(target, report["error"], seconds=seconds)
    why = signal_name(proc.returncode)
    tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
    if tail:
        log.info("%s crashed; its last words: %s", target.label, " | ".join(tail))
    return Result(target, f"crashed on this CPU ({why}){_fix(target)}", crashed=True, seconds=seconds)


def _fix(target: Target) -> str:
    try:
        hint = getattr(registry.load(target.kind, target.name), "crash_hint", "")
    except Exception:  # noqa: BLE001 - the hint is a courtesy
        hint = ""
    return f"; {hint}" if hint else ""


def _last_json(out: bytes) -> dict:
    for line in reversed(out.decode("utf-8", "replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


# -- remembering what passed ---------------------------------------------------------------
def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "talker-stream" / "preflight.json"


def _read_cache() -> set[str]:
    try:
        data = json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return set()
    return set(data.get("passed", [])) if data.get("version") == CACHE_VERSION else set()


def _write_cache(key: str) -> None:
    path = _cache_file()
    passed = sorted(_read_cache() | {key})[-200:]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "passed": passed}))
        tmp.replace(path)
    except OSError as exc:
        log.info("could not remember a passed probe: %s", exc)


def _cache_key(settings, target: Target) -> str | None:
    """What a passed probe depends on: the engine and its options, the CPU, and the native
    libraries the engine loads (a rebuild changes their size or time)."""
    try:
        cls = registry.load(target.kind, target.name) if target.kind != "asr" else None
    except Exception:  # noqa: BLE001 - not installed: probe (and fail) every time
        return None
    modules = getattr(cls, "native_modules", ()) if cls is not None else ("ctranslate2", "onnxruntime")
    options = {"llm": lambda: getattr(settings.llm, target.name, None), "asr": lambda: settings.asr,
               "tts": lambda: settings.tts.options(target.name), "face": lambda: settings.face.options(target.name)}
    parts: list[Any] = [CACHE_VERSION, target, repr(options[target.kind]()), sys.executable, _cpu(),
                        [_library_stamp(m) for m in modules]]
    if target.kind == "face":
        parts.append(_file_stamp(settings.portrait_path()))
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = f.read(20000)
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _library_stamp(module: str) -> list:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return [module, None]
    root = Path(list(spec.submodule_search_locations)[0])
    files = [p for folder in (root, root / "lib") if folder.is_dir() for p in folder.iterdir()
             if ".so" in p.name or p.suffix in (".dll", ".dylib")]
    return [module, sorted(_file_stamp(p) for p in files)]


def _file_stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns)


# -- what the commands use -------------------------------------------------------------------
def targets_for(settings, llm: bool = False, asr: bool = False, voice: bool = True) -> list[Target]:
    """The native engines a command will use: the voice (and its fallback) and the face
    when it shows the avatar, the LLM when it answers (llama.cpp: engines that declare
    ``native``), speech recognition when it listens."""
    out = []
    if llm and getattr(_cls("llm", settings.llm.engine), "native", False):
        out.append(Target("llm", settings.llm.engine))
    if asr:
        out.append(Target("asr", "faster-whisper"))
    if voice:
        out += [Target("tts", n) for n in dict.fromkeys([settings.tts.engine, settings.tts.fallback]) if n]
        out.append(Target("face", settings.face.engine))
    return out


def before_start(settings, llm: str = "", asr: bool = False, say=None) -> bool:
    """Probe what a command is about to use and act on what failed, one line each (*say*,
    default stderr): a voice falls back to [tts] fallback, a neural face to the mesh; an LLM
    or ear that is *essential* stops the command with a TalkerError; an ``"optional"`` LLM
    is left out (the return value is then False: start without answering).

    *llm*: "essential", "optional" or "" (not used)."""
    from ..errors import EngineUnavailable
    from ..speech.tts import validate as validate_voice

    validate_voice(settings)  # no consent for a cloned voice: stop, never fall back to another voice
    say = say or (lambda line: print(line, file=sys.stderr))
    targets = targets_for(settings, llm=bool(llm), asr=asr)
    results = {r.target: r for r in run(settings, targets)}
    llm_ok = True
    for target, result in results.items():
        if result.ok:
            continue
        if target.kind == "tts" and target.name == settings.tts.engine:
            fallback = settings.tts.fallback
            if fallback and fallback != target.name and results.get(Target("tts", fallback), result).ok:
                say(f"{result.line()}; speaking with {fallback} instead")
                settings.tts.engine = fallback
                continue
            raise EngineUnavailable(result.line())
        if target.kind == "tts":
            continue  # the fallback alone failed: the selected voice works
        if target.kind == "face" and target.name != "mesh":
            say(f"{result.line()}; drawing the mouth with the built-in mesh face instead")
            settings.face.engine = "mesh"
            continue
        if target.kind == "llm" and llm == "optional":
            say(f"{result.line()}; the avatar starts without answering chat")
            llm_ok = False
            continue
        raise EngineUnavailable(result.line())
    return llm_ok


def _cls(kind: str, name: str):
    try:
        return registry.load(kind, name)
    except Exception:  # noqa: BLE001 - the command's own start reports it
        return None


if __name__ == "__main__":
    _child()
