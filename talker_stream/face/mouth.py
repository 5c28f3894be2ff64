"""The inside of an open mouth: teeth, tongue and a cavity with depth, all from the photo.

A warp can only stretch the photo; when the lips part wider than they are in the photo,
something must be drawn between them or the mouth reads as stretched skin. What is drawn
is built once per portrait, in the photo's own colours and light:

- *Teeth.* Two rows of teeth live in the skull's frame, not the lips': the upper row moves
  with the head only, the lower row with the head and the jaw. When the photo shows teeth,
  the upper row *is* the photo's teeth (their own texture and edge), continued by the model
  only where the photo's lips hid them. Otherwise both rows are a shaded model (crowns of
  anatomical widths, rounded incisal edges, each tooth darker at its sides, the arch
  darker towards the back) coloured from the face's own skin light. The upper lip shades
  the top of the upper teeth, more as it comes down over them.
- *Cavity and tongue.* The cavity is lit from the front: reddish near the lips, darkest
  deep in the middle (the throat). The tongue lies behind the lower teeth, its dome lit on
  top; on L, N, T, D and TH (``FaceParams.tongue``) its tip rises towards the upper teeth.
- *Edges.* The opening is cut by the moved inner-lip contours with a soft ramp a couple
  of pixels wide (per column, corrected for the contour's slope), never a polygon outline.
- *No pops.* Everything is faded in by how far the lips have parted beyond their rest gap,
  so at rest the photo's own mouth is untouched and the interior grows continuously.
"""
from __future__ import annotations

import cv2
import numpy as np

from .landmarks import Face
from .params import FaceParams
from .rig import BASES, LOWER_INNER, LOWER_OUTER, N_MESH, UPPER_INNER, UPPER_OUTER, Rig

CHEEKS = np.array([50, 280, 205, 425, 101, 330, 36, 266])
EYES = (np.array([33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]),
        np.array([263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]))
IVORY = np.array([1.0, 0.97, 0.91])
REF_SKIN = np.array([224.0, 172.0, 140.0])
# tooth boundaries from the midline, in mouth widths (frontal projection of the arch)
UPPER_TEETH = np.array([0.0, 0.165, 0.295, 0.39, 0.46, 0.515, 0.56, 0.60])
LOWER_TEETH = np.array([0.0, 0.105, 0.215, 0.315, 0.395, 0.46, 0.515, 0.56])
SUPER = 3  # supersampling of the prepared teeth images
_INNER_BOTH = np.concatenate([UPPER_INNER, LOWER_INNER])
_MIDDLE = np.array([4, 5, 6, 15, 16, 17])  # the three middle points of each inner lip
LOWER_TEETH_RIDE = 0.8
REST_SLACK = 0.04  # extra opening (in mouth widths) over which the interior fades in


