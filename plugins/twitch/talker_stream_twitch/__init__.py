"""talker-stream's Twitch chat adapter: IRC over TLS with Twitch's tags, answers in chat
within Twitch's rate limits when configured."""
from .adapter import TwitchAdapter, TwitchOptions

__all__ = ["TwitchAdapter", "TwitchOptions"]
