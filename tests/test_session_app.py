"""The sessions web app in this process (no browser): what its threads do while pages wait.

A real ``WebApp`` with the real engines (SmolLM2 through llama.cpp in its worker, Piper, the
mesh face) behind aiohttp's own test server, and a real ``Session``. Nothing is faked.
"""
from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from conftest import PORTRAIT, make_settings, wait_for

PAGES = 8  # more caption streams than the event loop's default pool has threads (6 on 2 cores)


@pytest.fixture(scope="module")
def engines():
    from talker_stream.brain.llm import open_llm
    from talker_stream.server.sessions import SharedEngines
    from talker_stream.speech.tts import open_tts

    settings = make_settings(**{"avatar.portrait": str(PORTRAIT), "serve.max_sessions": 2})
    shared = SharedEngines(settings, open_llm(settings), open_tts(settings, live=True))
    yield shared
    shared.close()


def _polling_threads() -> dict[str, int]:
    """Thread name prefix -> how many threads of that kind are inside a caption poll now."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out: dict[str, int] = {}
    for ident, frame in sys._current_frames().items():
        while frame is not None:
            if frame.f_code.co_name == "next_events":
                kind = names.get(ident, "?").rsplit("_", 1)[0].split("-")[0]
                out[kind] = out.get(kind, 0) + 1
                break
            frame = frame.f_back
    return out


def test_pages_waiting_for_captions_leave_the_encoders_pool_free(engines):
    """Eight caption streams are open: every poll waits on the sessions' own threads, none
    on the loop's default pool (aiortc encodes every session's picture and sound there;
    with the polls in it, 8 sessions got 3.8 fps instead of 25), and a caption said
    meanwhile reaches a page."""
    import aiohttp
    from aiohttp.test_utils import TestServer

    from talker_stream.server.sessions import Session
    from talker_stream.server.webapp import WebApp

    async def main() -> tuple[dict[str, int], list[bytes]]:
        app = WebApp(engines.settings, engines)
        session = Session(engines, asyncio.get_running_loop(), "127.0.0.1")  # not started: no media
        app.sessions.add(session)
        got: list[bytes] = []
        async with TestServer(app.app()) as server, aiohttp.ClientSession() as http:
            async def page() -> None:
                async with http.get(server.make_url(f"/whep/{session.id}/events")) as resp:
                    async for line in resp.content:
                        if line.startswith(b"data:"):
                            got.append(line)
                            return

            pages = [asyncio.ensure_future(page()) for _ in range(PAGES)]
            assert await asyncio.to_thread(wait_for, lambda: session.watchers == PAGES, 10)
            await asyncio.sleep(0.3)
            polling = _polling_threads()
            session.emit({"said": "Hello there."})  # one page of the eight takes it (a reload's old tab)
            done, waiting = await asyncio.wait(pages, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            for p in waiting:
                p.cancel()
            session.close_media()
        return polling, got

    polling, got = asyncio.run(main())
    assert polling.get("session", 0) >= PAGES - 1, polling  # (one may be between two polls)
    assert not polling.get("asyncio", 0), f"caption polls on the event loop's default pool: {polling}"
    assert len(got) == 1 and b"Hello there." in got[0], got
