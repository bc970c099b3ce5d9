"""Surface metrics — normalised surface Dice (NSD), HD95, average surface distance — with real spacing.

NSD follows the DeepMind ``surface-distance`` definition that the STS and STSR challenge scripts use
(surface elements weighted by area, from the same 2x2x2 neighbourhood tables, taken from MONAI);
HD95 and ASD come from MONAI. Every computation first crops the two masks to their joint bounding
box plus a margin, which is what makes per-tooth metrics on a 100 M-voxel scan take a fraction of
a second.

Empty masks: both empty → NSD 1, HD95/ASD 0; exactly one empty → NSD 0, HD95/ASD ∞ (``inf``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["crop_to_union", "surface_metrics", "normalized_surface_dice"]


def crop_to_union(a: np.ndarray, b: np.ndarray, margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Both boolean masks cropped to the bounding box of ``a | b`` (+ ``margin`` voxels, zero-padded)."""
    union = a | b
    if not union.any():
        return a[:0], b[:0]
    lo, hi = [], []
    for axis in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != axis)
        present = np.flatnonzero(union.any(axis=other))
        lo.append(present[0])
        hi.append(present[-1] + 1)
    box = tuple(slice(int(low), int(high)) for low, high in zip(lo, hi))
    pad = [(margin, margin)] * union.ndim
    return np.pad(a[box], pad), np.pad(b[box], pad)


def _onehot(mask: np.ndarray):
    import torch  # noqa: PLC0415 (torch: the GUI's pool ranking loads metrics without it)

    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None, None]
    return torch.cat([1 - t, t], dim=1)


_TABLES: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray]] = {}


def _area_table(spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(surfel area per 2x2x2 neighbourhood code, encoding kernel) — the DeepMind tables, via MONAI."""
    if spacing not in _TABLES:
        from monai.metrics.utils import get_code_to_measure_table  # noqa: PLC0415 (torch: the GUI's pool ranking loads metrics without it)

        table, kernel = get_code_to_measure_table(spacing)
        _TABLES[spacing] = (table.cpu().numpy().astype(np.float64), kernel.cpu().numpy().reshape((2,) * len(spacing)))
    return _TABLES[spacing]


def _codes(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Neighbourhood code of every 2x2(x2) cell of ``mask`` (a lattice one smaller per axis).

    The kernel's weights are distinct powers of two, so a code fits in 8 bits (3D) and is built
    with bitwise ORs on uint8 — eight times less memory traffic than int64 arithmetic.
    """
    shape = tuple(n - 1 for n in mask.shape)
    mask = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    code = np.zeros(shape, dtype=np.uint8)  # 2D and 3D kernels: weights 1…8 or 1…128
    for offset in np.ndindex(*kernel.shape):
        weight = int(kernel[offset])
        if weight:
            code |= mask[tuple(slice(o, o + n) for o, n in zip(offset, shape))] << (weight.bit_length() - 1)
    return code


def _ball(spacing: tuple[float, ...], radius: float) -> np.ndarray:
    """Lattice offsets within ``radius`` (same unit as spacing): dilating by it = distance ≤ radius."""
    reach = [int(np.floor(radius / s)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1) * s for r, s in zip(reach, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius**2 + 1e-9


def normalized_surface_dice(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance: float) -> float:
    """NSD at ``tolerance`` (same unit as ``spacing``) of two boolean masks (array-order spacing).

    The DeepMind definition: surface elements of each mask weighted by their area (2x2x2
    neighbourhood codes → areas, the tables of ``surface-distance`` as shipped in MONAI), and the
    share of area within ``tolerance`` of the other surface. "Within tolerance" is computed as
    membership of a dilation of the other surface by a Euclidean ball, which equals thresholding its
    distance transform, on the bounding box of the two masks only.
    """
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)  # no copy when already boolean
    if not gt.any() and not pred.any():
        return 1.0
    if not gt.any() or not pred.any():
        return 0.0
    spacing = tuple(float(v) for v in spacing)
    margin = 1 + max(int(np.ceil(tolerance / v)) for v in spacing)
    g, p = crop_to_union(gt, pred, margin=margin)
    table, kernel = _area_table(spacing)
    code_g, code_p = _codes(g, kernel), _codes(p, kernel)
    full = len(table) - 1
    border_g = (code_g != 0) & (code_g != full)
    border_p = (code_p != 0) & (code_p != full)
    ball = _ball(spacing, tolerance)
    near_p = ndimage.binary_dilation(border_p, ball)
    near_g = ndimage.binary_dilation(border_g, ball)
    area_g, area_p = table[code_g[border_g]], table[code_p[border_p]]
    total = area_g.sum() + area_p.sum()
    if total == 0:
        return 0.0
    return float((area_g[near_p[border_g]].sum() + area_p[near_g[border_p]].sum()) / total)


def surface_metrics(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance: float = 2.0,
                    distances: bool = True) -> dict[str, float]:
    """``{"nsd", "hd95", "asd"}`` of two boolean masks; spacing in array order (z, y, x), mm."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    result = {"nsd": normalized_surface_dice(gt, pred, spacing, tolerance)}
    if not distances:
        return result
    if not gt.any() and not pred.any():
        return {**result, "hd95": 0.0, "asd": 0.0}
    if not gt.any() or not pred.any():
        return {**result, "hd95": math.inf, "asd": math.inf}
    g, p = crop_to_union(gt, pred, margin=2)
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance  # noqa: PLC0415 (torch: the GUI's pool ranking loads metrics without it)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spacing = tuple(float(s) for s in spacing)
        hd95 = compute_hausdorff_distance(_onehot(p), _onehot(g), include_background=False, percentile=95,
                                          spacing=spacing)
        asd = compute_average_surface_distance(_onehot(p), _onehot(g), include_background=False, symmetric=True,
                                               spacing=spacing)
    return {**result, "hd95": float(hd95.reshape(-1)[0]), "asd": float(asd.reshape(-1)[0])}
