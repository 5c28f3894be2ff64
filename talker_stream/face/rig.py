"""A 2-D face rig on the MediaPipe mesh: one displacement field per parameter.

Each parameter (jaw_open, smile, blink_l, ...) moves landmarks by a fixed basis scaled by
its value, like blendshapes; head pose rotates the 3-D landmarks and projects them back.
Two rings of extra points around the face fade head motion out into the background, so
only the head moves and everything outside the outer ring stays exactly as photographed.

The mouth is rigged from its four contours (inner and outer, upper and lower lip), so a
lip keeps its thickness as the jaw drops: the whole lower lip, the skin under it and the
chin ride on the jaw, the upper lip stays with the skull and lifts a little, and the
cheeks beside the corners stretch between the two. A negative ``jaw_open`` closes the
lips over whatever the photo shows between them (they meet on the midline at -0.3) and
below that presses them together (M, B, P: fully at -0.45): the red of both lips rolls
in and thins.

The warp's triangles come from the rest mesh with the mouth slit held a hair open, so no
triangle bridges from one lip into the other: however far the jaw drops, each lip is
moved only by its own triangles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .landmarks import CHIN, INNER_LIP_LOWER, INNER_LIP_UPPER, Face
from .params import FaceParams

N_MESH = 468  # iris points are left out: a closing lid must be able to cover the iris
# blinks are not mesh deformations (eyelids.py slides the lids over the source photo), and
# the tongue lives inside the mouth (mouth.py)
EXPRESSION = [n for n in FaceParams.names()
              if n not in ("yaw", "pitch", "roll", "lift", "blink_l", "blink_r", "tongue")]
BASES = EXPRESSION + ["lip_close", "lip_press"]
INNER_RING_SCALE, OUTER_RING_SCALE = 1.3, 1.9
INNER_RING_FOLLOW = 0.6  # how much of the head motion the hair/neck ring takes along
# the lip contours, each from the corner on the image's left to the one on its right
UPPER_INNER = np.array(INNER_LIP_UPPER)
LOWER_INNER = np.array(INNER_LIP_LOWER[::-1])
UPPER_OUTER = np.array([61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291])
LOWER_OUTER = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291])
_JAW = EXPRESSION.index("jaw_open")
CLOSE_AT = 0.3  # -jaw_open at which the lips have just met on the midline
PRESS_SPAN = 0.15  # ... and then press together, fully 0.15 further


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _near(points: np.ndarray, anchors: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian weight of each point by its distance to the nearest anchor."""
    d = np.min(np.linalg.norm(points[:, None, :] - anchors[None, :, :], axis=2), axis=1)
    return np.exp(-((d / radius) ** 2))


