"""XTTS-v2 voice cloning for talker-stream, through coqui-tts (the maintained fork of TTS)."""
from .engine import XttsTTS
from .options import XttsOptions

__all__ = ["XttsOptions", "XttsTTS"]
