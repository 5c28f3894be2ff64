"""talker-stream's OBS sink: the avatar, its voice and its caption as an OBS Studio scene."""
from .sink import ObsOptions, ObsSink

__all__ = ["ObsOptions", "ObsSink"]