def _curve(xy: np.ndarray, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y of the contour through landmarks *idx* at abscissae *x* (held flat past its ends)."""
    p = xy[idx]
    order = np.argsort(p[:, 0], kind="stable")
    return np.interp(x, p[order, 0], p[order, 1])


def _open_slit(xy: np.ndarray, mw: float) -> np.ndarray:
    """The mesh with the lips held at least a hair apart (the warp's rest geometry).

    A photo with closed lips has the inner contours on top of each other, even crossed;
    triangles there could bridge from one lip into the other. Parting them by about a
    pixel makes every triangle in the slit join the upper inner lip to the lower one.
    At rest every displacement is zero, so the photo is still reproduced exactly."""
    xy = xy.copy()
    need = max(1.0, 0.015 * mw)
    n = len(UPPER_INNER)
    taper = np.sin(np.linspace(0, np.pi, n)) ** 0.5
    gap = xy[LOWER_INNER, 1] - xy[UPPER_INNER, 1]
    grow = np.maximum(need * taper - gap, 0.0) / 2
    grow[[0, -1]] = 0.0
    xy[UPPER_INNER, 1] -= grow
    xy[LOWER_INNER, 1] += grow
    return xy


@dataclass
class Rig:
    rest: np.ndarray  # V x 2: mesh points then ring points (the warp's vertices)
    depth: np.ndarray  # N_MESH: z of mesh points, for head rotation
    bases: np.ndarray  # P x V x 2, one per BASES entry
    pivot: np.ndarray  # 3: head rotation centre (neck)
    inner_ring: slice
    outer_ring: slice
    face_height: float
    mouth_width: float
    warp_rest: np.ndarray  # V x 2: *rest* with the lips a hair apart (the warp's triangles)
    # x0, y0, x1, y1 where the jaw tears the field, and the lower lip's lowest y at rest
    mouth_box: tuple[float, float, float, float, float]

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
        B = {n: np.zeros((V, 2)) for n in BASES}
        x, y = xy[:, 0], xy[:, 1]
        corners = g["corners"]

        # --- where each point sits relative to the mouth --------------------------------
        y_ui, y_li = _curve(xy, UPPER_INNER, x), _curve(xy, LOWER_INNER, x)
        y_uo, y_lo = _curve(xy, UPPER_OUTER, x), _curve(xy, LOWER_OUTER, x)
        mid = (y_ui + y_li) / 2  # the mouth line (flat beyond the corners)
        half = mw / 2
        outside = np.maximum(np.abs(x - mc[0]) - half, 0.0)  # horizontal distance past a corner
        band = 1.0 + 0.9 * outside
        lower_side = _smoothstep((y - mid) / band + 0.5)  # 1: rides on the jaw
        upper_lip = np.zeros(N_MESH, bool)
        lower_lip = np.zeros(N_MESH, bool)
        span = np.abs(x - mc[0]) <= half + 1
        upper_lip[span & (y >= y_uo - 0.5) & (y <= mid)] = True
        lower_lip[span & (y <= y_lo + 0.5) & (y > mid)] = True
        # the contours themselves by name: closed lips may cross each other in the photo
        contour = np.concatenate([UPPER_INNER, UPPER_OUTER, LOWER_INNER, LOWER_OUTER])
        upper_lip[contour] = lower_lip[contour] = False
        upper_lip[UPPER_INNER] = upper_lip[UPPER_OUTER] = True
        lower_lip[LOWER_INNER] = lower_lip[LOWER_OUTER] = True
        for k in (UPPER_INNER[0], UPPER_INNER[-1], UPPER_OUTER[0], UPPER_OUTER[-1]):
            upper_lip[k] = lower_lip[k] = False
        lower_side[lower_lip] = 1.0
        lower_side[upper_lip] = 0.0

        # --- jaw: the lower lip, the skin under it and the chin drop as one --------------
        J = 0.10 * H
        lateral = np.exp(-(((x - mc[0]) / (0.46 * face.width)) ** 2))
        chin_y = xy[CHIN, 1]
        below = np.clip((y - mc[1]) / max(chin_y - mc[1], 1.0), 0.0, 1.0)
        gain = 0.92 + 0.08 * below  # the chin, further from the hinge, travels a little more
        gain[lower_lip] = 0.92
        # the lower lip is soft: it bends, dropping less towards the corners (an oval opening)
        under = np.clip((y - y_lo) / (0.1 * H), 0.0, None)
        bend = 1 - 0.4 * np.clip(np.abs(x - mc[0]) / half, 0.0, 1.0) ** 2 * np.exp(-(under**2))
        jaw = np.zeros((V, 2))
        jaw[:N_MESH, 1] = J * lower_side * lateral * gain * bend
        # the upper lip lifts a little and keeps its thickness; the skin above follows less
        above = np.clip((mid - y) / (0.12 * H), 0.0, 1.0)
        lift = -0.05 * J * np.exp(-((outside / (0.1 * H)) ** 2)) * (1 - above) * (1 - lower_side)
        jaw[:N_MESH, 1] += lift
        # the corners drop a third as far, and take the skin around them along (the
        # modiolus): no crease is stretched out of a corner that moves alone
        blob = _near(xy, xy[corners], 0.06 * H) * (1 - lower_side)
        jaw[:N_MESH, 1] += (0.38 * J - jaw[:N_MESH, 1]) * blob
        jaw[corners, 1] = 0.38 * J
        jaw[:N_MESH, 0] -= (x - mc[0]) * 0.06 * _near(xy, xy[corners], 0.08 * H)
        B["jaw_open"] = jaw

        lips = g["lips"]
        near_mouth = _near(xy, xy[lips], 0.12 * H)
        side = np.sign(x - mc[0])
        body_up = upper_lip & ~np.isin(np.arange(N_MESH), UPPER_INNER)
        body_low = lower_lip & ~np.isin(np.arange(N_MESH), LOWER_INNER)
        # wide (ee, s): lips stretch sideways and thin, cheeks follow a little
        B["mouth_wide"][:N_MESH, 0] = (x - mc[0]) * 0.16 * near_mouth
        B["mouth_wide"][corners, 1] -= 0.006 * H
        # ... and thin: each lip loses a fifth of its thickness (nothing where it tapers out)
        B["mouth_wide"][:N_MESH, 1] += np.where(body_up, 0.2 * (y_ui - y), 0.0) + np.where(body_low, 0.2 * (y_li - y), 0.0)
        # round (oo, w): lips pucker towards the centre, push out (look fuller), the opening rounds
        B["mouth_round"][:N_MESH, 0] = -(x - mc[0]) * 0.28 * near_mouth
        lip_any = upper_lip | lower_lip
        lip_any[corners] = True  # the corners pucker with the lips they join
        B["mouth_round"][:N_MESH, 0] -= np.where(lip_any, (x - mc[0]) * 0.08, 0.0)
        B["mouth_round"][UPPER_OUTER, 1] -= 0.015 * H
        B["mouth_round"][LOWER_OUTER, 1] += 0.015 * H
        B["mouth_round"][:N_MESH][body_up, 1] -= 0.008 * H
        B["mouth_round"][:N_MESH][body_low, 1] += 0.008 * H

        # smile: corners up and out, the cheeks rise and bunch, the folds beside the nose deepen
        corner_w = _near(xy, xy[corners], 0.16 * H)
        B["smile"][:N_MESH, 1] = -0.06 * H * corner_w
        B["smile"][:N_MESH, 0] = 0.05 * mw * corner_w * side
        B["frown"][:N_MESH, 1] = 0.05 * H * corner_w
        B["frown"][:N_MESH, 0] = -0.02 * mw * corner_w * side
        for s in ("l", "r"):
            eye_low = xy[g[f"eye_{s}_lower"]].mean(axis=0)
            corner = xy[corners[0]] if (eye_low[0] - mc[0]) * (xy[corners[0], 0] - mc[0]) > 0 else xy[corners[1]]
            apple = eye_low + 0.45 * (corner - eye_low)  # the cheek's round, below the eye
            fold = corner + 0.55 * (eye_low - corner) + np.array([0.06 * (mc[0] - corner[0]), 0.0])
            aw = np.exp(-((np.linalg.norm(xy - apple, axis=1) / (0.11 * H)) ** 2))
            fw = np.exp(-((np.linalg.norm(xy - fold, axis=1) / (0.07 * H)) ** 2))
            B["smile"][:N_MESH, 1] -= 0.03 * H * aw + 0.02 * H * fw
            B["smile"][:N_MESH, 0] += 0.015 * H * fw * np.sign(corner[0] - mc[0])
        B["smile"][:N_MESH][upper_lip, 1] -= 0.008 * H  # the upper lip lifts off the teeth

        # closing the lips over a parted photo: everything between them folds onto the midline
        hg = (y_li - y_ui) / 2  # half the rest gap at each point's abscissa
        hg = np.maximum(hg, 0.0)
        close = np.zeros((V, 2))
        dist_up = np.clip((y_uo - y) / (0.07 * H), 0.0, None)
        dist_low = np.clip((y - y_lo) / (0.07 * H), 0.0, None)
        lat = np.exp(-((outside / (0.05 * H)) ** 2))
        w_up = np.where(upper_lip, 0.75, 0.45 * np.exp(-dist_up**2)) * lat * (1 - lower_side)
        w_low = np.where(lower_lip, 0.75, 0.45 * np.exp(-dist_low**2)) * lat * lower_side
        close[:N_MESH, 1] = hg * (w_up - w_low)
        close[UPPER_INNER, 1] = hg[UPPER_INNER]
        close[LOWER_INNER, 1] = -hg[LOWER_INNER]
        B["lip_close"] = close
        # pressing (M, B, P): the red of each lip rolls in towards the seam; the skin bulges
        press = np.zeros((V, 2))
        # (measured from where the closure left them: they roll towards the seam, never past it)
        shut_y = y + close[:N_MESH, 1]
        press[:N_MESH, 1] = np.where(body_up | body_low, 0.45 * (mid - shut_y), 0.0)
        skin = ~(upper_lip | lower_lip)
        press[:N_MESH, 1] += np.where(skin, 0.012 * H * near_mouth * np.sign(mid - y), 0.0) * lat
        press[corners, 0] = -(x[corners] - mc[0]) * 0.03
        B["lip_press"] = press

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
        bases = np.stack([B[n] for n in BASES])
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
            warp_rest=np.vstack([_open_slit(xy, mw), inner, outer]),
            # the tear: from just above the slit down past the lower lip at its widest opening
            mouth_box=(float(mouth_l[0] - 0.06 * mw), float(min(mouth_l[1], mouth_r[1], xy[UPPER_INNER, 1].min()) - 2),
                       float(mouth_r[0] + 0.06 * mw), float(y_lo.max() + 0.13 * H + 0.1 * mw),
                       float(xy[LOWER_OUTER, 1].max() + 0.05 * mw)),
        )

    @staticmethod
    def weights(p: FaceParams) -> np.ndarray:
        """The weight of each basis (BASES order) for one frame's parameters."""
        w = p.vector(EXPRESSION)
        jaw = p.jaw_open
        w[_JAW] = max(jaw, 0.0)
        shut = max(-jaw, 0.0)
        c = min(shut / CLOSE_AT, 1.0)
        press = min(max(shut - CLOSE_AT, 0.0) / PRESS_SPAN, 1.0)
        return np.concatenate([w, [c * c * (3 - 2 * c), press]])

    def displacement(self, p: FaceParams) -> np.ndarray:
        """Per-vertex displacement (V x 2) in pixels for one frame's parameters."""
        weights = self.weights(p)
        # einsum, not tensordot/@: these are tiny products, and BLAS would wake its thread
        # pool, whose threads then spin-wait and burn a whole core between frames
        d = np.einsum("p,pvc->vc", weights, self.bases)
        pose = self._pose(p)
        if pose is not None:
            R, lift = pose
            # the mesh about the pivot, in 3-D (x, y from the frame, z from the photo)
            mesh = self.__dict__.get("_mesh3")
            if mesh is None:
                mesh = np.column_stack([self.rest[:N_MESH], self.depth]) - self.pivot
                ring = self.rest[self.inner_ring] - self.pivot[:2]
                self.__dict__["_mesh3"] = mesh
                self.__dict__["_ring3"] = np.column_stack([ring, np.zeros(len(ring))])
            m = mesh.copy()
            m[:, :2] += d[:N_MESH]
            moved = np.einsum("vi,ji->vj", m, R)
            d[:N_MESH] = moved[:, :2] - mesh[:, :2]
            d[:N_MESH, 1] += lift
            ring3 = self.__dict__["_ring3"]
            rotated = np.einsum("vi,ji->vj", ring3, R)
            d[self.inner_ring] = INNER_RING_FOLLOW * (rotated[:, :2] - ring3[:, :2] + np.array([0.0, lift]))
        return d

    def head_motion(self, p: FaceParams, point: np.ndarray, depth: float) -> np.ndarray:
        """Where a point fixed to the skull (x, y at rest, and its depth) is in this frame."""
        pose = self._pose(p)
        if pose is None:
            return point.astype(np.float64).copy()
        R, lift = pose
        q = np.array([point[0], point[1], depth]) - self.pivot
        moved = R @ q + self.pivot
        return np.array([moved[0], moved[1] + lift])

    def _pose(self, p: FaceParams) -> tuple[np.ndarray, float] | None:
        if not (p.yaw or p.pitch or p.roll or p.lift):
            return None
        key = (p.yaw, p.pitch, p.roll, p.lift)
        cached = self.__dict__.get("_pose_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        pose = self._rotation(p)
        self.__dict__["_pose_cache"] = (key, pose)  # the painter asks again for the same frame
        return pose

    def _rotation(self, p: FaceParams) -> tuple[np.ndarray, float]:
        """Rz @ Ry @ Rx (roll, yaw, pitch), written out: scalar math, no BLAS, no temporaries."""
        ca, sa = math.cos(math.radians(p.pitch)), math.sin(math.radians(p.pitch))
        cb, sb = math.cos(math.radians(p.yaw)), math.sin(math.radians(p.yaw))
        cr, sr = math.cos(math.radians(p.roll)), math.sin(math.radians(p.roll))
        R = np.array([
            [cr * cb, cr * sb * sa - sr * ca, cr * sb * ca + sr * sa],
            [sr * cb, sr * sb * sa + cr * ca, sr * sb * ca - cr * sa],
            [-sb, cb * sa, cb * ca],
        ])
        return R, -p.lift * self.face_height
