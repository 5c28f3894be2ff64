"""The ``wav2lip`` face engine: the mesh animator's face with Wav2Lip's mouth.

Each frame is the built-in animator's frame (blinks, brows, emotion, head motion,
breathing) warped from a source image whose lower face is Wav2Lip's output for that
frame's audio. Pasting into the *source* rather than the finished frame means the mesh
warp carries the neural mouth along with every head turn and smile, so there is no
second alignment step to drift or jitter, and the pixels the warp never touches stay
exactly as photographed. On neural frames the mesh's own mouth parameters are zeroed:
the network opens the jaw, and opening it twice would tear the seam.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from talker_stream.plugin import MediaClock
from talker_stream.plugin import EngineUnavailable, InputError
from talker_stream.plugin import MeshAnimator, MeshAvatar
from talker_stream.plugin import FaceParams

from .options import Wav2LipOptions

if TYPE_CHECKING:  # torch-free at import: config validation and doctor load this module
    from .crop import FaceCrop
    from .lips import LipWorker

log = logging.getLogger(__name__)

MOUTH_PARAMS = ("jaw_open", "mouth_wide", "mouth_round", "tongue")  # the network draws the mouth


@dataclasses.dataclass
class Wav2LipAvatar:
    mesh: MeshAvatar  # the portrait as photographed
    neural: MeshAvatar  # the same rig, its source image carrying the current neural mouth
    crop: FaceCrop
    lips: LipWorker

    @property
    def size(self) -> tuple[int, int]:
        return self.mesh.size

    @property
    def face(self):
        return self.mesh.face

    def head_mask(self) -> np.ndarray:
        return self.mesh.head_mask()


class Wav2LipEngine:
    """Neural lip-sync on torch (CUDA when present, CPU otherwise) or ONNX Runtime."""

    name = "wav2lip"
    native_modules = ("torch", "onnxruntime")  # preflight: a rebuilt runtime is probed again
    Options = Wav2LipOptions

    def __init__(self, options: Wav2LipOptions | None = None, base_dir: str | Path | None = None, **_: object) -> None:
        why = self.check()
        if why:
            raise EngineUnavailable(why)
        import torch

        from .checkpoint import NEEDED, WHERE, load_generator
        from .runner import pick_device, pick_precision

        self.options = o = options or Wav2LipOptions()
        if not o.checkpoint:
            raise EngineUnavailable(f"{NEEDED} ({WHERE})")
        path = Path(o.checkpoint).expanduser()
        self.checkpoint = path if path.is_absolute() else Path(base_dir or Path.cwd()) / path
        self.device = pick_device(o.device, o.backend)
        self.precision = pick_precision(o.precision, self.device, o.backend)
        self.model = load_generator(self.checkpoint)
        if o.threads and self.device == "cpu":
            torch.set_num_threads(o.threads)  # process-wide: torch has one intra-op pool
        self.mesh = MeshAnimator()
        self._lips = None

    @classmethod
    def check(cls) -> str | None:
        """Why this engine cannot run here, or None when it can (the checkpoint is checked on start)."""
        from importlib.util import find_spec

        if find_spec("torch") is None:
            return "the wav2lip face engine needs torch; pip install torch (https://pytorch.org for CUDA builds)"
        return MeshAnimator.check()

    def prepare(self, portrait: np.ndarray, source: str = "portrait") -> Wav2LipAvatar:
        from .crop import FaceCrop
        from .lips import COLD_DIVISOR, LipWorker
        from .runner import make_runner

        mesh = self.mesh.prepare(portrait, source)
        try:
            crop = FaceCrop.from_landmarks(mesh.face.points, portrait.shape, mesh.face.groups["oval"])
        except ValueError as exc:
            raise InputError(f"{source}: {exc}") from None
        o = self.options
        runner = make_runner(self.model, crop.network_input(portrait), self.device, self.precision, o.backend, o.threads)
        # per-shape set-up before the clock runs: on CUDA (cudnn.benchmark tunes each new
        # shape, tens of ms) every batch size live mode can form; elsewhere the two it forms most
        sizes = range(1, o.batch_size + 1) if self.device == "cuda" else {max(1, o.batch_size // COLD_DIVISOR), o.batch_size}
        for size in sizes:
            runner(np.full((size, 80, 16), -4.0, dtype=np.float32))
        log.info("wav2lip: %s, batch %d, face box %dx%d", runner.name, o.batch_size, *crop.size)
        if self._lips is not None:
            self._lips.stop()
        self._lips = LipWorker(runner, o.batch_size, runner.name)
        neural = dataclasses.replace(mesh, image=mesh.image.copy())
        return Wav2LipAvatar(mesh, neural, crop, self._lips)

    # -- speech, announced by the timeline (talker_stream.face.SpeechListener) ---------------
    def speech_placed(self, first_frame: int, audio: np.ndarray, clock: MediaClock) -> None:
        if self._lips is not None:
            self._lips.add(first_frame, audio, clock)

    def speech_cut(self, frame: int) -> None:
        if self._lips is not None:
            self._lips.cut(frame)

    def render(self, avatar: Wav2LipAvatar, params: FaceParams, out: np.ndarray | None = None,
               frame: int | None = None, realtime: bool = False) -> np.ndarray:
        """The mesh frame for *params*, with the neural mouth for *frame* when there is one.

        Without *frame* (a caller that knows no timeline) this is the mesh animator.
        *realtime* never waits for the network (the live loop); otherwise (the render job)
        a speaking frame waits for its mouth.
        """
        lower = avatar.lips.mouth(frame, realtime) if frame is not None else None
        if lower is None:
            return self.mesh.render(avatar.mesh, params, out)
        crop = avatar.crop
        avatar.neural.image[crop.paste_rows, crop.paste_cols] = crop.compose(avatar.mesh.image, lower)
        quiet = dataclasses.replace(params, **{name: 0.0 for name in MOUTH_PARAMS})
        return self.mesh.render(avatar.neural, quiet, out)

    def close(self) -> None:
        if self._lips is not None:
            self._lips.stop()
            self._lips = None
        self.mesh.close()
