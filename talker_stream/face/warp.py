"""Piecewise-affine warping as one sparse matrix product and one remap per frame.

At prepare time every pixel of the region of interest is located in the rest-pose
triangle mesh and its barycentric weights are stored in a sparse matrix W. A frame's
displacement field is then ``W @ d`` for the per-vertex displacement d. The backward map
(where each output pixel comes from) is refined by one fixed-point step of
``x = p - d(x)``, which makes the result match a true forward piecewise-affine warp to
second order while costing a single extra remap. Pixels outside the mesh get an empty
row in W, hence zero displacement, hence their exact original value.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import Delaunay


class MeshWarper:
    def __init__(self, rest: np.ndarray, image_shape: tuple[int, int], margin: int = 2) -> None:
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
        self.mask = np.zeros(len(pix), dtype=bool)
        self.mask[inside] = True
        self.mask = self.mask.reshape(self.shape)
        self.triangles = tri.simplices

    def warp(self, image: np.ndarray, displacement: np.ndarray, out: np.ndarray) -> None:
        """Write *image* warped by per-vertex *displacement* into *out* (same shape).

        Only the region of interest is touched; the caller owns the rest of *out*.
        """
        field = (self.weights @ displacement.astype(np.float32)).reshape(*self.shape, 2)
        # first guess x1 = p - d(p); refined x2 = p - d(x1), sampled with a remap
        mx = self.base_x - field[..., 0]
        my = self.base_y - field[..., 1]
        refined = cv2.remap(field, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mx = self.base_x - refined[..., 0] + self.x0
        my = self.base_y - refined[..., 1] + self.y0
        out[self.y0 : self.y1, self.x0 : self.x1] = cv2.remap(
            image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
