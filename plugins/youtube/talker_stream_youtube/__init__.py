"""talker-stream's YouTube Live chat adapter (YouTube Data API v3)."""
from .adapter import YouTubeAdapter, YouTubeOptions

__all__ = ["YouTubeAdapter", "YouTubeOptions"]
