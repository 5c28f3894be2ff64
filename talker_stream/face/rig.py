"""A 2-D face rig on the MediaPipe mesh: one displacement field per parameter.

Each parameter (jaw_open, smile, blink_l, ...) moves landmarks by a fixed basis scaled by
its value, like blendshapes; head pose rotates the 3-D landmarks and projects them back.
Two rings of extra points around the face fade head motion out into the background, so
only the head moves and everything outside the outer ring stays exactly as photographed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .landmarks import CHIN, INNER_LIP_LOWER, INNER_LIP_UPPER, Face
from .params import FaceParams

N_MESH = 468  # iris points are left out: a closing lid must be able to cover the iris
# blinks are not mesh deformations: eyelids.py slides the lids over the source photo
EXPRESSION = [n for n in FaceParams.names() if n not in ("yaw", "pitch", "roll", "lift", "blink_l", "blink_r")]
INNER_RING_SCALE, OUTER_RING_SCALE = 1.3, 1.9
INNER_RING_FOLLOW = 0.6  # how much of the head motion the hair/neck ring takes along


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _near(points: np.ndarray, anchors: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian weight of each point by its distance to the nearest anchor."""
    d = np.min(np.linalg.norm(points[:, None, :] - anchors[None, :, :], axis=2), axis=1)
    return np.exp(-((d / radius) ** 2))


@dataclass
class Rig:
    rest: np.ndarray  # V x 2: mesh points then ring points (the warp's vertices)
    depth: np.ndarray  # N_MESH: z of mesh points, for head rotation
    bases: np.ndarray  # P x V x 2, one per EXPRESSION parameter
    pivot: np.ndarray  # 3: head rotation centre (neck)
    inner_ring: slice
    outer_ring: slice
    face_height: float
    mouth_width: float

    @classmethod
    def build(cls, face: Face) -> "Rig":
        pts = face.points[:N_MESH]
        xy = pts[:, :2]
        g = face.groups
        H = face.height
        c = xy[g["oval"]].mean(axis=0)
        oval = xy[g["oval"]]
        inner = c + (oval - c) * INNER_RING_SCALE
        outer = c + (oval - c) * OUTER_RING_SCALE
        rest = np.vstack([xy, inner, outer])
        V = len(rest)

        mouth_l, mouth_r = xy[INNER_LIP_UPPER[0]], xy[INNER_LIP_UPPER[-1]]
        mw = float(np.linalg.norm(mouth_r - mouth_l))
        mc = (mouth_l + mouth_r) / 2
        lip_low = xy[INNER_LIP_LOWER].max(axis=0)[1]
        B = {n: np.zeros((V, 2)) for n in EXPRESSION}
        x, y = xy[:, 0], xy[:, 1]

        # jaw: everything below the mouth-corner line drops, most at the chin and lower lip
        J = 0.10 * H
        below = _smoothstep((y - mc[1]) / max(lip_low - mc[1], 1.0))
        lateral = np.exp(-(((x - mc[0]) / (0.5 * face.width)) ** 2))
        B["jaw_open"][:N_MESH, 1] = J * below * lateral
        B["jaw_open"][g["inner_upper"], 1] = -0.10 * J
        B["jaw_open"][g["outer_upper"], 1] = -0.06 * J
        corners = g["corners"]
        B["jaw_open"][corners, 1] = 0.35 * J
        B["jaw_open"][corners, 0] = -(x[corners] - mc[0]) * 0.06

        lips = g["lips"]
        near_mouth = _near(xy, xy[lips], 0.12 * H)
        # wide (ee, s): lips stretch sideways, cheeks follow a little
        B["mouth_wide"][:N_MESH, 0] = (x - mc[0]) * 0.16 * near_mouth
        # round (oo, w): lips pucker towards the centre
        B["mouth_round"][:N_MESH, 0] = -(x - mc[0]) * 0.28 * near_mouth
        B["mouth_round"][g["outer_upper"], 1] -= 0.015 * H
        B["mouth_round"][g["outer_lower"], 1] += 0.015 * H

        corner_w = _near(xy, xy[corners], 0.16 * H)
        side = np.sign(x - mc[0])
        B["smile"][:N_MESH, 1] = -0.06 * H * corner_w
        B["smile"][:N_MESH, 0] = 0.05 * mw * corner_w * side
        B["frown"][:N_MESH, 1] = 0.05 * H * corner_w
        B["frown"][:N_MESH, 0] = -0.02 * mw * corner_w * side

        for s in ("l", "r"):
            brow = g[f"brow_{s}"]
            bw = _near(xy, xy[brow], 0.10 * H)
            B["brow_raise"][:N_MESH, 1] -= 0.07 * H * bw
            up, low = g[f"eye_{s}_upper"], g[f"eye_{s}_lower"]
            B["brow_raise"][up, 1] -= 0.012 * H
            # inner brow = the brow end nearer the face centre line
            inner_end = brow[np.argmin(np.abs(x[brow] - c[0]))]
            iw = _near(xy, xy[[inner_end]], 0.09 * H)
            toward_c = np.sign(c[0] - x[inner_end])
            B["brow_furrow"][:N_MESH, 1] += 0.045 * H * iw
            B["brow_furrow"][:N_MESH, 0] += 0.03 * H * iw * toward_c
            B["brow_sad"][:N_MESH, 1] -= 0.05 * H * iw
            B["eye_wide"][up, 1] -= 0.006 * H
            B["eye_wide"][low, 1] += 0.006 * H
            B["squint"][low, 1] -= 0.016 * H
            B["squint"][up, 1] += 0.008 * H
            B["smile"][low, 1] -= 0.008 * H
        bases = np.stack([B[n] for n in EXPRESSION])
        pivot = np.array([c[0], xy[CHIN, 1] + 0.25 * H, 0.0])
        return cls(
            rest=rest,
            depth=pts[:, 2].copy(),
            bases=bases,
            pivot=pivot,
            inner_ring=slice(N_MESH, N_MESH + len(inner)),
            outer_ring=slice(N_MESH + len(inner), V),
            face_height=H,
            mouth_width=mw,
        )

    def displacement(self, p: FaceParams) -> np.ndarray:
        """Per-vertex displacement (V x 2) in pixels for one frame's parameters."""
        weights = p.vector(EXPRESSION)
        # einsum, not tensordot/@: these are tiny products, and BLAS would wake its thread
        # pool, whose threads then spin-wait and burn a whole core between frames
        d = np.einsum("p,pvc->vc", weights, self.bases)
        pose = self._pose(p)
        if pose is not None:
            R, lift = pose
            mesh = np.column_stack([self.rest[:N_MESH] + d[:N_MESH], self.depth]) - self.pivot
            moved = np.einsum("vi,ji->vj", mesh, R) + self.pivot
            d[:N_MESH] = moved[:, :2] - self.rest[:N_MESH]
            d[:N_MESH, 1] += lift
            ring = self.rest[self.inner_ring] - self.pivot[:2]
            ring3 = np.einsum("vi,ji->vj", np.column_stack([ring, np.zeros(len(ring))]), R)
            d[self.inner_ring] = INNER_RING_FOLLOW * (ring3[:, :2] - ring + np.array([0.0, lift]))
        return d

    def _pose(self, p: FaceParams) -> tuple[np.ndarray, float] | None:
        if not (p.yaw or p.pitch or p.roll or p.lift):
            return None
        a, b, r = np.radians([p.pitch, p.yaw, p.roll])
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        return rz @ ry @ rx, -p.lift * self.face_height
