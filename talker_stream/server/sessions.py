"""Browser sessions: each visitor gets an avatar of their own, the heavy engines are shared.

A session is one LiveAvatar (its own media clock, utterance queue and face state), one
Conversation (its own memory), optionally one Listener for the visitor's microphone (its
own VAD and turn state), and one RTCPeerConnection carrying the avatar's picture and voice
out and the microphone in. The LLM, Whisper and the voice are opened once, in their worker
processes, and serve every session in turn, so a session costs its face state, encoders
and buffers, not another copy of a model.

Sessions end when the page closes (DELETE, or the beacon a closing page sends), when ICE
fails, after ``idle_timeout`` without a question, or by the operator; everything a session
took (threads, the peer connection, the avatar's sinks) is released then.
"""
from __future__ import annotations

import asyncio
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import TalkerError
from ..frames import AudioChunk, Interrupt

log = logging.getLogger(__name__)

EVENTS_KEPT = 200  # caption events waiting for a slow page; older ones are dropped
NODE = "local"  # where sessions run: a Ray node id in a session actor (server/cluster.py)
# The interpreter's thread switch interval in a process that runs sessions (5 ms by default).
# Every session has a frame loop, a sink thread and two encoders, each giving up the GIL for
# each numpy, OpenCV or codec call and waiting to get it back; at 1 ms those waits shrink.
# bench/sessions.py, 8 sessions on 2 cores: speaking 23.5 -> 25.0 fps received, idle 14 -> 1
# pictures dropped, the server's CPU a little lower (111 -> 102 % of a core).
SWITCH_INTERVAL_S = 0.001
_CALLS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="session-call")


async def blocking(fn, *args):
    """A blocking session call (a caption poll that waits up to half a second, a question, a
    session's start or end) on the sessions' own threads. The event loop's default pool is
    where aiortc encodes every session's picture and sound: six threads on two cores, which
    eight pages polling for captions would otherwise hold while encoders wait."""
    return await asyncio.get_running_loop().run_in_executor(_CALLS, fn, *args)


class Busy(TalkerError):
    """No room for another session (the cap, or this address's share of it)."""


class NoRelay(TalkerError):
    """Relaying only, and the TURN server gave this session no relay address."""


@dataclass
class SharedEngines:
    """One LLM, one ear and one voice for every session (each serialises its own calls)."""

    settings: object
    llm: object
    tts: object
    asr: object | None = None
    prepare_lock: threading.Lock = field(default_factory=threading.Lock)  # MediaPipe is not thread-safe

    @classmethod
    def open(cls, settings, listen: bool = True) -> "SharedEngines":
        from ..brain.asr import open_asr
        from ..brain.llm import open_llm
        from ..speech.tts import open_tts

        from ..brain.conversation import open_conversation

        llm = open_llm(settings)
        tts = open_tts(settings, live=True)
        asr = open_asr(settings, threads=1) if listen else None
        # the first visitor must not pay for loading weights and filling caches
        open_conversation(settings, llm=llm).warm_up()
        for _ in tts.stream("Hello."):
            pass
        if asr is not None:
            asr.transcribe(np.zeros(16000, np.float32), "en")
        return cls(settings, llm, tts, asr)

    def close(self) -> None:
        for engine in (self.llm, self.tts, self.asr):
            getattr(engine, "close", lambda: None)()


