"""talker-stream sink: the avatar as a virtual webcam, its voice as a virtual microphone."""
from .sink import Options, VirtualCamSink

__all__ = ["Options", "VirtualCamSink"]
