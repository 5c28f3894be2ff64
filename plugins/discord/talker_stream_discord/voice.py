"""One voice channel: hear each speaker on their own, answer aloud, stop when interrupted.

Receive path (discord-ext-voice-recv's threads): UDP -> transport decryption -> jitter
buffer per speaker -> ``VoiceListener.write`` (opus, because this sink asks for opus) ->
DAVE decryption when the channel is end-to-end encrypted -> discord.opus.Decoder (48 kHz
stereo) -> mono -> 16 kHz -> that speaker's own TurnDetector (Silero VAD). Each finished
turn goes to one ASR thread (Whisper) and comes out as a ChatMessage. The sink takes opus
rather than PCM so it can decrypt DAVE frames itself with the session discord.py already
negotiates (``davey``): voice-recv decodes before any such step and would feed ciphertext
to opus.

Speak path: answer text -> the core's TTS engine -> 48 kHz -> SpeechSource -> discord.py's
player (opus encoder, encryption, DAVE, UDP). A SpeechStarted from any speaker while an
answer plays stops it (barge-in) and drops the answers queued behind it.

Receive can fail in ways voice-recv only logs (every packet, as it happens): transport
decryption errors, DAVE frames nobody can decrypt, undecodable opus, a router thread that
died. Each is counted here and reported once per session, in the text channel the /join
came from and in the log.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import queue
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import discord
import numpy as np
from discord.ext import voice_recv

from talker_stream.plugin import ChatMessage
from talker_stream.plugin import SpeechStarted, TurnDetector, TurnEnded
from talker_stream.plugin import StreamResampler
from talker_stream.plugin import SAMPLE_RATE, SileroVAD

from .audio import RATE, SpeechSource, from_discord

log = logging.getLogger(__name__)

MAX_SPEAKERS = 32  # per-speaker state kept for this many recent speakers (bounded memory)
FAIL_PACKETS = 25  # this many undecryptable/undecodable packets in a row (0.5 s) is a failure, not noise
DAVE_MARKER = b"\xfa\xfa"  # every DAVE-encrypted frame ends with this magic marker

PROBLEMS = {
    "e2ee": ("I can't hear anyone in {channel}: it uses Discord's end-to-end encryption (DAVE) and "
             "this bot could not decrypt the audio (no DAVE session established for it). "
             "Text questions still work: mention me or use /ask."),
    "decrypt": ("I can't hear anyone in {channel}: the voice packets fail to decrypt. "
                "Try /leave and /join again; text questions still work."),
    "decode": ("I can't hear anyone in {channel}: the audio does not decode as opus "
               "(possibly encrypted end to end). Text questions still work."),
    "stopped": "Listening in {channel} stopped: {detail}. Use /join to try again.",
}


def voice_problem() -> str | None:
    """Why voice cannot work on this machine (PyNaCl, davey, libopus, voice-recv), or None."""
    import ctypes.util

    for module, fix in (("nacl.secret", "pip install PyNaCl"), ("davey", "pip install davey")):
        try:
            __import__(module)
        except ImportError:
            return f"voice needs {module.split('.')[0]}: {fix}"
    if not discord.opus.is_loaded():
        name = ctypes.util.find_library("opus")
        try:
            discord.opus.load_opus(name or "libopus.so.0")
        except OSError:
            return "voice needs the Opus library: apt-get install libopus0 (or brew install opus)"
    return None


@dataclass
class VoiceOrigin:
    """The handle of a spoken question: reply() speaks its answer in this voice channel."""

    guild_id: int
    channel_id: int
    user_id: int


class _Speaker:
    """One person's receive state: opus decoder, resampler and turn detector."""

    def __init__(self, member, detector: TurnDetector) -> None:
        self.member = member
        self.decoder = discord.opus.Decoder()
        self.resample = StreamResampler(RATE, SAMPLE_RATE)
        self.detector = detector
        self.failures = 0
        self.fed = 0  # 16 kHz samples given to the detector
        self.burst_start: int | None = None  # where the current run of packets began (None: silent)


