"""talker-stream's Discord adapter: mentions and /ask in text, /join to talk in a voice channel."""
from .adapter import DiscordAdapter, Options
from .voice import VoiceOrigin

__all__ = ["DiscordAdapter", "Options", "VoiceOrigin"]
