"""Where the network looks and where its mouth goes back: one crop box, fixed per portrait.

The box imitates what Wav2Lip was trained on (S3FD face boxes with 10 px added below
the chin, resized to 96x96), built from the MediaPipe landmarks the core already has:
cheek to cheek, from a little above the brows to just below the chin. The portrait is a
still photo, so the box is computed once and never jitters; the head motion of each frame
is applied afterwards by the mesh warp, which moves the pasted mouth along with the rest
of the face. (Video-based Wav2Lip front ends smooth per-frame detector boxes over time;
here there is nothing per frame to smooth.)

The network redraws the lower half of the box. Only that half comes back, through a
mask that ramps in from the middle row, fades out at the sides and bottom, and is exactly
zero outside the box, after a colour correction measured on the ramp so that the
generated skin meets the photographed skin without a seam.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FACE = 96  # the network's input and output size
HALF = FACE // 2  # rows from here down are generated
CHIN, BROW_TOP = 152, (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)  # MediaPipe face mesh indices
RAMP_TOP, RAMP_SIDE, RAMP_BOTTOM = 0.14, 0.12, 0.06  # feather widths, as fractions of the box
MAX_GAIN = 1.25  # colour correction never scales contrast by more than this


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class FaceCrop:
    """The crop box in portrait pixels (x0, y0, x1, y1; y1 - y0 even) and the paste mask."""

    x0: int
    y0: int
    x1: int
    y1: int
    mask: np.ndarray  # (h/2) x w float32 in [0, 1], for the box's lower half

    @property
    def size(self) -> tuple[int, int]:
        return self.x1 - self.x0, self.y1 - self.y0

    @property
    def paste_rows(self) -> slice:
        """Portrait rows the mouth goes back into: the lower half of the box."""
        return slice(self.y0 + (self.y1 - self.y0) // 2, self.y1)

    @property
    def paste_cols(self) -> slice:
        return slice(self.x0, self.x1)

    @classmethod
    def from_landmarks(cls, points: np.ndarray, image_shape: tuple[int, ...], oval: np.ndarray) -> "FaceCrop":
        """The box for landmarks *points* (N x 2+, pixels) of a face in an image of *image_shape*."""
        h, w = image_shape[:2]
        xs = points[oval, 0]
        brow = float(points[list(BROW_TOP), 1].min())
        chin = float(points[CHIN, 1])
        face_h = chin - brow
        x0, x1 = int(np.floor(xs.min())), int(np.ceil(xs.max()))
        y0, y1 = int(np.floor(brow - 0.12 * face_h)), int(np.ceil(chin + 0.06 * face_h))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if (y1 - y0) % 2:
            y1 -= 1  # an even height halves exactly, so the generated half maps onto whole rows
        if x1 - x0 < 16 or y1 - y0 < 16:
            raise ValueError(f"face box {x1 - x0}x{y1 - y0} px is too small for lip-sync")
        return cls(x0, y0, x1, y1, paste_mask(x1 - x0, (y1 - y0) // 2))

    def network_input(self, image: np.ndarray) -> np.ndarray:
        """1 x 6 x 96 x 96 float32: the face with its lower half blanked, then the face itself.

        Wav2Lip's reference frame; with a still portrait both halves come from the same
        photo, as in the original's ``--static`` mode. BGR order, as the network was trained.
        """
        face = cv2.resize(image[self.y0 : self.y1, self.x0 : self.x1], (FACE, FACE))[:, :, ::-1]
        masked = face.copy()
        masked[HALF:] = 0
        both = np.concatenate([masked, face], axis=2).astype(np.float32) / 255.0
        return np.ascontiguousarray(both.transpose(2, 0, 1)[None])

    def compose(self, image: np.ndarray, lower: np.ndarray) -> np.ndarray:
        """The portrait's lower box half with the generated mouth blended in, uint8 RGB.

        *lower* is the network's lower half (48 x 96 x 3, RGB, values in [0, 1]).
        """
        w, h = self.size
        under = image[self.paste_rows, self.paste_cols].astype(np.float32)
        patch = cv2.resize(np.ascontiguousarray(lower, dtype=np.float32), (w, h // 2)) * 255.0
        patch = match_colour(patch, under, self.mask)
        m = self.mask[:, :, None]
        return np.clip(under + m * (patch - under) + 0.5, 0, 255).astype(np.uint8)


def paste_mask(w: int, h: int) -> np.ndarray:
    """1 in the middle of the lower half, smooth ramps to 0 at its four edges."""
    y = (np.arange(h) + 0.5) / h
    x = (np.arange(w) + 0.5) / w
    rows = _smoothstep(y / (2 * RAMP_TOP)) * _smoothstep((1 - y) / (2 * RAMP_BOTTOM))
    cols = _smoothstep(x / RAMP_SIDE) * _smoothstep((1 - x) / RAMP_SIDE)
    return (rows[:, None] * cols[None, :]).astype(np.float32)


def match_colour(patch: np.ndarray, under: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """*patch* with each channel's mean and spread matched to *under* on the mask's ramp.

    The ramp (0 < mask < 1) is skin around the mouth in both images: whatever the
    network does to the lips, a difference there is colour drift, and correcting it is
    what makes the blend seamless.
    """
    band = (mask > 0.02) & (mask < 0.98)
    if band.sum() < 16:
        return patch
    p, u = patch[band], under[band]
    pm, um = p.mean(0), u.mean(0)
    gain = np.clip((u.std(0) + 1.0) / (p.std(0) + 1.0), 1 / MAX_GAIN, MAX_GAIN)
    return (patch - pm) * gain + um
