"""The built-in face engine: MediaPipe landmarks once, a sparse mesh warp per frame."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .eyelids import EyelidPainter
from .landmarks import Face, FaceFinder
from .mouth import MouthPainter
from .params import FaceParams
from .rig import N_MESH, Rig
from .warp import MeshWarper


@dataclass
class MeshAvatar:
    """Everything about one portrait that the per-frame work reuses."""

    image: np.ndarray
    face: Face
    rig: Rig
    warper: MeshWarper
    mouth: MouthPainter
    eyelids: EyelidPainter

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.image.shape[:2]
        return w, h

    def lip_travel(self, d: np.ndarray) -> float:
        """How far the lower lip moved against the upper one (px); 0 when the lips hold."""
        move = abs(float(d[14, 1] - d[13, 1]))
        # below a few pixels the fixed-point step is right to within a fraction of a pixel
        return move if move > max(0.75, 0.04 * self.rig.mouth_width) else 0.0

    def head_mask(self) -> np.ndarray:
        """Pixels the animator may change (True); everything else stays as photographed."""
        m = np.zeros(self.image.shape[:2], dtype=bool)
        w = self.warper
        m[w.y0 : w.y1, w.x0 : w.x1] = w.mask
        return m


class MeshAnimator:
    """Moves the portrait's own pixels: no neural network, no GPU, hundreds of fps."""

    name = "mesh"
    native_modules = ("mediapipe", "cv2")  # preflight: a rebuilt runtime is probed again

    def __init__(self, **_: object) -> None:
        self._finder: FaceFinder | None = None

    @classmethod
    def check(cls) -> str | None:
        """Why this engine cannot run here, or None when it can."""
        from importlib.util import find_spec
        from pathlib import Path

        spec = find_spec("mediapipe")
        if spec is None or not spec.submodule_search_locations:
            return "mediapipe is not installed; pip install 'mediapipe==0.10.21'"
        model = Path(spec.submodule_search_locations[0]) / "modules/face_landmark/face_landmark_with_attention.tflite"
        if not model.is_file():
            return f"mediapipe has no face mesh model ({model.name}); newer releases ship none: pip install 'mediapipe==0.10.21'"
        return None

    def prepare(self, portrait: np.ndarray, source: str = "portrait") -> MeshAvatar:
        if self._finder is None:
            self._finder = FaceFinder()
        face = self._finder.find_one(portrait, source)
        rig = Rig.build(face)
        warper = MeshWarper(rig.warp_rest, portrait.shape[:2], columns=rig.mouth_box)
        mouth = MouthPainter(portrait, face, rig)
        eyelids = EyelidPainter(face, portrait.shape[:2])
        return MeshAvatar(np.ascontiguousarray(portrait), face, rig, warper, mouth, eyelids)

    def render(self, avatar: MeshAvatar, params: FaceParams, out: np.ndarray | None = None) -> np.ndarray:
        frame = avatar.image.copy() if out is None else out
        d = avatar.rig.displacement(params)
        source = avatar.eyelids.close(avatar.image, params.blink_l, params.blink_r)
        avatar.warper.warp(source, d, frame, exact=avatar.lip_travel(d))
        moved = avatar.rig.rest[:N_MESH] + d[:N_MESH]
        avatar.mouth.paint(frame, moved, params)
        return frame

    def close(self) -> None:
        if self._finder is not None:
            self._finder.close()
            self._finder = None
