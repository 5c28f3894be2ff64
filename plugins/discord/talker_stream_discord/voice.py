"""One voice channel: hear each speaker on their own, answer aloud, stop when interrupted.

Receive path (discord-ext-voice-recv's threads): UDP -> transport decryption -> jitter
buffer per speaker -> ``VoiceListener.write`` (opus, because this sink asks for opus) ->
DAVE decryption when the channel is end-to-end encrypted -> discord.opus.Decoder (48 kHz
stereo) -> mono -> that speaker's AudioFeed -> the core's Listener (resampling, Silero VAD,
barge-in, Whisper), one per speaker, all over one Silero model and one Whisper. Each heard
turn becomes a ChatMessage. The sink takes opus rather than PCM so it can decrypt DAVE
frames itself with the session discord.py already negotiates (``davey``): voice-recv
decodes before any such step and would feed ciphertext to opus.

Speak path: answer text -> the core's SpeechOutput (sentences, TTS, 48 kHz) -> SpeechSource
-> discord.py's player (opus encoder, encryption, DAVE, UDP). Any speaker starting to talk
while an answer plays interrupts it (an Interrupt("barge-in")), which drops the answers
queued behind it too.

Receive can fail in ways voice-recv only logs (every packet, as it happens): transport
decryption errors, DAVE frames nobody can decrypt, undecodable opus, a router thread that
died. Each is counted here and reported once per session, in the text channel the /join
came from and in the log.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import discord
import numpy as np
from discord.ext import voice_recv

from talker_stream.plugin import AudioChunk, AudioFeed, ChatMessage, Interrupt, Listener, Spoken
from talker_stream.plugin import SAMPLE_RATE, SileroVAD, SpeechOutput

from .audio import RATE, SpeechSource, from_discord

log = logging.getLogger(__name__)

MAX_SPEAKERS = 32  # a listener each for this many recent speakers; the least recently heard goes (bounded memory)
FEED_SECONDS = 5.0  # audio a speaker's listener may fall behind before the oldest is dropped
TURNS_WAITING = 2  # finished turns per speaker waiting for Whisper, before their VAD waits too
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
    spoken_along: bool = False  # its answer was spoken here as the model wrote it (speak_along)


class _Speaker:
    """One person in the channel: their opus decoder, and the core's Listener hearing them."""

    def __init__(self, member) -> None:
        self.member = member
        self.decoder = discord.opus.Decoder()
        self.feed = AudioFeed(FEED_SECONDS, f"discord voice of {getattr(member, 'display_name', member)}")
        self.listener: Listener | None = None
        self.failures = 0
        self.fed = 0  # 48 kHz samples put into the feed
        self.bursts: deque[int] = deque(maxlen=16)  # where runs of packets began (48 kHz samples)
        self.quiet = True  # no packet since the last speaking-stop

    def stop(self, timeout: float = 0.0) -> None:
        """End the listener (a turn still being spoken is not transcribed); wait up to
        *timeout* for it to finish the turns it has."""
        if self.listener is not None:
            self.listener.stop(0)
        self.feed.close()
        if self.listener is not None and timeout:
            self.listener.stop(timeout)


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
                 tts, asr, settings, report: Callable[[str], None], tts_lock: threading.Lock) -> None:
        self.vc = vc
        self.loop = loop
        self.on_message = on_message
        self.asr, self.settings = asr, settings  # one Whisper for every speaker (and every channel)
        self.report = report  # says a problem in the text channel and the log (thread-safe)
        self.channel = vc.channel
        self.sink = VoiceListener(self)
        self._vad = SileroVAD()  # one ONNX session; each speaker's listener forks its own state over it
        self._speakers: OrderedDict[int, _Speaker] = OrderedDict()
        self._lock = threading.Lock()  # the speakers: voice-recv's router and event threads both come here
        self.output = SpeechOutput(tts, RATE, self._player, tts_lock=tts_lock, name="discord-tts")
        self._reported: set[str] = set()
        self._crypto_failures = 0
        self.barge_ins = 0
        self.speech_start_ms: deque[float] = deque(maxlen=100)  # audio from a burst's first packet to speech noticed
        self.spoken: deque[Spoken] = deque(maxlen=100)  # what was heard of each answer (and why it was cut)
        self.heard = 0  # questions turned into ChatMessages
        self.closed = False

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.output.start()
        self.vc.listen(self.sink, after=self._listen_ended)
        self._count_crypto_errors()
        log.info("discord voice: listening in %s", self.channel)

    def close(self) -> None:
        """Stop listening and speaking (the caller disconnects)."""
        if self.closed:
            return
        self.closed = True
        self.output.close()
        if self.vc.is_listening():
            self.vc.stop_listening()
        with self._lock:
            speakers = list(self._speakers.values())
            self._speakers.clear()
        for sp in speakers:
            sp.stop()
        deadline = time.monotonic() + 5
        for sp in speakers:  # each may be in the middle of a Whisper call
            sp.stop(max(0.01, deadline - time.monotonic()))

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
        if sp.quiet:
            sp.quiet = False
            sp.bursts.append(sp.fed)
        self._feed(sp, from_discord(pcm))

    def on_silence(self, member) -> None:
        """Discord clients stop sending when their mic gate closes, so silence never arrives
        as audio: when a speaker's packets stop (voice-recv's speaking-stop, 0.2 s after the
        last one), feed the listener the silence it would have heard, to end the turn."""
        sp = self._speakers.get(getattr(member, "id", None))
        if sp is None or self.closed:
            return
        sp.quiet = True
        ms = self.settings.asr.end_of_turn_ms + 100
        self._feed(sp, np.zeros(RATE * ms // 1000, np.float32))

    def _feed(self, sp: _Speaker, mono48k: np.ndarray) -> None:
        sp.feed.put(AudioChunk(mono48k, RATE))  # never blocks: a listener far behind loses its oldest audio
        sp.fed += len(mono48k)

    def _speaker(self, member) -> _Speaker:
        """This member's speaker, with a listener of its own (the least recently heard one
        goes past MAX_SPEAKERS); a listener that stopped is replaced."""
        evicted = []
        with self._lock:
            sp = self._speakers.get(member.id)
            if sp is None or sp.feed.closed:
                sp = self._speakers[member.id] = _Speaker(member)
                sp.listener = Listener.from_settings(
                    self.settings, asr=self.asr, vad=self._vad.fork(), speculate=False, max_waiting_turns=TURNS_WAITING,
                    on_speech_start=lambda: self._speech_started(sp),
                    on_question=lambda text, _start, _end: self._heard(sp.member, text),
                    on_error=lambda exc: log.error("discord voice: a turn of %s could not be turned into a question: "
                                                   "%s", sp.member.display_name, exc, exc_info=exc))
                sp.listener.start(sp.feed)
                while len(self._speakers) > MAX_SPEAKERS:
                    evicted.append(self._speakers.popitem(last=False)[1])
            self._speakers.move_to_end(member.id)
            sp.member = member
        for old in evicted:
            old.stop()  # closes its feed: the listener ends on its own thread
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

    # -- the listeners' callbacks ---------------------------------------------------------
    def _speech_started(self, sp: _Speaker) -> None:
        """A speaker's listener noticed speech (its thread): time it, and barge in."""
        at = sp.listener.speech_starts[-1].detected_at * RATE // SAMPLE_RATE  # in the speaker's 48 kHz samples
        began = [b for b in list(sp.bursts) if b <= at]
        if began:  # how much of this burst it took to notice the speech
            self.speech_start_ms.append((at - began[-1]) * 1000 / RATE)
        if self.output.speaking and self.output.interrupt(Interrupt("barge-in", f"discord:{sp.member.id}")):
            self.barge_ins += 1
            log.info("discord voice: %s started speaking; the answer stops", sp.member.display_name)

    def _heard(self, member, text: str) -> None:
        """One transcribed turn becomes a ChatMessage (the listener's ASR thread)."""
        if self.closed:
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
    def say(self, pieces: str | Iterable[str]) -> bool:
        """Queue an answer to be spoken (a text, or sentences as the model writes them)."""
        return not self.closed and self.output.say(pieces, on_done=self._said) is not None

    def _said(self, spoken: Spoken) -> None:
        self.spoken.append(spoken)
        if spoken.interrupt is not None:
            log.info("discord voice: an answer was cut (%s, %s) after %r", spoken.interrupt.reason,
                     spoken.interrupt.source, spoken.text)

    def _player(self) -> SpeechSource:
        """One answer's SpeechSource, played by discord.py's player (started on the client's loop)."""
        src = SpeechSource(alive=self.vc.is_connected)

        def start() -> None:
            try:
                self.vc.play(src, after=lambda _err: src.done())
            except Exception as exc:  # noqa: BLE001 - not connected, already playing
                log.warning("discord voice: cannot play: %s", exc)
                src.cancel()
                src.done()

        self.loop.call_soon_threadsafe(start)
        return src
