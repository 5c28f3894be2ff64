"""`talker-stream engines`: this project's engines behind OpenAI-compatible endpoints.

One box with the models (a GPU box, or just a bigger CPU) serves many avatar machines, which
need nothing but config: ``[llm] engine = "openai"``, ``[asr] engine = "openai"`` and
``[tts] engine = "openai"`` with their ``base_url`` pointed here.

- ``POST /v1/chat/completions``: the configured LLM (llama.cpp on a GGUF), streamed as
  server-sent events when ``"stream": true``.
- ``POST /v1/audio/speech``: the configured voice (Piper), as 24 kHz 16-bit PCM streamed
  sentence by sentence (``response_format`` "pcm"), or a WAV.
- ``POST /v1/audio/transcriptions``: Whisper on an uploaded file (anything FFmpeg decodes).
- ``GET /v1/models``.

The engines run in their worker processes, as in the avatar; each serves one request at a
time and the others wait their turn. Loopback only by default; on another address every
request needs ``Authorization: Bearer $TALKER_ENGINES_KEY``.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import threading
import time

import numpy as np

log = logging.getLogger(__name__)

KEY_ENV = "TALKER_ENGINES_KEY"
SPEECH_RATE = 24000
MAX_UPLOAD = 50 * 1024 * 1024


class EngineServer:
    def __init__(self, settings, host: str) -> None:
        from ..brain.asr import open_asr
        from ..errors import ConfigError
        from ..brain.llm import open_llm
        from ..speech.tts import open_tts
        from .webapp import _loopback

        self.key = os.environ.get(KEY_ENV) or None
        if not _loopback(host) and not self.key:
            raise ConfigError(f"engines on {host!r} are reachable from other machines: set ${KEY_ENV} to an API key")
        settings.asr.engine = "whisper"  # this server *is* the remote: its own engines are local
        settings.llm.engine = settings.llm.engine if settings.llm.engine != "openai" else "llamacpp"
        settings.tts.engine = settings.tts.engine if settings.tts.engine != "openai" else "piper"
        self.llm = open_llm(settings)
        self.tts = open_tts(settings, live=True)  # in its worker process
        self.asr = open_asr(settings)
        self.model = getattr(self.llm, "model", "") or settings.llm.engine
        self.served = {"chat": 0, "speech": 0, "transcriptions": 0}

    def close(self) -> None:
        for engine in (self.llm, self.tts, self.asr):
            getattr(engine, "close", lambda: None)()

    def app(self):
        from aiohttp import web

        @web.middleware
        async def auth(request, handler):
            if self.key:
                given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(given, self.key):
                    return _error(401, "a valid API key is needed (Authorization: Bearer ...)")
            return await handler(request)

        app = web.Application(client_max_size=MAX_UPLOAD, middlewares=[auth])
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        return app

    async def models(self, request):
        from aiohttp import web

        ids = [self.model, "tts-1", "whisper-1"]
        return web.json_response({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

    async def chat(self, request):
        from aiohttp import web

        from ..brain.llm import GenerationParams

        try:
            body = await request.json()
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in body["messages"]]
        except (ValueError, KeyError, TypeError):
            return _error(400, 'send {"messages": [{"role": ..., "content": ...}], ...}')
        params = GenerationParams(float(body.get("temperature", 0.7)), float(body.get("top_p", 0.9)),
                                  int(body.get("max_tokens", 200)))
        self.served["chat"] += 1
        pieces = _pump(lambda: self.llm.stream(messages, params))
        if not body.get("stream"):
            text = "".join([p async for p in pieces])
            return web.json_response({"object": "chat.completion", "model": self.model, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        created = int(time.time())
        try:
            async for piece in pieces:
                chunk = {"object": "chat.completion.chunk", "created": created, "model": self.model,
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
        except Exception as exc:  # noqa: BLE001 - the client hears of it as an error event
            await resp.write(f"data: {json.dumps({'error': {'message': str(exc)}})}\n\n".encode())
        return resp

    async def speech(self, request):
        from aiohttp import web

        from ..speech.audio import resample

        try:
            body = await request.json()
            text = str(body["input"]).strip()
        except (ValueError, KeyError, TypeError):
            return _error(400, 'send {"input": "text to speak", "response_format": "pcm"}')
        fmt = body.get("response_format", "pcm")
        if not text or fmt not in ("pcm", "wav"):
            return _error(400, "the input is empty" if not text else "response_format: pcm or wav")
        self.served["speech"] += 1

        def pcm16():
            for chunk in self.tts.stream(text):
                pcm = resample(chunk, SPEECH_RATE).pcm
                yield (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()

        chunks = _pump(pcm16)
        if fmt == "wav":
            data = b"".join([c async for c in chunks])
            return web.Response(body=_wav(data), content_type="audio/wav")
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await resp.prepare(request)
        async for data in chunks:
            await resp.write(data)
        return resp

    async def transcriptions(self, request):
        from aiohttp import web

        try:
            form = await request.post()
            upload = form["file"]
            data = upload.file.read()
        except (ValueError, KeyError, AttributeError):
            return _error(400, "send the audio as the multipart field 'file'")
        language = str(form.get("language", "")) or None
        self.served["transcriptions"] += 1
        loop = asyncio.get_running_loop()
        try:
            text = await loop.run_in_executor(None, self._transcribe, data, language)
        except Exception as exc:  # noqa: BLE001 - a broken upload is the client's to fix
            return _error(400, f"could not transcribe the file: {exc}")
        return web.json_response({"text": text, "language": getattr(self.asr, "last_language", language)})

    def _transcribe(self, data: bytes, language: str | None) -> str:
        import tempfile

        from ..speech.audio import read_audio

        with tempfile.NamedTemporaryFile(suffix=".audio") as f:  # deleted at once: it is someone's voice
            f.write(data)
            f.flush()
            pcm = np.concatenate([c.pcm for c in read_audio(f.name, 16000)] or [np.zeros(0, np.float32)])
        return self.asr.transcribe(pcm, language)


def _pump(make):
    """An async iterator over a blocking generator, run on a thread of its own."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue(maxsize=64)
    end = object()

    def run() -> None:
        try:
            for item in make():
                asyncio.run_coroutine_threadsafe(q.put(item), loop).result()
        except Exception as exc:  # noqa: BLE001 - raised on the event loop's side
            asyncio.run_coroutine_threadsafe(q.put(exc), loop).result()
        finally:
            asyncio.run_coroutine_threadsafe(q.put(end), loop).result()

    threading.Thread(target=run, name="engine-request", daemon=True).start()

    async def items():
        while (item := await q.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item

    return items()


def _wav(pcm: bytes) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SPEECH_RATE)
        w.writeframes(pcm)
    return buf.getvalue()


