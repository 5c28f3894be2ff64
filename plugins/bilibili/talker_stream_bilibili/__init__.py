"""talker-stream's Bilibili live danmaku adapter (websocket protocol, Super Chats and gifts as priority)."""
from .adapter import BilibiliAdapter, BilibiliOptions

__all__ = ["BilibiliAdapter", "BilibiliOptions"]
