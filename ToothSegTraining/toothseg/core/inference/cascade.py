"""Coarse-to-fine geometry: where the fine model runs, from the coarse model's tooth mask.

The coarse member segments the whole scan at low resolution; the fine member then runs only in the
box that holds its teeth plus a margin (``roi_from_foreground``), and skips every window whose
footprint on the coarse grid, dilated by the margin, holds no tooth (``EmptyWindowSkipper``: a
summed-volume table answers each window in constant time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["CoarseRegion", "roi_from_foreground", "EmptyWindowSkipper"]


class CoarseRegion:
    """The fine stage's box in native voxels (``lo``/``hi`` per axis) and native voxels per coarse voxel."""

    def __init__(self, lo: list[int], hi: list[int], scale: list[float]) -> None:
        self.lo, self.hi, self.scale = lo, hi, scale

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.lo, self.hi))


def roi_from_foreground(foreground: np.ndarray, native_shape: Sequence[int], spacing_zyx: Sequence[float],
                        margin_mm: float) -> CoarseRegion | None:
    """The native-grid box around the coarse grid's tooth voxels, ``margin_mm`` wider on each side;
    None when the coarse model found no tooth."""
    if not foreground.any():
        return None
    scale = [n / m for n, m in zip(native_shape, foreground.shape)]
    margin = [int(math.ceil(margin_mm / s)) for s in spacing_zyx]
    coords = np.argwhere(foreground)
    lo = [max(0, int(math.floor(c * f)) - m) for c, f, m in zip(coords.min(0), scale, margin)]
    hi = [min(n, int(math.ceil((c + 1) * f)) + m) for c, f, m, n in zip(coords.max(0), scale, margin, native_shape)]
    return CoarseRegion(lo, hi, scale)


class EmptyWindowSkipper:
    """``skipper(window) -> True`` for a fine-grid window whose coarse footprint holds no tooth within the margin."""

    def __init__(self, foreground: np.ndarray, region: CoarseRegion, spacing_zyx: Sequence[float],
                 margin_mm: float, fine_grid: Sequence[int]) -> None:
        coarse_spacing = [s * f for s, f in zip(spacing_zyx, region.scale)]
        reach = [max(1, int(math.ceil(margin_mm / s))) for s in coarse_spacing]
        dilated = ndimage.binary_dilation(foreground, np.ones([2 * r + 1 for r in reach], bool))
        self.integral = np.pad(dilated.astype(np.int32).cumsum(0).cumsum(1).cumsum(2), [(1, 0)] * 3)
        self.coarse_shape = foreground.shape
        self.region = region
        self.fine_scale = [n / g for n, g in zip(region.shape, fine_grid)]  # native voxels per fine voxel

    def __call__(self, window: tuple[slice, ...]) -> bool:
        box = []
        for axis, s in enumerate(window):
            start = (self.region.lo[axis] + s.start * self.fine_scale[axis]) / self.region.scale[axis]
            stop = (self.region.lo[axis] + s.stop * self.fine_scale[axis]) / self.region.scale[axis]
            box.append((max(0, int(math.floor(start))), min(self.coarse_shape[axis], int(math.ceil(stop)))))
        (z0, z1), (y0, y1), (x0, x1) = box
        if z1 <= z0 or y1 <= y0 or x1 <= x0:
            return True
        s = self.integral
        total = (s[z1, y1, x1] - s[z0, y1, x1] - s[z1, y0, x1] - s[z1, y1, x0]
                 + s[z0, y0, x1] + s[z0, y1, x0] + s[z1, y0, x0] - s[z0, y0, x0])
        return total == 0
