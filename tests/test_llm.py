"""The language models, for real: SmolLM2-135M-Instruct through llama-cpp-python, and the
OpenAI-compatible HTTP client against llama-cpp-python's own server on the same GGUF file.

Only one thing here is fake, and it says so: a tiny local HTTP server that stands in for a
*hosted* API (which these tests cannot reach), to see the API key go out as a Bearer header
and stay out of error messages.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import make_settings
from services import end, free_port
from talker_stream.errors import EngineUnavailable
from talker_stream.brain.llm import GenerationParams, open_llm
from talker_stream.brain.llm.llamacpp import LlamaCppLLM, bundled_model
from talker_stream.brain.llm.openai_compat import OpenAICompatLLM

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]
GREEDY = GenerationParams(temperature=0.0, top_p=1.0, max_tokens=40)
SECRET = "sk-test-4f9c2e7a1b"  # never a real key: only ever sent to the local fake


@pytest.fixture(scope="module")
def smollm() -> LlamaCppLLM:
    return open_llm(make_settings())  # [llm] engine = llamacpp, the bundled model, 2 threads


def test_bundled_model_is_found():
    path = bundled_model()
    assert path is not None and path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_llamacpp_streams_several_deltas(smollm):
    pieces = list(smollm.stream(QUESTION, GREEDY))
    text = "".join(pieces)
    assert len(pieces) >= 3, pieces
    assert all(pieces), "no empty deltas"
    assert "paris" in text.lower(), text


def test_llamacpp_respects_max_tokens(smollm):
    story = [{"role": "user", "content": "Tell me a very long story about a dragon and a knight."}]
    pieces = list(smollm.stream(story, GenerationParams(temperature=0.0, max_tokens=6)))
    assert 1 <= len(pieces) <= 6, pieces
    assert smollm.count_tokens("".join(pieces)) <= 7  # re-tokenising may merge or split one token
    longer = list(smollm.stream(story, GenerationParams(temperature=0.0, max_tokens=30)))
    assert len(longer) > len(pieces), "a larger budget writes more"


def test_count_tokens(smollm):
    assert smollm.count_tokens("") == 0
    one = smollm.count_tokens("Hello world")
    assert 1 <= one <= 4
    assert smollm.count_tokens("Hello world. " * 50) > 40 * one


def test_missing_gguf_is_reported(tmp_path):
    settings = make_settings(**{"llm.llamacpp.model": str(tmp_path / "nope.gguf")})
    with pytest.raises(EngineUnavailable, match="nope.gguf"):
        open_llm(settings)


# -- llama-cpp-python's OpenAI-compatible server, started here --------------------------------

@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` on the bundled GGUF, on 127.0.0.1, ended by its PID."""
    folder = tmp_path_factory.mktemp("llama-server")
    port = free_port()
    log = open(folder / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (folder / "server.log").read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not answer within 90 s"
            time.sleep(0.2)
        yield url
    finally:
        end(proc, seconds=10)
        log.close()


@pytest.mark.services
def test_openai_client_streams_from_llama_server(llama_server):
    settings = make_settings(**{"llm.engine": "openai", "llm.openai.base_url": llama_server,
                                "llm.openai.api_key_env": ""})
    llm = open_llm(settings)
    assert isinstance(llm, OpenAICompatLLM)
    pieces = list(llm.stream(QUESTION, GREEDY))
    assert len(pieces) >= 3 and all(pieces), pieces
    assert "paris" in "".join(pieces).lower()
    short = list(llm.stream(QUESTION, GenerationParams(temperature=0.0, max_tokens=3)))
    assert 1 <= len(short) <= 3, short


@pytest.mark.services
def test_openai_stream_can_be_abandoned(llama_server):
    """An interrupted answer closes the stream; the server then serves the next question."""
    llm = OpenAICompatLLM(make_settings(**{"llm.openai.base_url": llama_server}).llm.openai)
    story = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    gen = llm.stream(story, GenerationParams(temperature=0.0, max_tokens=200))
    assert next(gen)
    gen.close()
    assert "paris" in "".join(llm.stream(QUESTION, GREEDY)).lower()


def test_openai_wrong_url_is_engine_unavailable():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    llm = OpenAICompatLLM(make_settings(**{"llm.openai.base_url": url, "llm.openai.timeout": 5.0}).llm.openai)
    with pytest.raises(EngineUnavailable) as err:
        next(llm.stream(QUESTION, GREEDY))
    assert url in str(err.value) and "base_url" in str(err.value)


# -- a FAKE hosted API (a remote service we cannot reach): records headers, echoes the key --------

class FakeHostedAPI:
    """Stands in for a hosted OpenAI-compatible API. It answers a streamed chat completion
    with two SSE deltas, or - when told to - a 401 whose body quotes the key it was sent, as
    real providers do ("Incorrect API key provided: sk-...")."""

    def __init__(self) -> None:
        self.headers: list[dict] = []
        self.bodies: list[dict] = []
        self.reject = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                fake.headers.append(dict(self.headers))
                fake.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                if fake.reject:
                    sent = self.headers.get("Authorization", "")
                    body = json.dumps({"error": {"message": f"Incorrect API key provided: {sent}"}}).encode()
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for word in ("Hello", " there!"):
                    chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hosted():
    fake = FakeHostedAPI()
    yield fake
    fake.close()


def test_api_key_is_sent_as_bearer_and_never_shown(hosted, monkeypatch, caplog):
    monkeypatch.setenv("TALKER_TEST_LLM_KEY", SECRET)
    settings = make_settings(**{"llm.engine": "openai", "llm.openai.base_url": hosted.url,
                                "llm.openai.api_key_env": "TALKER_TEST_LLM_KEY", "llm.openai.model": "m-1"})
    llm = open_llm(settings)
    assert "".join(llm.stream(QUESTION, GREEDY)) == "Hello there!"
    assert hosted.headers[-1]["Authorization"] == f"Bearer {SECRET}"
    assert hosted.bodies[-1]["model"] == "m-1" and hosted.bodies[-1]["stream"] is True

    hosted.reject = True
    with pytest.raises(EngineUnavailable) as err:
        list(llm.stream(QUESTION, GREEDY))
    message = str(err.value)
    assert "401" in message and hosted.url in message
    assert SECRET not in message, "the key leaked into the error message"
    assert SECRET not in caplog.text


def test_no_key_env_sends_no_authorization(hosted, monkeypatch):
    monkeypatch.delenv("TALKER_TEST_LLM_KEY", raising=False)
    llm = OpenAICompatLLM(make_settings(**{"llm.openai.base_url": hosted.url,
                                           "llm.openai.api_key_env": "TALKER_TEST_LLM_KEY"}).llm.openai)
    assert "".join(llm.stream(QUESTION, GREEDY)) == "Hello there!"
    assert "Authorization" not in hosted.headers[-1]
