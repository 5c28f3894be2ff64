"""Blinks as a sliding upper lid, not a squashed eye.

Squeezing the eye opening shut with the mesh warp leaves a slit of iris showing (a mesh
warp cannot collapse a region to nothing and still be inverted). Instead the skin above
each eye is stretched down, column by column, until the lash line meets the lower lid:
an exact one-dimensional inverse map, done on the source photo before the head warp.
"""
from __future__ import annotations

import cv2
import numpy as np

from .landmarks import Face

LID_REACH = 1.1  # how much skin above the lid (in eye heights) stretches to cover the eye


class EyelidPainter:
    def __init__(self, face: Face, image_shape: tuple[int, int]) -> None:
        h, w = image_shape
        self.eyes = []
        for side in ("l", "r"):
            up = face.points[face.groups[f"eye_{side}_upper"], :2]
            low = face.points[face.groups[f"eye_{side}_lower"], :2]
            both = np.vstack([up, low])
            x0, x1 = int(np.floor(both[:, 0].min())) - 1, int(np.ceil(both[:, 0].max())) + 2
            xs = np.arange(max(0, x0), min(w, x1), dtype=np.float32)
            up, low = up[np.argsort(up[:, 0])], low[np.argsort(low[:, 0])]
            y_up = np.interp(xs, up[:, 0], up[:, 1]).astype(np.float32)
            y_low = np.interp(xs, low[:, 0], low[:, 1]).astype(np.float32)
            y_low = np.maximum(y_low, y_up)
            gap = float(np.max(y_low - y_up))
            top = y_up - LID_REACH * max(gap, 2.0)
            y0 = max(0, int(np.floor(top.min())) - 1)
            y1 = min(h, int(np.ceil(y_low.max())) + 2)
            if len(xs) < 2 or y1 - y0 < 2:
                continue
            ys = np.arange(y0, y1, dtype=np.float32)[:, None]
            self.eyes.append((side, xs, ys, y_up, y_low, top, (y0, y1, int(xs[0]), int(xs[-1]) + 1)))

    def close(self, image: np.ndarray, blink_l: float, blink_r: float) -> np.ndarray:
        """*image* with the lids lowered; the same array when nobody blinks."""
        amounts = {"l": blink_l, "r": blink_r}
        if max(amounts.values()) <= 0.01:
            return image
        out = image.copy()
        for side, xs, ys, y_up, y_low, top, (y0, y1, x0, x1) in self.eyes:
            b = float(np.clip(amounts[side], 0.0, 1.0))
            if b <= 0.01:
                continue
            edge = y_up + b * (y_low - y_up)
            span = np.maximum(edge - top, 1e-3)
            src_y = top + (ys - top) * (y_up - top) / span
            inside = (ys >= top) & (ys <= edge)
            map_y = np.where(inside, src_y, np.broadcast_to(ys, src_y.shape)).astype(np.float32)
            map_x = np.broadcast_to(xs[None, :], map_y.shape).astype(np.float32)
            out[y0:y1, x0:x1] = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out
