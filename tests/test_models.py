"""`talker-stream models`: the list, `models pull NAME` (resume, checksum, config) and the fit.

Nothing here reaches the internet: every connection the tests open must go to 127.0.0.1
(a guard on ``socket.connect`` fails the test otherwise), ``$HF_ENDPOINT`` points the
downloader at FakeHub, and ``$XDG_CACHE_HOME`` at a temporary folder. The file served is a
real GGUF written by the test (a tiny random llama that llama.cpp loads).
"""
from __future__ import annotations

import hashlib
import io
import socket
import struct
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from talker_stream.brain import models
from talker_stream.errors import ConfigError, TalkerError


# -- a tiny llama GGUF, written here ---------------------------------------------------------------
def _s(x: str) -> bytes:
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def write_tiny_llama(path: Path, seed: int = 0, n_embd: int = 64, n_layer: int = 2, n_ff: int = 128,
                     n_head: int = 4, ctx: int = 256) -> Path:
    """A randomly initialised 2-layer llama in GGUF v3 (f32, byte-fallback vocabulary, a chat
    template): half a megabyte that llama.cpp loads and runs."""
    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + ["\u2581the", "\u2581a", "\u2581is"]
    types = [2, 3, 3] + [6] * 256 + [1] * 3
    kv: list[bytes] = []

    def add(key: str, typ: int, payload: bytes) -> None:
        kv.append(_s(key) + struct.pack("<I", typ) + payload)

    def u32(key: str, v: int) -> None:
        add(key, 4, struct.pack("<I", v))

    add("general.architecture", 8, _s("llama"))
    add("general.name", 8, _s("tiny random llama (test)"))
    for key, v in (("context_length", ctx), ("embedding_length", n_embd), ("block_count", n_layer),
                   ("feed_forward_length", n_ff), ("attention.head_count", n_head),
                   ("attention.head_count_kv", n_head), ("rope.dimension_count", n_embd // n_head)):
        u32(f"llama.{key}", v)
    add("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", 1e-5))
    add("tokenizer.ggml.model", 8, _s("llama"))
    n = len(tokens)
    add("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, n) + b"".join(_s(t) for t in tokens))
    add("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, n) + struct.pack(f"<{n}f", *([0.0] * n)))
    add("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, n) + struct.pack(f"<{n}i", *types))
    u32("tokenizer.ggml.bos_token_id", 1)
    u32("tokenizer.ggml.eos_token_id", 2)
    u32("tokenizer.ggml.unknown_token_id", 0)
    add("tokenizer.chat_template", 8,
        _s("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"))
    shapes = {"token_embd.weight": (n_embd, n), "output_norm.weight": (n_embd,), "output.weight": (n_embd, n)}
    for i in range(n_layer):
        p = f"blk.{i}."
        shapes.update({p + "attn_norm.weight": (n_embd,), p + "attn_q.weight": (n_embd, n_embd),
                       p + "attn_k.weight": (n_embd, n_embd), p + "attn_v.weight": (n_embd, n_embd),
                       p + "attn_output.weight": (n_embd, n_embd), p + "ffn_norm.weight": (n_embd,),
                       p + "ffn_gate.weight": (n_embd, n_ff), p + "ffn_down.weight": (n_ff, n_embd),
                       p + "ffn_up.weight": (n_embd, n_ff)})
    infos, blobs, off = [], [], 0
    for name, shape in shapes.items():
        arr = np.ones(shape[::-1], np.float32) if name.endswith("norm.weight") else \
            rng.normal(0, 0.05, shape[::-1]).astype(np.float32)
        data = arr.tobytes()
        infos.append(_s(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
                     + struct.pack("<IQ", 0, off))
        pad = (-len(data)) % 32
        blobs.append(data + b"\0" * pad)
        off += len(data) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(kv)) + b"".join(kv) + b"".join(infos)
    path.write_bytes(head + b"\0" * ((-len(head)) % 32) + b"".join(blobs))
    return path


# -- a stand-in for Hugging Face --------------------------------------------------------------------
class FakeHub:
    """NOT Hugging Face: a local HTTP server (127.0.0.1) that stands in for it, with its URL
    layout and headers. ``HEAD/GET /{repo}/resolve/{revision}/{file}`` answers 302 to a
    "CDN" path with ``X-Linked-Etag`` (the file's SHA-256, or ``published_sha``) and
    ``X-Linked-Size``; ``GET /cdn/{file}`` serves the bytes with HTTP Range. The first
    ``drop`` GETs of the bytes stop after ``drop_after`` bytes (the connection closes early
    while the promised Content-Length is longer)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files  # "repo/file" -> content
        self.published_sha: str | None = None
        self.drop, self.drop_after = 0, 0
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.served = 0  # bytes of file content sent
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self._route(head=True)

            def do_GET(self):
                self._route(head=False)

            def _route(self, head: bool):
                hub.log.append((self.command, self.path, self.headers.get("Range")))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 5 and parts[2] == "resolve" and parts[3] == "main":
                    key = f"{parts[0]}/{parts[1]}/{parts[4]}"
                    if key not in hub.files:
                        return self._send(404, b"Entry not found")
                    data = hub.files[key]
                    self.send_response(302)
                    self.send_header("Location", f"/cdn/{key}?X-Amz-Signature=test")
                    self.send_header("X-Linked-Etag", f'"{hub.published_sha or hashlib.sha256(data).hexdigest()}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                    self.send_header("X-Repo-Commit", "0" * 40)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parts[0] == "cdn" and "/".join(parts[1:]) in hub.files and not head:
                    return self._bytes(hub.files["/".join(parts[1:])])
                self._send(404, b"not found")

            def _send(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _bytes(self, data: bytes):
                start, code = 0, 200
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        return self._send(416, b"")
                    code = 206
                body = data[start:]
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                if code == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if hub.drop > 0:
                    hub.drop -= 1
                    body = body[: hub.drop_after]
                    hub.served += len(body)  # counted before sending: the client may finish first
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                hub.served += len(body)
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [x for x in self.log if x[0] == "GET" and x[1].startswith("/cdn/")]


MODEL = models.find("qwen2.5-0.5b")  # the catalogue's entry; FakeHub serves the tiny llama under its name


@pytest.fixture()
def tiny(tmp_path_factory) -> bytes:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


@pytest.fixture()
def hub(tiny, monkeypatch, tmp_path):
    with FakeHub({f"{MODEL.repo}/{MODEL.file}": tiny}) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setattr(models.time, "sleep", lambda s: None)  # no waiting between retries
        yield h


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to somewhere other than this machine fails the test."""
    real = socket.socket.connect
    seen: list = []

    def connect(self, address):
        seen.append(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"the test tried to reach {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield seen


CONFIG = """# my stream
[llm]
engine = "llamacpp"   # local
temperature = 0.3

[llm.llamacpp]
model = ""                 # a .gguf file; empty = SmolLM2-135M-Instruct
context = 2048
threads = 2                # 0 = llama.cpp's default

[moderation]
blocklist = ["darn"]
"""


def test_the_url_is_hugging_faces_layout(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert models.url_for(MODEL) == f"https://huggingface.co/{MODEL.repo}/resolve/main/{MODEL.file}"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    assert models.url_for(MODEL) == f"http://127.0.0.1:9/{MODEL.repo}/resolve/main/{MODEL.file}"


def test_an_interrupted_download_resumes_where_it_stopped(hub, tiny, loopback_only):
    hub.drop, hub.drop_after = 1, len(tiny) // 3
    path = models.pull(MODEL, progress=False)
    assert path == Path(models.cache_dir()) / MODEL.file and path.read_bytes() == tiny
    gets = hub.gets()
    assert len(gets) == 2, gets
    assert gets[0][2] is None and gets[1][2] == f"bytes={len(tiny) // 3}-", "the second request asked for the rest"
    assert hub.served == len(tiny), "no byte was sent twice"
    assert not list(path.parent.glob("*.part*")), "no partial file is left"
    assert loopback_only and all(a[0] == "127.0.0.1" for a in loopback_only)


def test_a_second_run_resumes_the_partial_file(hub, tiny, monkeypatch):
    monkeypatch.setattr(models, "RETRIES", 0)
    hub.drop, hub.drop_after = 1, 200_000
    with pytest.raises(TalkerError, match="run the same command again to resume from 200000 bytes"):
        models.pull(MODEL, progress=False)
    part = models.cache_dir() / (MODEL.file + ".part")
    assert part.stat().st_size == 200_000
    hub.served = 0
    path = models.pull(MODEL, progress=False)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(tiny).hexdigest()
    assert hub.gets()[-1][2] == "bytes=200000-"
    assert hub.served == len(tiny) - 200_000
    assert models.pull(MODEL, progress=False) == path and len(hub.gets()) == 2, "a pulled model is not fetched again"


def test_a_wrong_checksum_is_refused_and_the_file_deleted(hub, tiny):
    hub.published_sha = "ab" * 32
    with pytest.raises(TalkerError, match=f"checksum mismatch for {MODEL.file}: expected sha256 {'ab' * 32}"):
        models.pull(MODEL, progress=False)
    assert hub.served == len(tiny), "it was downloaded, then refused"
    assert not list(models.cache_dir().iterdir()), "nothing is left behind"
    hub.published_sha = None
    with pytest.raises(TalkerError, match="checksum mismatch"):  # a pinned checksum wins over the server's
        models.pull(MODEL, progress=False, sha256="cd" * 32)
    assert not list(models.cache_dir().iterdir())


def test_a_partial_file_of_another_version_is_not_resumed(hub, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "RETRIES", 0)
    hub.drop, hub.drop_after = 1, 100_000
    with pytest.raises(TalkerError):
        models.pull(MODEL, progress=False)
    hub.files[f"{MODEL.repo}/{MODEL.file}"] = new = write_tiny_llama(tmp_path / "other.gguf", seed=7).read_bytes()
    path = models.pull(MODEL, progress=False)
    assert path.read_bytes() == new
    assert hub.gets()[-1][2] is None, "the old partial file was dropped, not continued"


def test_not_a_gguf_is_refused(hub):
    hub.files[f"{MODEL.repo}/{MODEL.file}"] = b"<html>rate limited</html>" * 100
    with pytest.raises(TalkerError, match="not a GGUF file"):
        models.pull(MODEL, progress=False)
    assert not (models.cache_dir() / MODEL.file).exists()


def test_a_missing_file_or_dead_server_is_one_clear_error(hub, monkeypatch):
    broken = models.Model("x", MODEL.repo, "nope.gguf", 1, "", "")
    with pytest.raises(TalkerError, match="nope.gguf answered 404"):
        models.pull(broken, progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(TalkerError, match="cannot reach http://127.0.0.1"):
        models.pull(MODEL, progress=False)


def test_the_progress_bar_shows_the_download(hub, tiny):
    from rich.console import Console

    out = io.StringIO()
    models.pull(MODEL, console=Console(file=out, force_terminal=True, width=120))
    text = out.getvalue()
    assert MODEL.name in text and f"{len(tiny) / 1e6:.1f}" in text, text[-400:]


def test_pull_from_the_command_line_points_the_config_at_it_and_the_avatar_runs_it(hub, tiny, tmp_path, capsys):
    from talker_stream.cli import main
    from talker_stream.config import load_settings
    from talker_stream.brain.conversation import Question, open_conversation

    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG)
    assert main(["-c", str(cfg), "models", "pull", MODEL.name, "-q"]) == 0
    path = models.cache_dir() / MODEL.file
    assert path.read_bytes() == tiny
    assert "sha256 checked" in capsys.readouterr().out
    new = cfg.read_text().splitlines()
    old = CONFIG.splitlines()
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    assert len(new) == len(old) and changed == [
        ('model = ""                 # a .gguf file; empty = SmolLM2-135M-Instruct',
         f'model = "{path}"                 # a .gguf file; empty = SmolLM2-135M-Instruct')], changed
    settings = load_settings(cfg)
    assert settings.llm.llamacpp.model == str(path) and settings.moderation.blocklist == ["darn"]
    conversation = open_conversation(settings)  # the product's way: the model in its worker process
    try:
        assert conversation.llm.model == MODEL.file
        text = "".join(conversation.reply(Question("hello?")))
        assert text, "the pulled model writes"
    finally:
        conversation.llm.close()


def test_pull_without_a_config_file_prints_the_line_to_add(hub, tmp_path, monkeypatch, capsys):
    from talker_stream.cli import main

    monkeypatch.chdir(tmp_path)  # no config.toml here
    assert main(["models", "pull", MODEL.name, "-q"]) == 0
    out = capsys.readouterr().out
    assert "put this under [llm.llamacpp]" in out and f'model = "{models.cache_dir() / MODEL.file}"' in out
    assert not (tmp_path / "config.toml").exists()


@pytest.mark.parametrize("before, after", [
    ("[llm]\ntemperature = 0.3\n", "[llm]\ntemperature = 0.3\n\n[llm.llamacpp]\nmodel = \"/m/x.gguf\"\n"),
    ("[llm.llamacpp]\ncontext = 4096 # big\n", "[llm.llamacpp]\nmodel = \"/m/x.gguf\"\ncontext = 4096 # big\n"),
    ("[llm.llamacpp]\r\nmodel = 'old.gguf'  # mine\r\n[tts]\r\nengine = \"espeak\"\r\n",
     "[llm.llamacpp]\r\nmodel = \"/m/x.gguf\"  # mine\r\n[tts]\r\nengine = \"espeak\"\r\n"),
    ("", "\n[llm.llamacpp]\nmodel = \"/m/x.gguf\"\n"),
])
def test_the_config_value_is_set_and_nothing_else_changes(tmp_path, before, after):
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(before.encode())
    models.set_model_in_config(cfg, Path("/m/x.gguf"))
    assert cfg.read_bytes().decode() == after
    assert tomllib.loads(after)["llm"]["llamacpp"]["model"] == "/m/x.gguf"


def test_a_config_it_cannot_edit_safely_is_left_alone(tmp_path):
    cfg = tmp_path / "config.toml"
    text = 'llm = { llamacpp = { model = "a.gguf" } }\n[llm.llamacpp]\n'  # invalid TOML: redefines the table
    cfg.write_text(text)
    with pytest.raises(Exception):
        models.set_model_in_config(cfg, Path("/m/x.gguf"))
    inline = 'llm = { llamacpp = { model = "a.gguf" } }\n'
    cfg.write_text(inline)
    with pytest.raises(ConfigError, match='add it by hand.*model = "/m/x.gguf"'):
        models.set_model_in_config(cfg, Path("/m/x.gguf"))
    assert cfg.read_text() == inline


def test_the_listing_names_size_licence_and_speed(monkeypatch, tmp_path, capsys):
    from talker_stream.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["models", "--threads", "4"]) == 0
    out = capsys.readouterr().out
    for m in models.CATALOGUE:
        assert m.name in out and m.licence.split(" (")[0] in out
    assert "est." in out and "on 4 threads" in out
    assert "Qwen Research License" in out, "the 3B Qwen's licence is not Apache: it says so"
    rows = {r[0]: r for r in models.table_rows(4)}
    assert rows["smollm2-135m"][4] == f"{models.EMBEDDED_TOK_S * 2:.0f} est."
    assert rows["smollm2-135m"][2] == "embedded"
    speeds = [float(rows[m.name][4].split()[0]) for m in models.CATALOGUE]
    sizes = [m.size for m in models.CATALOGUE]
    assert all((a > b) == (sa < sb) for a, b, sa, sb in zip(speeds, speeds[1:], sizes, sizes[1:]) if sa != sb), \
        "a bigger file is slower"


def test_which_model_fits_which_machine():
    gb = 1_000_000_000
    m, why = models.best_fit(2, 24 * gb)
    assert m.name == "qwen2.5-0.5b" and "est." in why and "pull qwen2.5-0.5b" in why
    m, _ = models.best_fit(16, 64 * gb)
    assert m.size > 1.5 * gb, "many cores and much memory: a 3B model"
    m, why = models.best_fit(16, 3 * gb)
    assert m.name == "qwen2.5-0.5b", "memory decides first"
    m, why = models.best_fit(2, 1 * gb)
    assert m is None and "keep the embedded SmolLM2-135M" in why
    m, why = models.best_fit(1, 24 * gb)
    assert m is None and "slower than speech" in why


def test_doctor_says_which_model_fits(monkeypatch):
    from talker_stream.config import load_settings
    from talker_stream.doctor import _model_fit

    monkeypatch.setattr(models, "machine", lambda: (4, 16_000_000_000))
    text = _model_fit(load_settings(None))
    assert "qwen2.5-1.5b fits" in text and "4 cores" in text
    assert "[llm.llamacpp] threads = 4 (now 2)" in text
