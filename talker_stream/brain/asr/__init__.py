"""Speech in: Silero VAD finds the turns, Whisper (faster-whisper) writes them down.

``TurnDetector`` (vad.py) says when someone starts speaking (barge-in) and when they have
finished (after ``[asr] end_of_turn_ms`` of silence); ``WhisperASR`` (whisper.py)
transcribes each turn; ``Listener`` (listener.py) joins them over a file, the microphone
or any iterator of AudioChunk. ``wer()`` (metrics.py) scores transcripts.
"""
from __future__ import annotations

from .listener import Listener, file_source, microphone_source

from ...frames import Heard
from .metrics import cer, wer
from .vad import SileroVAD, SpeechStarted, TurnDetector, TurnEnded
from .whisper import WhisperASR

__all__ = ["Heard", "Listener", "SileroVAD", "SpeechStarted", "TurnDetector", "TurnEnded", "WhisperASR", "cer",
           "file_source", "microphone_source", "open_asr", "wer"]


def open_asr(settings, threads: int | None = None) -> WhisperASR:
    """The Whisper model configured in [asr] (paths relative to the config file), in a
    supervised worker process unless [asr] isolate is off (CTranslate2 is native code); or
    a transcription server with [asr] engine = "openai"."""
    if settings.asr.engine == "openai":
        from .openai_transcribe import OpenAITranscribeASR

        return OpenAITranscribeASR(settings.asr, base_dir=settings.base_dir)
    if settings.asr.isolate:
        from .isolated import IsolatedASR

        return IsolatedASR(settings.asr, base_dir=settings.base_dir, threads=threads)
    return WhisperASR(settings.asr, base_dir=settings.base_dir, threads=threads)