class Session:
    """One visitor's avatar, memory, ear and peer connection."""

    def __init__(self, engines: SharedEngines, loop: asyncio.AbstractEventLoop, address: str) -> None:
        from ..brain.asr.listener import AudioFeed
        from ..brain.conversation import open_conversation
        from ..live import LiveAvatar
        from ..face import open_face
        from ..outputs.webrtc import WebRTCSink

        self.id = secrets.token_urlsafe(12)
        self.address = address
        self.loop = loop
        self.engines = engines
        self.created = self.last_active = time.monotonic()
        self.sink = WebRTCSink(loop)
        self.sink.on_frame = self._on_frame
        settings = engines.settings
        with engines.prepare_lock:
            self.avatar = LiveAvatar(settings, [self.sink], tts=engines.tts, engine=open_face(settings))
        self.conversation = open_conversation(settings, llm=engines.llm)
        self.events: queue.Queue[dict] = queue.Queue(maxsize=EVENTS_KEPT)
        self.pc = None
        self.closed = threading.Event()
        self._caption = ""
        self._mic = AudioFeed(10.0, f"microphone of session {self.id[:6]}")  # the ear 10 s behind: the oldest sound goes
        self._listener = None
        self.asked = 0
        self.watchers = 0  # pages listening to this session's events (0 after one was: it went away)
        self.started = False  # the avatar's threads run (a session refused in connect() never starts them)

    # -- media -----------------------------------------------------------------------------
    def _on_frame(self, frame) -> None:
        caption = frame.caption if frame.speaking else ""
        if caption != self._caption:
            self._caption = caption
            self.emit({"said": caption, "question": frame.question})

    def emit(self, event: dict) -> None:
        _put_dropping_oldest(self.events, event)  # a page that reads slowly misses old captions

    def start(self) -> None:
        self.avatar.start()
        self.started = True

    def hear(self, track) -> None:
        """The visitor's microphone: its frames feed this session's own Listener (VAD,
        Whisper shared, drafts, barge-in) on a thread of its own."""
        from ..brain.asr import Listener
        from ..inputs.chat import chat_from_mic

        if self.engines.asr is None or self._listener is not None:
            return
        self._listener = Listener.from_settings(self.engines.settings, asr=self.engines.asr)
        out = _Captions(self)
        threading.Thread(target=chat_from_mic, args=(self.avatar, self.conversation, self._listener,
                                                     self._mic_source(), out), kwargs={"who": f"page:{self.id[:6]}"},
                         name=f"mic-{self.id[:6]}", daemon=True).start()
        self.loop.create_task(self._read_mic(track))

    async def _read_mic(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while not self.closed.is_set():
                frame = await track.recv()
                pcm = frame.to_ndarray()
                channels = len(frame.layout.channels)
                pcm = pcm.reshape(-1, channels).mean(axis=1) if frame.format.is_packed else pcm.mean(axis=0)
                scale = 32768.0 if pcm.dtype != np.float32 else 1.0
                self._mic.put(AudioChunk(pcm.astype(np.float32) / scale, frame.sample_rate))  # never blocks the loop
        except MediaStreamError:
            pass
        finally:
            self._mic.close()

    def _mic_source(self) -> Iterator:
        for chunk in self._mic:
            if self.closed.is_set():
                return
            self.last_active = time.monotonic()
            yield chunk

    # -- turns -----------------------------------------------------------------------------
    def ask(self, text: str) -> None:
        from ..inputs.chat import ask

        self.last_active = time.monotonic()
        self.asked += 1
        self.emit({"heard": text})
        ask(self.avatar, self.conversation, text, _Captions(self).console, wait=False)

    def interrupt(self) -> None:
        self.avatar.interrupt(Interrupt("operator", f"page:{self.id[:6]}"))

    # -- signalling ---------------------------------------------------------------------------
    async def connect(self, offer: str, config, on_gone) -> str:
        """Answer the visitor's SDP offer (on this session's event loop) with the peer
        connection *config* (an aiortc RTCConfiguration: ICE servers and policy, ice.py): the
        avatar's tracks out, the microphone in when the offer sends audio. *on_gone* is
        awaited when the peer connection fails or closes. Starts the avatar."""
        from aiortc import RTCIceTransportPolicy, RTCPeerConnection, RTCSessionDescription

        from .ice import has_relay

        pc = RTCPeerConnection(config)
        self.pc = pc
        mic_wanted = "a=sendrecv" in offer or "a=sendonly" in offer

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "audio" and mic_wanted:
                self.hear(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await on_gone(f"connection {pc.connectionState}")

        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" in kinds:
            pc.addTrack(self.sink.video)  # takes the offer's video section: sendonly or sendrecv
        if "audio" in kinds:
            pc.addTrack(self.sink.audio)
        await pc.setLocalDescription(await pc.createAnswer())  # gathers the candidates: TURN allocates here
        if config.iceTransportPolicy == RTCIceTransportPolicy.RELAY and not has_relay(pc.localDescription.sdp):
            raise NoRelay("relay_only is set and the TURN server gave no relay address (is it reachable, "
                          "and are the TURN credentials in the environment right?)")
        self.start()
        return pc.localDescription.sdp

    def next_events(self, timeout: float = 0.5) -> list[dict]:
        """Caption events waiting (blocks up to *timeout* for the first)."""
        try:
            out = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def stats(self) -> dict:
        return {"id": self.id[:6], "asked": self.asked, "node": NODE, **self.sink.stats()}

    # -- end -------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Everything the session took: the avatar's threads, the ear, the peer connection."""
        await blocking(self.close_media)
        if self.pc is not None:
            await self.pc.close()

    def close_media(self) -> None:
        """Stop the avatar and the ear (a thread: joins threads)."""
        if self.closed.is_set():
            return
        self.closed.set()
        self._mic.close()
        if self._listener is not None:
            self._listener.stop()
        self.avatar.interrupt(Interrupt("session-ended", f"page:{self.id[:6]}"))  # answers in flight learn why
        if self.started:  # a session refused before it started has no threads to join
            self.avatar.stop()
        self.emit({"end": True})


class _Captions:
    """What chat.py writes to a terminal, turned into caption events for the page."""

    def __init__(self, session: Session) -> None:
        from ..inputs.chat import Console

        self.session = session
        self.console = Console(self)

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.startswith("you: "):
                self.session.emit({"heard": line[5:]})

    def flush(self) -> None:
        pass


class Sessions:
    """The live sessions, capped in total and per address."""

    def __init__(self, engines: SharedEngines, max_sessions: int, per_address: int, idle_timeout: float) -> None:
        self.engines = engines
        self.max_sessions = max_sessions
        self.per_address = per_address
        self.idle_timeout = idle_timeout
        self._sessions: dict[str, Session] = {}
        self._reserved: dict[str, int] = {}  # address -> sessions being set up
        self._lock = threading.Lock()
        self.ended = 0

    def reserve(self, address: str) -> None:
        with self._lock:
            total = len(self._sessions) + sum(self._reserved.values())
            mine = sum(s.address == address for s in self._sessions.values()) + self._reserved.get(address, 0)
            if total >= self.max_sessions:
                raise Busy(f"all {self.max_sessions} sessions are taken; try again in a minute")
            if mine >= self.per_address:
                raise Busy(f"this address already has {mine} sessions; close one first")
            self._reserved[address] = self._reserved.get(address, 0) + 1

    def release(self, address: str) -> None:
        with self._lock:
            self._reserved[address] -= 1
            if not self._reserved[address]:
                del self._reserved[address]

    def add(self, session: Session) -> None:
        with self._lock:
            self._sessions[session.id] = session

    def get(self, sid: str) -> Session | None:
        with self._lock:
            return self._sessions.get(sid)

    def pop(self, sid: str) -> Session | None:
        with self._lock:
            s = self._sessions.pop(sid, None)
        if s is not None:
            self.ended += 1
        return s

    def all(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def idle(self) -> list[Session]:
        now = time.monotonic()
        return [s for s in self.all() if now - s.last_active > self.idle_timeout]

    def stats(self) -> dict:
        return {"sessions": len(self.all()), "max_sessions": self.max_sessions, "ended": self.ended,
                "each": [s.stats() for s in self.all()]}


def _put_dropping_oldest(q: queue.Queue, item) -> None:
    """Never block the producer (the event loop, a frame thread): a full queue loses its oldest."""
    try:
        q.put_nowait(item)
    except queue.Full:
        try:
            q.get_nowait()
            q.put_nowait(item)
        except (queue.Empty, queue.Full):
            pass


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()
