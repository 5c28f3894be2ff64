"""The plugin SDK: everything a plugin (an engine, a sink, a chat adapter) may use from the core.

Plugins import from here and nowhere else in ``talker_stream``, so the core can move its
insides without breaking them (a test checks it). What is here, by role:

- data that flows: ``OutFrame`` (what a sink is given), ``AudioChunk`` (what a voice yields),
  ``FaceParams`` (what a face engine draws), ``ChatMessage`` and its priorities (what an
  adapter hands in), ``Interrupt`` (why speech is cut) and ``Spoken`` (what was heard);
- options and errors: ``opt`` for an ``Options`` dataclass's fields, ``load_settings``,
  and the errors a user can act on;
- bases and helpers: ``AsyncAdapter`` (+ ``Backoff``, ``RecentSet``) for chat platforms,
  ``MediaClock`` (the one clock), ``AVEncoder`` (H.264/AAC for stream sinks), ``read_audio``;
- engines to build on: the mesh face (``MeshAnimator``) for neural mouths, the configured
  voice and ear (``open_tts``, ``open_asr``); for voice adapters the core's ear
  (``Listener`` fed from an ``AudioFeed``: resampling, VAD, Whisper, barge-in) and mouth
  (``SpeechOutput``: sentences, TTS at the player's rate, cut by an ``Interrupt``), and the
  parts they are made of (VAD, turn detection, resampling).
"""
from __future__ import annotations

from .frames import MODERATOR, PAID, REGULAR, ChatMessage
from .audience.adapters.aio import AsyncAdapter, Backoff, RecentSet
from .brain.asr import SpeechStarted, TurnDetector, TurnEnded, open_asr
from .brain.asr.listener import AudioFeed, Listener, StreamResampler
from .brain.asr.vad import SAMPLE_RATE, SileroVAD
from .speech.audio import read_audio
from .speech.clock import MediaClock
from .config import load_settings, opt
from .errors import ConfigError, EngineUnavailable, InputError, TalkerError
from .face.animator import MeshAnimator, MeshAvatar
from .face.params import FaceParams
from .frames import AudioChunk, Interrupt, Spoken
from .frames import OutFrame
from .speech.output import SpeechOutput
from .speech.tts import open_tts
from .outputs.encoder import AVEncoder

__all__ = [
    "AVEncoder", "AsyncAdapter", "AudioChunk", "AudioFeed", "Backoff", "ChatMessage", "ConfigError",
    "EngineUnavailable", "FaceParams", "InputError", "Interrupt", "Listener", "MODERATOR", "MediaClock",
    "MeshAnimator", "MeshAvatar", "OutFrame", "PAID", "REGULAR", "RecentSet", "SAMPLE_RATE", "SileroVAD",
    "SpeechOutput", "Spoken", "SpeechStarted", "StreamResampler", "TalkerError", "TurnDetector", "TurnEnded",
    "load_settings", "open_asr", "open_tts", "opt", "read_audio",
]
