"""The inside of an open mouth: a dark cavity, a tongue and a row of upper teeth.

A warp can only stretch the photo; when the lips part wider than they are in the photo,
something must be drawn between them or the mouth reads as stretched skin. The drawing
fades in with the extra opening, so at rest the photo's own mouth is untouched.
"""
from __future__ import annotations

import cv2
import numpy as np

from .landmarks import INNER_LIP_LOWER, INNER_LIP_UPPER

_SUB = 4  # fixed-point bits for sub-pixel polygon edges
CAVITY = np.array([38, 12, 16], dtype=np.float32)
TONGUE = np.array([140, 60, 66], dtype=np.float32)
DEFAULT_TEETH = np.array([232, 226, 212], dtype=np.float32)


class MouthPainter:
    def __init__(self, image: np.ndarray, rest: np.ndarray, mouth_width: float) -> None:
        self.rest_gap = self._gap(rest)
        self.mouth_width = mouth_width
        self.teeth = self._teeth_colour(image, rest)

    @staticmethod
    def _gap(points: np.ndarray) -> float:
        up = points[INNER_LIP_UPPER[4:7], 1].mean()
        low = points[INNER_LIP_LOWER[4:7], 1].mean()
        return float(low - up)

    def _teeth_colour(self, image: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """Teeth take the photo's own colour when the photo shows them (a smile)."""
        if self.rest_gap < 3:
            return DEFAULT_TEETH
        poly = self._polygon(rest)
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        pixels = image[mask > 0].astype(np.float32)
        if len(pixels) < 10:
            return DEFAULT_TEETH
        bright = pixels[pixels.sum(axis=1) >= np.percentile(pixels.sum(axis=1), 70)]
        return np.median(bright, axis=0)

    @staticmethod
    def _polygon(points: np.ndarray) -> np.ndarray:
        return np.vstack([points[INNER_LIP_UPPER], points[INNER_LIP_LOWER[1:-1]]])[:, :2]

    def paint(self, frame: np.ndarray, points: np.ndarray) -> None:
        """Draw the mouth interior for deformed landmark *points* into *frame* in place."""
        extra = self._gap(points) - self.rest_gap
        strength = float(np.clip(extra / (0.06 * self.mouth_width + 1e-6), 0.0, 1.0))
        if strength <= 0.02:
            return
        poly = self._polygon(points)
        x0, y0 = np.floor(poly.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 3
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        origin = np.array([x0, y0])
        local = np.round((poly - origin) * (1 << _SUB)).astype(np.int32)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [local], 255, lineType=cv2.LINE_AA, shift=_SUB)

        # teeth: a band under the upper lip, as tall as a fraction of the mouth width
        upper = points[INNER_LIP_UPPER, :2] - origin
        band = max(1.0, min(0.09 * self.mouth_width, 0.45 * (self._gap(points) + 1)))
        # teeth recede towards the corners: the band tapers to nothing there
        along = np.linspace(-1.0, 1.0, len(upper))
        lower_edge = upper + np.column_stack([np.zeros(len(upper)), band * (1 - along**4)])
        teeth_poly = np.vstack([upper, lower_edge[::-1]])
        teeth = np.zeros_like(mask)
        cv2.fillPoly(teeth, [np.round(teeth_poly * (1 << _SUB)).astype(np.int32)], 255, cv2.LINE_AA, shift=_SUB)

        rows = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
        colour = CAVITY + (TONGUE - CAVITY) * rows**2
        t = (np.minimum(teeth, mask).astype(np.float32) / 255.0)[..., None]
        colour = colour * (1 - t) + self.teeth * t
        a = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] * (strength / 255.0)
        roi = frame[y0:y1, x0:x1]
        roi[:] = (roi * (1 - a) + colour * a).astype(np.uint8)
