"""Piecewise-affine warping as one sparse matrix product and one remap per frame.

At prepare time every pixel of the region of interest is located in the rest-pose
triangle mesh and its barycentric weights are stored in a sparse matrix W. A frame's
displacement field is then ``W @ d`` for the per-vertex displacement d. The backward map
(where each output pixel comes from) is refined by one fixed-point step of
``x = p - d(x)``, which makes the result match a true forward piecewise-affine warp to
second order while costing a single extra remap. Pixels outside the mesh get an empty
row in W, hence zero displacement, hence their exact original value.

Where the jaw opens, the field is torn apart between the lips (the lower lip moves by a
tenth of the face height, the upper one barely, a pixel above it), and a fixed-point
step cannot invert that: pixels of the lower lip would be fetched from the upper one.
In a box around the mouth the map is therefore inverted exactly, column by column: the
motion there is mostly vertical, and each column's forward map is made monotone and
inverted with one batched ``searchsorted`` over all columns (for the rows; the columns
keep the fixed-point answer, sideways motion being smooth everywhere).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import Delaunay

try:  # the kernel behind csr_matrix @ vector, without the wrapper's checks
    from scipy.sparse._sparsetools import csr_matvec as _csr_matvec
except ImportError:  # pragma: no cover - other scipy layouts
    _csr_matvec = None


class MeshWarper:
    def __init__(self, rest: np.ndarray, image_shape: tuple[int, int], margin: int = 2,
                 columns: tuple[float, float, float, float] | None = None) -> None:
        h, w = image_shape
        x0, y0 = np.floor(rest.min(axis=0)).astype(int) - margin
        x1, y1 = np.ceil(rest.max(axis=0)).astype(int) + margin
        self.x0, self.y0 = max(0, int(x0)), max(0, int(y0))
        self.x1, self.y1 = min(w, int(x1)), min(h, int(y1))
        rh, rw = self.y1 - self.y0, self.x1 - self.x0
        self.shape = (rh, rw)
        tri = Delaunay(rest)
        gy, gx = np.mgrid[self.y0 : self.y1, self.x0 : self.x1]
        pix = np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64)
        simplex = tri.find_simplex(pix)
        inside = np.flatnonzero(simplex >= 0)
        T = tri.transform[simplex[inside]]
        b = np.einsum("nij,nj->ni", T[:, :2, :], pix[inside] - T[:, 2, :])
        bary = np.column_stack([b, 1 - b.sum(axis=1)])
        cols = tri.simplices[simplex[inside]]
        rows = np.repeat(inside, 3)
        self.weights = csr_matrix(
            (bary.ravel().astype(np.float32), (rows, cols.ravel())), shape=(len(pix), len(rest))
        )
        self.base_x = (gx - self.x0).astype(np.float32)
        self.base_y = (gy - self.y0).astype(np.float32)
        self._base = np.dstack([self.base_x, self.base_y])  # region coordinates
        self._base_abs = np.dstack([gx, gy]).astype(np.float32)  # image coordinates
        self.mask = np.zeros(len(pix), dtype=bool)
        self.mask[inside] = True
        self.mask = self.mask.reshape(self.shape)
        self.triangles = tri.simplices
        self.columns = None
        if columns is not None:  # image coordinates -> region coordinates, clipped
            cx0, cy0, cx1, cy1, cy_lip = columns
            bx0, by0 = max(int(np.floor(cx0)) - self.x0, 0), max(int(np.floor(cy0)) - self.y0, 0)
            bx1, by1 = min(int(np.ceil(cx1)) - self.x0, rw), min(int(np.ceil(cy1)) - self.y0, rh)
            if bx1 - bx0 >= 2 and by1 - by0 >= 3:
                self.columns = (bx0, by0, bx1, by1)
                # rows always inverted: down to the lower lip at rest; more as the lip moves
                self._lip_rows = int(np.clip(np.ceil(cy_lip) - self.y0 - by0, 3, by1 - by0))
                self._rows = np.arange(by1 - by0, dtype=np.float32)[:, None]

    def warp(self, image: np.ndarray, displacement: np.ndarray, out: np.ndarray, exact: float = 0.0) -> None:
        """Write *image* warped by per-vertex *displacement* into *out* (same shape).

        Only the region of interest is touched; the caller owns the rest of *out*.
        *exact*: when > 0, how far (px) the lower lip has moved; the mouth box is then
        inverted column by column, from above the lips to that far below the lower lip.
        """
        field = self._field(displacement).reshape(*self.shape, 2)
        # first guess x1 = p - d(p); refined x2 = p - d(x1), sampled with a remap
        # (both maps as one two-channel array: fewer passes over the region)
        first = cv2.subtract(self._base, field)
        refined = cv2.remap(field, first, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        maps = cv2.subtract(self._base_abs, refined, dst=first)
        if exact > 0 and self.columns is not None:
            self._invert_columns(field, maps, exact)
        region = out[self.y0 : self.y1, self.x0 : self.x1]
        if np.may_share_memory(region, image):
            region[:] = cv2.remap(image, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        else:  # straight into the frame
            cv2.remap(image, maps, None, cv2.INTER_LINEAR, dst=region, borderMode=cv2.BORDER_REFLECT)

    def _field(self, displacement: np.ndarray) -> np.ndarray:
        """W @ d as (pixels, 2) float32: x and y as two single-vector sparse products (scipy's
        fastest kernel, called directly when it can be: this runs on every frame)."""
        W = self.weights
        d = np.ascontiguousarray(displacement.T, dtype=np.float32)
        if _csr_matvec is not None:
            n, m = W.shape
            fx = np.zeros(n, np.float32)
            fy = np.zeros(n, np.float32)
            _csr_matvec(n, m, W.indptr, W.indices, W.data, d[0], fx)
            _csr_matvec(n, m, W.indptr, W.indices, W.data, d[1], fy)
            return cv2.merge([fx, fy]).reshape(n, 2)
        field = np.empty((W.shape[0], 2), np.float32)
        field[:, 0] = W @ d[0]
        field[:, 1] = W @ d[1]
        return field

    def _invert_columns(self, field: np.ndarray, maps: np.ndarray, reach: float) -> None:
        """Exact backward map in the mouth box: per column, rest row -> shown row is made
        monotone and inverted (linear between rows, extrapolated past the box's ends)."""
        bx0, by0, bx1, _ = self.columns
        hb = min(self._lip_rows + int(np.ceil(reach)) + 3, len(self._rows))
        wb = bx1 - bx0
        rows = self._rows[:hb]
        shown = np.maximum.accumulate(rows + field[by0 : by0 + hb, bx0:bx1, 1], axis=0)
        shown += rows * 1e-3
        span = float(shown[-1].max() - shown[0].min()) + hb + 4.0
        offset = np.arange(wb, dtype=np.float32)[:, None] * np.float32(span)
        flat = (shown.T + offset).ravel()
        targets = (rows.T + offset).ravel()
        idx = np.searchsorted(flat, targets)
        first = np.repeat(np.arange(0, wb * hb, hb), hb)
        lo = np.minimum(np.maximum(idx - 1, first), first + hb - 2)
        f_lo = flat[lo]
        t = (targets - f_lo) / np.maximum(flat[lo + 1] - f_lo, 1e-6)
        t += lo - first
        # x keeps the fixed-point step's answer (sideways motion is smooth: puckering lips)
        maps[by0 : by0 + hb, bx0:bx1, 1] = t.reshape(wb, hb).T + (by0 + self.y0)