def _lum(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _curve(points: np.ndarray, x: np.ndarray) -> np.ndarray:
    px = points[:, 0]
    if not (px[1:] >= px[:-1]).all():
        order = np.argsort(px, kind="stable")
        return np.interp(x, px[order], points[order, 1])
    return np.interp(x, px, points[:, 1])


def _clip(x, lo: float, hi: float):
    """np.clip without its Python wrapper (a few microseconds a call, many calls a frame)."""
    return np.minimum(np.maximum(x, lo), hi)


def _slope(y: np.ndarray) -> np.ndarray:
    """dy/dx of a curve sampled at unit steps (central differences, one-sided at the ends)."""
    g = np.empty_like(y)
    if len(y) < 2:
        g[:] = 0
        return g
    g[1:-1] = (y[2:] - y[:-2]) * 0.5
    g[0], g[-1] = y[1] - y[0], y[-1] - y[-2]
    return g


def _teeth_row(width_s: np.ndarray, edge: np.ndarray, crown: np.ndarray, bounds: np.ndarray,
               colour: np.ndarray, dark: np.ndarray, ys: np.ndarray, upper: bool) -> np.ndarray:
    """RGBA (float, 0..1 alpha) of a row of model teeth on a (len(ys), len(width_s)) grid.

    *width_s*: each column's offset from the midline in mouth widths (signed);
    *edge*: the incisal edge's y per column; *crown*: crown length per column (px);
    *ys*: the rows' y. Upper teeth hang from their gums down to the edge, lower ones stand
    on theirs up to it."""
    s = np.abs(width_s)
    k = np.clip(np.searchsorted(bounds, s, side="right") - 1, 0, len(bounds) - 2)
    a, b = bounds[k], bounds[k + 1]
    q = np.clip((s - a) / (b - a), 0.0, 1.0)  # 0..1 across one tooth
    # each crown is rounded: shorter at its sides, canines (k == 2) pointed
    round_off = np.where(k == 2, 0.12 * np.abs(2 * q - 1) ** 1.5, 0.05 * np.abs(2 * q - 1) ** 3)
    length = crown * (1 - round_off)
    edge_k = edge - np.where(upper, 1, -1) * crown * round_off * 0.6
    y = ys[:, None]
    if upper:
        inside = (y <= edge_k) & (y >= edge_k - length)
        t = np.clip((edge_k - y) / np.maximum(length, 1e-3), 0.0, 1.0)  # 0 at the edge
    else:
        inside = (y >= edge_k) & (y <= edge_k + length)
        t = np.clip((y - edge_k) / np.maximum(length, 1e-3), 0.0, 1.0)
    back = np.clip(s / bounds[-1], 0.0, 1.0)
    shade = (0.8 + 0.2 * np.sin(np.pi * q) ** 0.6)  # convex crowns: darker where they meet
    shade = shade * (1 - 0.45 * back**2)  # the arch turns away from the light
    body = 0.90 + 0.10 * np.sin(np.pi * np.clip(t * 1.3, 0, 1))  # a little brighter mid-crown
    tip = np.clip(1 - t / 0.12, 0.0, 1.0)  # translucent incisal edge: a touch grey-blue
    f = (shade * body * (1 - 0.08 * tip))[..., None]
    rgb = colour[None, None, :] * f + dark[None, None, :] * (1 - f)  # shadows take the mouth's warm light
    alpha = inside.astype(np.float64) * np.clip((bounds[-1] - s) / 0.04, 0.0, 1.0)[None, :]
    return np.dstack([rgb, alpha])


class MouthPainter:
    def __init__(self, image: np.ndarray, face: Face, rig: Rig) -> None:
        rest = rig.rest[:N_MESH]
        self.rig = rig
        self.rest = rest
        mw = rig.mouth_width
        self.mouth_width = mw
        self.rest_gap = self._gap(rest)
        h, w = image.shape[:2]
        img = image.astype(np.float32)

        # --- the photo's colours and light ----------------------------------------------
        lips_mask = np.zeros((h, w), np.uint8)
        outer = np.vstack([rest[UPPER_OUTER], rest[LOWER_OUTER[::-1]]])
        cv2.fillPoly(lips_mask, [np.round(outer).astype(np.int32)], 1)
        inner = np.vstack([rest[UPPER_INNER], rest[LOWER_INNER[::-1]]])
        cv2.fillPoly(lips_mask, [np.round(inner).astype(np.int32)], 0)
        lip_px = img[lips_mask > 0]
        self.lip = np.median(lip_px, axis=0) if len(lip_px) > 5 else np.array([170.0, 90, 90])
        r = max(2, int(0.03 * face.height))
        cheeks = []
        for i in CHEEKS:
            cx, cy = np.round(rest[i]).astype(int)
            cheeks.append(img[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1].reshape(-1, 3))
        skin_px = np.vstack(cheeks)
        self.skin = np.median(skin_px, axis=0)
        oval = np.zeros((h, w), np.uint8)
        cv2.fillPoly(oval, [np.round(rest[face.groups["oval"]]).astype(np.int32)], 1)
        face_lum = _lum(img[oval > 0])
        self.highlight = float(np.percentile(face_lum, 92)) if len(face_lum) else 200.0

        # the cavity and tongue in the lips' own red, darkened by the mouth's shadow
        lip_n = self.lip / max(float(self.lip.max()), 1.0)
        self.cavity_edge = (lip_n * 0.6 + np.array([0.14, 0.0, 0.02])) * 0.62 * self.highlight
        self.cavity_deep = (lip_n * 0.5 + np.array([0.14, 0.02, 0.03])) * 0.16 * self.highlight
        self.tongue_col = (lip_n * 0.6 + np.array([0.36, 0.14, 0.17])) * 0.92 * self.highlight

        # --- teeth: the photo's when it shows them, else the model's ---------------------
        self.photo_teeth = self._find_teeth(img, rest)
        if self.photo_teeth is not None:
            self.teeth = self.photo_teeth
        else:
            self.teeth = self._model_teeth_colour(img, rest)
        self._build_teeth(img, rest)
        # skull-fixed anchors for the rows: the mouth's centre, at the depth of the lips
        self.anchor = np.array([(rest[UPPER_INNER[0], 0] + rest[UPPER_INNER[-1], 0]) / 2,
                                (rest[13, 1] + rest[14, 1]) / 2])
        self.anchor_depth = float(rig.depth[13])
        # the lower teeth drop a little less than the lower lip, which rolls down off them
        self.jaw_drop = LOWER_TEETH_RIDE * float(rig.bases[BASES.index("jaw_open"), 14, 1])

    @staticmethod
    def _gap(points: np.ndarray) -> float:
        up = points[UPPER_INNER[4:7], 1].mean()
        low = points[LOWER_INNER[4:7], 1].mean()
        return float(low - up)

    # -- prepare ---------------------------------------------------------------------------

    def _model_teeth_colour(self, img: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """Enamel as this photo's light would show it: white-balanced by the whites of the
        eyes (the face's own neutral), warmed a little by the skin's bounce light, and as
        bright as the eyes' whites (or the skin's highlights when the eyes are too small)."""
        white = None
        for eye in EYES:
            m = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(m, [np.round(rest[eye]).astype(np.int32)], 1)
            px = img[m > 0]
            if len(px) >= 8:
                lum = _lum(px)
                sat = (px.max(axis=1) - px.min(axis=1)) / np.maximum(px.max(axis=1), 1.0)
                pick = px[(lum >= np.percentile(lum, 75)) & (sat < 0.2) & (lum > _lum(self.skin))]
                if len(pick) >= 3:
                    white = pick if white is None else np.vstack([white, pick])
        skin_tint = self.skin / max(float(self.skin.mean()), 1.0)
        if white is not None:
            w = np.median(white, axis=0)
            wb = w / max(float(w.mean()), 1.0)
            level = float(np.clip(1.05 * _lum(w), 0.8 * self.highlight, 1.0 * self.highlight))
        else:
            wb = np.ones(3)
            level = 0.92 * self.highlight
        col = IVORY * np.clip(wb, 0.96, 1.04) * (1 + 0.05 * (skin_tint - 1))
        return col / _lum(col) * min(level, 245.0)

    def _find_teeth(self, img: np.ndarray, rest: np.ndarray) -> np.ndarray | None:
        """The photo's teeth colour when its mouth shows teeth, else None."""
        mw = self.mouth_width
        if self.rest_gap < max(2.0, 0.035 * mw):
            return None
        mask = np.zeros(img.shape[:2], np.uint8)
        inner = np.vstack([rest[UPPER_INNER], rest[LOWER_INNER[::-1]]])
        cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 1)
        px = img[mask > 0]
        if len(px) < 12:
            return None
        score = self._toothness(px)
        if (score > 0.5).mean() < 0.25:
            return None
        teeth = px[score > 0.5]
        lum = _lum(teeth)
        return np.median(teeth[lum >= np.percentile(lum, 50)], axis=0)

    def _toothness(self, px: np.ndarray) -> np.ndarray:
        """0..1: how much a pixel looks like enamel: unsaturated (lips and gums are red) and
        not dark (the cavity), though teeth in shadow may be darker than the lips."""
        lum = _lum(px)
        sat = (px.max(axis=-1) - px.min(axis=-1)) / np.maximum(px.max(axis=-1), 1.0)
        lip_lum = float(_lum(self.lip))
        lip_sat = float((self.lip.max() - self.lip.min()) / max(self.lip.max(), 1.0))
        cut = min(0.75 * lip_sat, 0.32)
        return (np.clip((cut - sat) / 0.08 + 0.5, 0.0, 1.0)
                * np.clip((lum - 0.55 * lip_lum) / (0.15 * lip_lum) + 0.5, 0.0, 1.0))

    def _build_teeth(self, img: np.ndarray, rest: np.ndarray) -> None:
        """Prepared RGBA images of the upper and lower rows, in the photo's frame at rest."""
        mw = self.mouth_width
        h, w = img.shape[:2]
        left, right = rest[UPPER_INNER[0]], rest[UPPER_INNER[-1]]
        cx = (left[0] + right[0]) / 2
        x0 = int(np.floor(cx - 0.62 * mw)) - 2
        x1 = int(np.ceil(cx + 0.62 * mw)) + 3
        mid_y = (rest[13, 1] + rest[14, 1]) / 2
        y0 = int(np.floor(mid_y - 0.36 * mw)) - 2
        y1 = int(np.ceil(mid_y + 0.36 * mw)) + 3
        self.patch_origin = np.array([x0, y0], np.float64)
        S = SUPER
        xs = x0 + (np.arange((x1 - x0) * S) + 0.5) / S - 0.5
        ys = y0 + (np.arange((y1 - y0) * S) + 0.5) / S - 0.5
        s = (xs - cx) / mw
        yu_rest, yl_rest = _curve(rest[UPPER_INNER], xs), _curve(rest[LOWER_INNER], xs)
        arch = 0.085 * mw * (np.abs(s) / 0.6) ** 2  # the arch's edge rises towards the back
        stomion = (yu_rest + yl_rest) / 2
        centre_mid = np.interp(cx, xs, stomion)
        edge_u = centre_mid + 0.05 * mw - arch  # upper incisors rest just behind the lower lip
        crown_u = 0.21 * mw * (1 - 0.25 * np.abs(s))
        photo_alpha = None
        if self.photo_teeth is not None:
            edge_u, photo_alpha, photo_rgb = self._photo_row(img, rest, xs, ys, yu_rest, yl_rest, edge_u)
        dark = self.cavity_edge / 255.0
        up = _teeth_row(s, edge_u, crown_u, UPPER_TEETH, self.teeth / 255.0, dark, ys, upper=True)
        # gums above the crowns (seen when the upper lip lifts far)
        gum = np.clip((edge_u - crown_u + 0.02 * mw - ys[:, None]) / (0.02 * mw), 0.0, 1.0)
        gum *= (ys[:, None] >= edge_u - crown_u - 0.08 * mw) & (np.abs(s) < UPPER_TEETH[-1])[None, :]
        gum_rgb = (self.lip / 255.0) * 0.8
        up[..., :3] = up[..., :3] * (1 - gum[..., None]) + gum_rgb * gum[..., None]
        up[..., 3] = np.maximum(up[..., 3], gum)
        if photo_alpha is not None:  # the photo's own teeth where it shows them
            up[..., :3] += (photo_rgb - up[..., :3]) * photo_alpha[..., None]
        lower_col = self.teeth / 255.0 * 0.97
        # the lower edges: behind the upper ones (a small overbite)
        self.edge_lower_rest = edge_u - 0.05 * mw
        low = _teeth_row(s, self.edge_lower_rest, 0.18 * mw * (1 - 0.25 * np.abs(s)), LOWER_TEETH,
                         lower_col, dark, ys, upper=False)
        self.upper_rgba = self._downsample(up)
        self.lower_rgba = self._downsample(low)
        self.edge_upper_rest = edge_u[S // 2 :: S]
        self.edge_lower_sampled = self.edge_lower_rest[S // 2 :: S]
        self.patch_x = xs[S // 2 :: S]
        self._cav_edge = self.cavity_edge.astype(np.float32)
        self._cav_step = (self.cavity_deep - self.cavity_edge).astype(np.float32)
        self._tongue = self.tongue_col.astype(np.float32)

    def _photo_row(self, img, rest, xs, ys, yu_rest, yl_rest, edge_model):
        """The photo's upper teeth on the supersampled grid: incisal edge, colour and how
        much of the colour is the photo's.

        Teeth are the unsaturated, not-dark pixels of the rest opening, judged smoothed
        sideways (the dark lines between teeth belong to the teeth) and filled top to
        bottom in each column; the incisal edge is where they end. Where they reach the
        lower lip, the model continues them below it."""
        mw = self.mouth_width
        gx, gy = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
        rgb = cv2.remap(img, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        y = ys[:, None]
        inside = (y >= yu_rest[None, :]) & (y <= yl_rest[None, :])
        tooth = self._toothness(rgb) * inside
        sigma = max(0.03 * mw * SUPER, 1.0)
        wide = cv2.GaussianBlur(tooth.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=0.01)
        wide = np.clip((wide - 0.2) / 0.3, 0.0, 1.0)
        filled = np.minimum(np.maximum.accumulate(wide, axis=0), np.maximum.accumulate(wide[::-1], axis=0)[::-1])
        filled *= inside
        rows = np.arange(len(ys))[:, None]
        last = np.where(filled > 0.5, rows, -1).max(axis=0)
        has = last >= 0
        reach = ys[np.maximum(last, 0)] + 0.5 / SUPER
        touching = has & (reach >= yl_rest - 1.0)
        edge = np.where(touching, np.maximum(yl_rest + 0.012 * mw, edge_model), reach)
        edge = np.where(has, edge, np.maximum(edge_model, yl_rest + 0.012 * mw))
        k = max(3, int(0.1 * mw * SUPER) | 1)
        edge = np.convolve(np.pad(edge, k // 2, mode="edge"), np.ones(k) / k, mode="valid")
        # an arch: no tooth hangs lower than the central incisors (no fangs at the sides)
        s = np.abs(xs - (xs[0] + xs[-1]) / 2) / mw
        centre = float(np.interp(0.0, (xs - (xs[0] + xs[-1]) / 2) / mw, edge))
        edge = np.minimum(edge, centre - 0.085 * mw * (s / 0.6) ** 2)
        weight = cv2.GaussianBlur(filled.astype(np.float32), (0, 0), 0.4 * SUPER)
        return edge, weight, rgb / 255.0

    @staticmethod
    def _downsample(rgba: np.ndarray) -> np.ndarray:
        """Supersampled RGBA (0..1) -> premultiplied float32 at the photo's resolution."""
        pm = rgba.copy()
        pm[..., :3] *= pm[..., 3:4]
        hh, ww = pm.shape[0] // SUPER, pm.shape[1] // SUPER
        out = cv2.resize(pm.astype(np.float32), (ww, hh), interpolation=cv2.INTER_AREA)
        out[..., :3] *= 255.0
        return out

    # -- per frame -------------------------------------------------------------------------

    def paint(self, frame: np.ndarray, points: np.ndarray, params: FaceParams | None = None) -> None:
        """Draw the mouth interior for deformed landmark *points* into *frame* in place.

        Every layer is a few whole-array operations on the opening's bounding box (float32),
        and a layer that cannot be seen in this frame is skipped: this runs on every
        speaking frame, inside the animator's budget."""
        mw = self.mouth_width
        lips = points[_INNER_BOTH, :2]
        up_pts, low_pts = lips[:11], lips[11:]
        mid = lips[_MIDDLE, 1]
        extra = float(mid[3:].sum() - mid[:3].sum()) / 3 - self.rest_gap
        strength = min(max(extra / (REST_SLACK * mw + 1e-6), 0.0), 1.0)
        strength = strength * strength * (3 - 2 * strength)
        if strength <= 0.004:
            return
        p = params or FaceParams()
        (bx0, by0), (bx1, by1) = lips.min(axis=0), lips.max(axis=0)
        x0, y0 = max(int(bx0) - 2, 0), max(int(by0) - 2, 0)
        x1, y1 = min(int(bx1) + 3, frame.shape[1]), min(int(by1) + 3, frame.shape[0])
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        f32 = np.float32
        xs = np.arange(x0, x1, dtype=f32)
        ys = np.arange(y0, y1, dtype=f32)[:, None]
        yu = _curve(up_pts, xs).astype(f32)
        yl = _curve(low_pts, xs).astype(f32)
        xl, xr = float(up_pts[0, 0]), float(up_pts[-1, 0])
        soft = max(1.5, 0.03 * mw)
        # distance into the opening from each lip along the contour's normal, in ramp widths
        ku = f32(1 / soft) / np.sqrt(1 + _slope(yu) ** 2)
        kl = f32(1 / soft) / np.sqrt(1 + _slope(yl) ** 2)
        d_top = (ys - yu) * ku
        inside = np.minimum(d_top, (yl - ys) * kl)
        ends = _clip(np.minimum(xs - xl, xr - xs) / soft + 0.5, 0.0, 1.0) * strength
        a_open = _clip(inside + 0.5, 0.0, 1.0)
        a_open *= ends

        # cavity: lit from the front, darkest deep in the middle
        gap = np.maximum(yl - yu, 1e-3)
        cxm = (xl + xr) / 2
        r2 = np.minimum(((xs - cxm) / max((xr - xl) / 2, 1.0)) ** 2, 1.0)
        depth = np.minimum(inside * (2 * soft / gap), 1.0)
        depth *= 1 - 0.6 * r2
        col = self._cav_edge + depth[..., None] * self._cav_step

        # where the rows of teeth are in this frame: head motion, and the jaw for the lower row
        shift_u = self.rig.head_motion(p, self.anchor, self.anchor_depth) - self.anchor
        jaw = max(p.jaw_open, 0.0) * self.jaw_drop
        ex = xs - f32(shift_u[0])
        e_up = np.interp(ex, self.patch_x, self.edge_upper_rest).astype(f32) + f32(shift_u[1])
        e_low = np.interp(ex, self.patch_x, self.edge_lower_sampled).astype(f32) + f32(shift_u[1] + jaw)

        # tongue: a dome on the floor of the mouth, behind the lower teeth; its tip rises
        # (L, N, T, D, TH) towards the upper teeth and comes forward between the rows
        rr = _clip((ex - cxm) / (0.5 * mw), -1.0, 1.0)
        dome = e_low - 0.05 * mw * np.sqrt(1 - rr * rr)
        tongue = min(max(p.tongue, 0.0), 1.0)
        front = None
        if tongue > 0.05 or float((dome - e_up).max()) > 0.5:
            if tongue > 0.05:
                dome = dome - tongue * _clip(1 - (rr / 0.55) ** 2, 0.0, 1.0) * np.maximum(dome - e_up - 0.01 * mw, 0)
            below = ys - dome
            a_t = _clip(below * f32(1 / soft) + 0.5, 0.0, 1.0)
            lit = _clip(1 - below * f32(1 / (0.1 * mw)), 0.0, 1.0)
            lit *= 0.45 * (1 - 0.6 * rr * rr)
            lit += 0.55
            tongue_rgb = lit[..., None] * self._tongue
            col += (tongue_rgb - col) * a_t[..., None]
            if tongue > 0.05:
                centre = _clip((0.45 - np.abs(rr)) / 0.15, 0.0, 1.0) * tongue
                front = a_t * centre * _clip((e_low + 0.03 * mw - ys) * f32(1 / soft), 0, 1)
                col += (tongue_rgb - col) * front[..., None]

        # the rows of teeth (premultiplied RGBA, shifted into place)
        size = (x1 - x0, y1 - y0)
        ox = float(self.patch_origin[0] + shift_u[0]) - x0
        oy = float(self.patch_origin[1] + shift_u[1]) - y0
        if float((yl - e_low).max()) > 0.3:  # the lower row shows above the lower lip
            low = cv2.warpAffine(self.lower_rgba, np.float32([[1, 0, ox], [0, 1, oy + jaw]]), size,
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            col *= 1 - low[..., 3:4]
            col += low[..., :3]
        upr = cv2.warpAffine(self.upper_rgba, np.float32([[1, 0, ox], [0, 1, oy]]), size,
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        col *= 1 - upr[..., 3:4]
        # the upper lip's shadow on the top of the teeth
        shade = _clip(d_top * f32(soft / (0.04 * mw)), 0.0, 1.0)
        shade *= 0.3
        shade += 0.7
        col += upr[..., :3] * shade[..., None]
        if front is not None:  # the tongue tip in front of the upper edges, where it touches them
            tip_front = front * _clip((ys - e_up + 0.03 * mw) * f32(1 / soft), 0.0, 1.0) * 0.85
            col += (tongue_rgb - col) * tip_front[..., None]

        roi = frame[y0:y1, x0:x1]
        np.minimum(np.maximum(col, 0, out=col), 255, out=col)
        roi[:] = cv2.blendLinear(roi, col.astype(np.uint8), 1 - a_open, a_open)
