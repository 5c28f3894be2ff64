"""Finding the face once: MediaPipe's 478-point face mesh on the portrait.

Landmark groups are derived from MediaPipe's own connection sets plus geometry (which
points are above the eye-corner line, for example), so the rig does not hard-code more
index lists than it must.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import EngineUnavailable, InputError
from ..quiet import native_stderr_quiet

log = logging.getLogger(__name__)

MIN_FACE_PX = 40  # below this the mesh is too coarse to animate a mouth
SMALL_FACE_PX = 80

# The few fixed points the rig needs by name (MediaPipe face mesh indices).
INNER_LIP_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LIP_LOWER = [308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78]
CHIN, FOREHEAD, NOSE_TIP = 152, 10, 1


def import_mediapipe():
    """mediapipe, imported quietly and quickly.

    Its package import pulls in matplotlib.pyplot (for drawing utilities we never use);
    the Agg backend skips the GUI probing, and GLOG silences the C++ info lines.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import mediapipe
    except ImportError as exc:
        raise EngineUnavailable(
            f"the mesh animator needs mediapipe ({exc}); run: pip install 'mediapipe==0.10.21'"
        ) from None
    return mediapipe


def _group(name: str) -> np.ndarray:
    from mediapipe.python.solutions import face_mesh_connections as c

    return np.array(sorted({i for edge in getattr(c, name) for i in edge}))


@dataclass
class Face:
    """Landmarks of one face in pixel coordinates: x, y and a relative depth z."""

    points: np.ndarray  # 478 x 3 float64

    @property
    def box(self) -> tuple[float, float, float, float]:
        x, y = self.points[:468, 0], self.points[:468, 1]
        return float(x.min()), float(y.min()), float(x.max()), float(y.max())

    @property
    def width(self) -> float:
        x0, _, x1, _ = self.box
        return x1 - x0

    @property
    def height(self) -> float:
        return float(self.points[CHIN, 1] - self.points[FOREHEAD, 1])

    @cached_property
    def groups(self) -> dict[str, np.ndarray]:
        g = {
            "lips": _group("FACEMESH_LIPS"),
            "oval": _group("FACEMESH_FACE_OVAL"),
            "brow_l": _group("FACEMESH_LEFT_EYEBROW"),
            "brow_r": _group("FACEMESH_RIGHT_EYEBROW"),
            "nose": _group("FACEMESH_NOSE"),
        }
        for side in ("l", "r"):
            eye = _group("FACEMESH_LEFT_EYE" if side == "l" else "FACEMESH_RIGHT_EYE")
            xy = self.points[eye, :2]
            a, b = eye[np.argmin(xy[:, 0])], eye[np.argmax(xy[:, 0])]
            g[f"eye_{side}"] = eye
            g[f"eye_{side}_upper"], g[f"eye_{side}_lower"] = self._split_by_line(eye, a, b)
        g["inner_upper"] = np.array(INNER_LIP_UPPER)
        g["inner_lower"] = np.array(INNER_LIP_LOWER[1:-1])
        lips = g["lips"]
        inner = set(INNER_LIP_UPPER) | set(INNER_LIP_LOWER)
        outer = np.array([i for i in lips if i not in inner])
        a, b = outer[np.argmin(self.points[outer, 0])], outer[np.argmax(self.points[outer, 0])]
        g["outer_upper"], g["outer_lower"] = self._split_by_line(outer, a, b)
        g["corners"] = np.array([a, b, INNER_LIP_UPPER[0], INNER_LIP_UPPER[-1]])
        return g

    def _split_by_line(self, idx: np.ndarray, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Points of *idx* above and below the line through landmarks a and b."""
        pa, pb = self.points[a, :2], self.points[b, :2]
        d = pb - pa
        rel = self.points[idx, :2] - pa
        side = d[0] * rel[:, 1] - d[1] * rel[:, 0]  # > 0: below in image coordinates
        return idx[side < 0], idx[side > 0]

    @property
    def eye_distance(self) -> float:
        cl = self.points[self.groups["eye_l"], :2].mean(axis=0)
        cr = self.points[self.groups["eye_r"], :2].mean(axis=0)
        return float(np.linalg.norm(cl - cr))


class FaceFinder:
    """MediaPipe face mesh for still images (all models ship inside mediapipe==0.10.21)."""

    def __init__(self, max_faces: int = 4) -> None:
        mp = import_mediapipe()
        with native_stderr_quiet():  # TFLite/absl start-up chatter
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=0.5
            )

    def close(self) -> None:
        self._mesh.close()

    def find_all(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        with native_stderr_quiet():  # the graph's first run logs warnings about itself
            result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for lm in result.multi_face_landmarks or []:
            pts = np.array([[p.x * w, p.y * h, p.z * w] for p in lm.landmark], dtype=np.float64)
            faces.append(Face(pts))
        return sorted(faces, key=lambda f: f.width * f.height, reverse=True)

    def find_one(self, rgb: np.ndarray, source: str = "portrait") -> Face:
        """The face to animate: the largest one, with a warning when there are several."""
        faces = self.find_all(rgb)
        if not faces:
            raise InputError(
                f"no face found in {source}; use a front-facing, well-lit photo with the whole face visible "
                f"and at least {SMALL_FACE_PX} px wide (smaller faces are not detected: crop closer)"
            )
        if len(faces) > 1:
            log.warning("%d faces found in %s; animating the largest", len(faces), source)
        face = faces[0]
        if face.width < MIN_FACE_PX:
            raise InputError(
                f"the face in {source} is only {face.width:.0f} px wide; crop closer so it is at least {SMALL_FACE_PX} px"
            )
        if face.width < SMALL_FACE_PX:
            log.warning("the face in %s is small (%.0f px wide); crop closer for a sharper mouth", source, face.width)
        return face