class VoiceListener(voice_recv.AudioSink):
    """The voice-recv sink; everything happens in VoiceSession (this only guards the
    router thread: an exception here would stop receiving for everyone)."""

    def __init__(self, session: VoiceSession) -> None:
        super().__init__()
        self.session = session
        self.errors = 0

    def wants_opus(self) -> bool:
        return True

    def write(self, user, data) -> None:
        try:
            self.session.on_packet(user, data.opus or b"")
        except Exception:  # noqa: BLE001 - one bad packet must not end listening
            self.errors += 1
            if self.errors == 1 or self.errors % 500 == 0:
                log.exception("discord voice: packet from %s failed (%d so far)", user, self.errors)

    @voice_recv.AudioSink.listener()
    def on_voice_member_speaking_stop(self, member) -> None:
        try:
            self.session.on_silence(member)
        except Exception:  # noqa: BLE001 - runs on voice-recv's event thread
            log.exception("discord voice: end of speech from %s failed", member)

    def cleanup(self) -> None:
        pass


class VoiceSession:
    """Listening and speaking in one voice channel, from /join to /leave."""

    def __init__(self, vc, *, loop: asyncio.AbstractEventLoop, on_message: Callable[[ChatMessage], None],
                 tts, asr, asr_settings, report: Callable[[str], None], tts_lock: threading.Lock) -> None:
        self.vc = vc
        self.loop = loop
        self.on_message = on_message
        self.tts, self.asr, self.asr_settings = tts, asr, asr_settings
        self.report = report  # says a problem in the text channel and the log (thread-safe)
        self.tts_lock = tts_lock
        self.channel = vc.channel
        self.sink = VoiceListener(self)
        self._vad = SileroVAD()  # one ONNX session; each speaker gets its own state over it
        self._speakers: OrderedDict[int, _Speaker] = OrderedDict()
        self._turns: queue.Queue = queue.Queue(maxsize=8)
        self._say: queue.Queue = queue.Queue(maxsize=8)
        self._reported: set[str] = set()
        self._crypto_failures = 0
        self.current: SpeechSource | None = None
        self.barge_ins = 0
        self.speech_start_ms: deque[float] = deque(maxlen=100)  # audio from a burst's first packet to SpeechStarted
        self.heard = 0  # questions turned into ChatMessages
        self.closed = False
        self._threads = [threading.Thread(target=self._asr_loop, name="discord-asr", daemon=True),
                         threading.Thread(target=self._speak_loop, name="discord-tts", daemon=True)]

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        for t in self._threads:
            t.start()
        self.vc.listen(self.sink, after=self._listen_ended)
        self._count_crypto_errors()
        log.info("discord voice: listening in %s", self.channel)

    def close(self) -> None:
        """Stop listening and speaking (the caller disconnects)."""
        if self.closed:
            return
        self.closed = True
        self._cut()
        for q in (self._turns, self._say):
            _put_sentinel(q)
        if self.vc.is_listening():
            self.vc.stop_listening()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5)

    def _listen_ended(self, error: Exception | None) -> None:
        if error is not None and not self.closed:
            self.problem("stopped", detail=f"{type(error).__name__}: {error}")

    def _count_crypto_errors(self) -> None:
        """voice-recv logs and drops a packet it cannot decrypt; count them so that a channel
        whose packets *never* decrypt is reported instead of staying silently deaf."""
        from nacl.exceptions import CryptoError

        reader = getattr(self.vc, "_reader", None)
        decryptor = getattr(reader, "decryptor", None)
        if decryptor is None:
            return
        inner = decryptor.decrypt_rtp

        def counted(packet):
            try:
                out = inner(packet)
            except CryptoError:
                self._crypto_failures += 1
                if self._crypto_failures >= FAIL_PACKETS:
                    self.problem("decrypt")
                raise
            self._crypto_failures = 0
            return out

        decryptor.decrypt_rtp = counted

    def problem(self, kind: str, **detail) -> None:
        """Report a receive failure once per session: the text channel and the log."""
        if kind in self._reported:
            return
        self._reported.add(kind)
        text = PROBLEMS[kind].format(channel=getattr(self.channel, "name", self.channel), **detail)
        log.error("discord voice: %s", text)
        self.report(text)

    # -- receive (voice-recv's router thread) ----------------------------------------
    def on_packet(self, member, payload: bytes) -> None:
        if member is None or getattr(member, "bot", False) or self.closed:
            return  # unknown ssrc (not mapped to a user yet), or another bot
        sp = self._speaker(member)
        if payload:
            payload = self._dave_decrypt(member.id, payload)
            if payload is None:
                return self._failed(sp, "e2ee")
        try:
            pcm = sp.decoder.decode(payload or None)  # None: a lost packet, concealed by opus
        except discord.opus.OpusError:
            return self._failed(sp, "decode")
        sp.failures = 0
        if sp.burst_start is None:
            sp.burst_start = sp.fed
        self._feed(sp, member, from_discord(pcm))

    def on_silence(self, member) -> None:
        """Discord clients stop sending when their mic gate closes, so silence never arrives
        as audio: when a speaker's packets stop (voice-recv's speaking-stop, 0.2 s after the
        last one), feed the detector the silence it would have heard, to end the turn."""
        sp = self._speakers.get(getattr(member, "id", None))
        if sp is None or self.closed:
            return
        sp.burst_start = None
        ms = self.asr_settings.end_of_turn_ms + 100
        self._feed(sp, member, np.zeros(RATE * ms // 1000, np.float32))

    def _feed(self, sp: _Speaker, member, mono48k: np.ndarray) -> None:
        pcm = sp.resample(mono48k)
        sp.fed += len(pcm)
        for ev in sp.detector.feed(pcm):
            if isinstance(ev, SpeechStarted):
                if sp.burst_start is not None:  # how much of this burst it took to notice the speech
                    self.speech_start_ms.append((ev.detected_at - sp.burst_start) * 1000 / SAMPLE_RATE)
                self._barge_in(member)
            elif isinstance(ev, TurnEnded):
                try:
                    self._turns.put_nowait((member, ev.pcm))
                except queue.Full:
                    log.warning("discord voice: speech recognition is behind; a turn of %s was dropped",
                                member.display_name)

    def _speaker(self, member) -> _Speaker:
        sp = self._speakers.get(member.id)
        if sp is None:
            a = self.asr_settings
            vad = copy.copy(self._vad)
            vad.reset()  # own LSTM state and context, shared ONNX session
            detector = TurnDetector.from_settings(a, vad=vad)
            sp = self._speakers[member.id] = _Speaker(member, detector)
            while len(self._speakers) > MAX_SPEAKERS:
                self._speakers.popitem(last=False)
        self._speakers.move_to_end(member.id)
        sp.member = member
        return sp

    def _dave_decrypt(self, user_id: int, payload: bytes) -> bytes | None:
        """The opus frame inside a DAVE frame; the payload itself when the channel is not
        end-to-end encrypted; None when it is and this connection holds no key for it."""
        conn = getattr(self.vc, "_connection", None)
        session = getattr(conn, "dave_session", None)
        if session is not None and getattr(conn, "dave_protocol_version", 0) and session.ready:
            import davey

            try:
                return session.decrypt(user_id, davey.MediaType.audio, payload)
            except Exception:  # noqa: BLE001 - davey raises its own types; passthrough is checked below
                pass
        return None if payload.endswith(DAVE_MARKER) else payload

    def _failed(self, sp: _Speaker, kind: str) -> None:
        sp.failures += 1
        if sp.failures == FAIL_PACKETS:
            self.problem(kind)

    # -- barge-in ---------------------------------------------------------------------
    def _barge_in(self, member) -> None:
        if not self.asr_settings.barge_in:
            return
        if self.current is not None and not self.current.cancelled:
            self.barge_ins += 1
            log.info("discord voice: %s started speaking; the answer stops", member.display_name)
            self._cut()

    def _cut(self) -> None:
        """Stop the answer being spoken and drop those waiting behind it."""
        while True:
            try:
                self._say.get_nowait()
            except queue.Empty:
                break
        src = self.current
        if src is not None:
            src.cancel()
        stop = getattr(self.vc, "stop_playing", None) or self.vc.stop  # VoiceRecvClient.stop() also stops listening
        stop()

    # -- ASR thread ---------------------------------------------------------------------
    def _asr_loop(self) -> None:
        while (item := self._turns.get()) is not None:
            member, pcm = item
            try:
                self._heard(member, pcm)
            except Exception:  # noqa: BLE001 - one failed turn must not end listening
                log.exception("discord voice: a turn of %s could not be turned into a question",
                              getattr(member, "display_name", member))

    def _heard(self, member, pcm: np.ndarray) -> None:
        """One finished turn: Whisper, then a ChatMessage (ASR thread)."""
        text = self.asr.transcribe(pcm)
        if not text.strip(" .,!?-"):
            return
        # voice-recv may hand over a plain discord.User (no roles): no channel permissions then
        perms = self.channel.permissions_for(member) if hasattr(member, "roles") else None
        guild = getattr(self.channel, "guild", None)
        moderator = bool(perms and perms.manage_messages) or member.id == getattr(guild, "owner_id", None)
        self.heard += 1
        self.on_message(ChatMessage(
            platform="discord", channel=str(self.channel.id), author=member.display_name, text=text,
            author_id=str(member.id), moderator=moderator,
            handle=VoiceOrigin(guild.id, self.channel.id, member.id)))

    # -- speaking ----------------------------------------------------------------------
    def say(self, pieces: Iterable[str]) -> bool:
        """Queue an answer to be spoken (text pieces, e.g. sentences as the model writes them)."""
        if self.closed:
            return False
        try:
            self._say.put_nowait(pieces)
            return True
        except queue.Full:
            log.warning("discord voice: %d answers already waiting; this one is not spoken", self._say.qsize())
            return False

    def _speak_loop(self) -> None:
        while (pieces := self._say.get()) is not None:
            src = SpeechSource()
            done = threading.Event()
            self.current = src
            try:
                self._play(src, done)
                self._synthesise(src, pieces)
            except Exception:  # noqa: BLE001 - a failed answer must not end the session
                log.exception("discord voice: speaking an answer failed")
                src.cancel()
            finally:
                src.finish()
            while not done.wait(0.5):
                if self.closed or not self.vc.is_connected():
                    src.cancel()
                    break
            self.current = None

    def _play(self, src: SpeechSource, done: threading.Event) -> None:
        def start() -> None:
            try:
                self.vc.play(src, after=lambda _err: done.set())
            except Exception as exc:  # noqa: BLE001 - not connected, already playing
                log.warning("discord voice: cannot play: %s", exc)
                src.cancel()
                done.set()

        self.loop.call_soon_threadsafe(start)

    def _synthesise(self, src: SpeechSource, pieces: Iterable[str]) -> None:
        resampler: StreamResampler | None = None
        for piece in pieces:
            if not piece.strip():
                continue
            with self.tts_lock:  # one engine, shared by every voice channel
                for chunk in self.tts.stream(piece):
                    if resampler is None or resampler.rate_in != chunk.sample_rate:
                        if resampler is not None and not src.feed(resampler.flush()):
                            return
                        resampler = StreamResampler(chunk.sample_rate, RATE)
                    if not src.feed(resampler(chunk.pcm)):
                        return  # barge-in
        if resampler is not None:
            src.feed(resampler.flush())


def _put_sentinel(q: queue.Queue) -> None:
    while True:
        try:
            q.put_nowait(None)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass
