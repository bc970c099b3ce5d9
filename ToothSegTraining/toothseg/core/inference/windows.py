"""Where sliding windows go, and how their predictions are weighted.

Two placements are offered: ``"even"`` (nnU-Net: the fewest windows with at least the requested
overlap, spread evenly so the first and last touch the borders) and ``"monai"`` (MONAI's
``sliding_window_inference``: a fixed step ``int(patch * (1 - overlap))``, the last window moved back
inside the image). The Gaussian importance map is MONAI's ``compute_importance_map`` formula
(sigma = 0.125 x patch per axis, normalised to 1 at the centre, floored at max(min, 1e-3)), which
is also nnU-Net's choice of sigma; blending divides the weighted sum by the summed weights. Imported
nnU-Net models use nnU-Net's own discretisation of that Gaussian (:func:`nnunet_gaussian_importance`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["window_starts", "window_slices", "gaussian_importance", "nnunet_gaussian_importance", "symmetric_padding"]


def window_starts(size: int, patch: int, overlap: float, placement: str = "even", step: int | None = None) -> list[int]:
    """Start indices along one axis (the image is at least ``patch`` long).

    ``step`` fixes the stride (RAIL's test code: starts ``0, s, 2s, ...`` with the last moved back inside
    the image, as ``min(s * i, size - patch)``); ``overlap`` and ``placement`` are then not used."""
    if size <= patch:
        return [0]
    if step is not None:
        if step < 1:
            raise ValueError(f"window stride must be at least 1, got {step}")
        return [min(step * i, size - patch) for i in range(math.ceil((size - patch) / step) + 1)]
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if placement == "monai":
        step = max(1, int(patch * (1.0 - overlap)))
        starts = []
        start = 0
        while True:
            clamped = min(start, size - patch)
            starts.append(clamped)
            if start + patch >= size:
                break
            start += step
        return starts
    if placement == "even":
        step = patch * (1.0 - overlap)
        count = int(math.ceil((size - patch) / step)) + 1
        if count == 1:
            return [0]
        actual = (size - patch) / (count - 1)
        return [int(round(actual * i)) for i in range(count)]
    raise ValueError(f"unknown window placement {placement!r} (even or monai)")


def window_slices(shape: Sequence[int], patch: Sequence[int], overlap: float | Sequence[float],
                  placement: str = "even", strides: Sequence[int] | None = None) -> list[tuple[slice, ...]]:
    """All windows over ``shape`` (spatial), in C order (last axis fastest); ``strides`` fixes the step
    per axis (see :func:`window_starts`)."""
    overlaps = [overlap] * len(shape) if isinstance(overlap, (int, float)) else list(overlap)
    steps = list(strides) if strides is not None else [None] * len(shape)
    per_axis = [window_starts(s, p, o, placement, t) for s, p, o, t in zip(shape, patch, overlaps, steps)]
    return [tuple(slice(start, start + p) for start, p in zip(starts, patch))
            for starts in itertools.product(*per_axis)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Separable Gaussian weights of a window, float32, max 1, floored as MONAI does."""
    weights = np.ones((), dtype=np.float32)
    for size in patch:
        x = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
        g = np.exp(x**2 / np.float32(-2.0 * (sigma_scale * size) ** 2)).astype(np.float32)
        weights = weights[..., None] * g
    floor = max(float(weights.min()), 1e-3)
    return np.maximum(weights, np.float32(floor)).astype(np.float32)


def nnunet_gaussian_importance(patch: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """nnU-Net's ``compute_gaussian``: a unit impulse at ``patch // 2`` smoothed by ``ndimage.gaussian_filter``
    (σ = ``sigma_scale`` x patch, truncated at 4σ), scaled to a maximum of 10, rounded to float16, zeros
    raised to the smallest non-zero weight. Returned as float32 holding those float16 values."""
    impulse = np.zeros([int(p) for p in patch])
    impulse[tuple(int(p) // 2 for p in patch)] = 1
    weights = ndimage.gaussian_filter(impulse, [p * sigma_scale for p in patch], 0, mode="constant", cval=0)
    weights = (weights / (weights.max() / 10)).astype(np.float16)
    weights[weights == 0] = weights[weights != 0].min()
    return weights.astype(np.float32)


def symmetric_padding(shape: Sequence[int], patch: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) padding per axis so every axis is at least one patch long (MONAI's split)."""
    pads = []
    for size, p in zip(shape, patch):
        diff = max(p - size, 0)
        pads.append((diff // 2, diff - diff // 2))
    return pads