def _error(status: int, message: str):
    from aiohttp import web

    return web.json_response({"error": {"message": message}}, status=status)


def client_config(url: str, **llm: object) -> str:
    """The config.toml tables an avatar machine needs to use these engines at *url* (``.../v1``),
    with extra ``[llm]`` keys (``max_tokens = 20``): printed at start, for pasting."""
    extra = "".join(f"{k} = {v!r}\n" for k, v in llm.items())
    return (f'[llm]\nengine = "openai"\n{extra}[llm.openai]\nbase_url = "{url}"\n'
            f'[asr]\nengine = "openai"\n[asr.openai]\nbase_url = "{url}"\n'
            f'[tts]\nengine = "openai"\nfallback = ""\n[tts.openai]\nbase_url = "{url}"\n')


def serve_engines(settings, host: str, port: int) -> None:
    import socket

    from aiohttp import web

    from ..errors import TalkerError

    try:
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise TalkerError(f"cannot serve engines on {host}:{port}: {exc}; pick another --port") from None
    server = EngineServer(settings, host)
    try:
        bound = sock.getsockname()
        url = f"http://{bound[0]}:{bound[1]}/v1"
        print(f"engines: {url} (chat/completions, audio/speech, audio/transcriptions)", flush=True)
        print(f"an avatar machine uses them with these lines in its config.toml:\n\n{client_config(url)}",
              file=sys.stderr, flush=True)
        web.run_app(server.app(), sock=sock, print=None)
    finally:
        server.close()
