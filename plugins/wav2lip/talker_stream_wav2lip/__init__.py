"""talker-stream's wav2lip face engine: Wav2Lip's neural mouth inside the mesh animator's face.

Importing this package does not import torch (config validation and ``doctor`` load it);
torch is imported when the engine is made.
"""
from .engine import Wav2LipAvatar, Wav2LipEngine
from .options import Wav2LipOptions

__all__ = ["Wav2LipAvatar", "Wav2LipEngine", "Wav2LipOptions"]
