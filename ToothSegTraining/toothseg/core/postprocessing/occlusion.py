"""The occlusal surface of a tooth map, and upper and lower teeth told apart by it.

A coarse tooth map of a closed mouth joins each upper crown to the lower crown it bites on: on the
unseen STS-2024 patient, 9 of the binary model's 11 largest pieces were such pairs, with no waist at
the contact for a neck split to find, and the crown-to-root direction that numbers a tooth's jaw is
backwards on a map of crowns. The surface where the teeth meet is smooth across the whole arch, though,
even where single columns do not show it. A low-order surface is fitted first to the middles of the
columns of the map (where a column crosses both jaws its middle lies near the contact), then twice to
the lowest voxels of the pieces above it and the highest of those below: the contact itself. A piece
that lies well on both sides of the final surface is cut along it, and every other piece belongs to
the jaw on whose side most of it lies.

It assumes that both jaws are in the field of view. On a true map of one jaw of Validation_0002 the
surface ran through the middle of the teeth and the numbering fell from 0.75 to 0.37 (upper) and 0.63
to 0.40 (lower). Two checks catch some of it: where every piece lies on one side there is no surface,
and where the pieces below the surface mostly point their roots up the cut is undone
(:func:`roots_contradict_the_sides`: the upper jaw above); the lower jaw alone is not caught, so the
user can say which jaws a scan holds (``jaws_in_view`` of ``teeth_from_boundary``; ``segment --jaws``).
It is therefore an option of the step that uses it (``occlusal_share`` of ``teeth_from_boundary``), for
models of full-dentition scans, not a default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..handedness import _root_direction
from ..volume import Volume

__all__ = ["occlusal_surface", "split_at_occlusal_surface", "roots_contradict_the_sides"]

#: Polynomial degree of the surface in the axial plane: 2 follows the curve of Spee and the arch's tilt;
#: 3 bent towards single teeth on the maps tried (unseen patient, three intensity families).
_DEGREE = 2
#: Residuals beyond this many robust standard deviations are ignored in the next fit (columns through
#: one jaw only, whose middle is that tooth's middle).
_OUTLIER_SIGMAS = 2.5
_ROUNDS = 5
#: The first surface is fitted to the columns at least this share of the longest ones (the 95th percentile).
_LONG_COLUMN = 0.6
#: Refits from the pieces on one side of the surface (see :func:`occlusal_surface`).
_REFINEMENTS = 2
#: Coordinates are divided by this (mm) before the powers are taken, for a well-conditioned fit.
_SCALE_MM = 50.0


def _powers(y_mm: np.ndarray, x_mm: np.ndarray) -> np.ndarray:
    y, x = y_mm / _SCALE_MM, x_mm / _SCALE_MM
    return np.stack([y**i * x**(d - i) for d in range(_DEGREE + 1) for i in range(d + 1)], axis=1)


def _fitted_surface(rows: np.ndarray, columns: np.ndarray, heights: np.ndarray, weight: np.ndarray,
                    shape: tuple[int, ...], spacing_zyx: Sequence[float]) -> np.ndarray:
    """Heights over the (y, x) grid of ``shape`` of the polynomial fitted to the points, robustly: points
    beyond ``_OUTLIER_SIGMAS`` robust deviations from one fit are left out of the next."""
    design = _powers(rows * float(spacing_zyx[1]), columns * float(spacing_zyx[2]))
    base, current = weight.astype(float), weight.astype(float)
    coefficients = np.zeros(design.shape[1])
    for _ in range(_ROUNDS):
        if np.count_nonzero(current) < design.shape[1]:
            break
        coefficients = np.linalg.lstsq(design * current[:, None], heights * current, rcond=None)[0]
        residual = heights - design @ coefficients
        sigma = 1.4826 * np.median(np.abs(residual[current > 0])) + 1e-6
        current = base * (np.abs(residual) < _OUTLIER_SIGMAS * sigma)
    y, x = np.meshgrid(np.arange(shape[1]) * float(spacing_zyx[1]), np.arange(shape[2]) * float(spacing_zyx[2]),
                       indexing="ij")
    return (_powers(y.ravel(), x.ravel()) @ coefficients).reshape(y.shape)


def _lowest_and_highest(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns, and the lowest and highest index along axis 0, of every (y, x) column of ``mask``
    that holds a voxel (argmax of a bool array: no integer copy of the volume)."""
    rows, columns = np.nonzero(mask.any(axis=0))
    lowest = np.argmax(mask, axis=0)[rows, columns]
    highest = mask.shape[0] - 1 - np.argmax(mask[::-1], axis=0)[rows, columns]
    return rows, columns, lowest, highest


def _sides(instances: np.ndarray, surface: np.ndarray):
    """Per instance: value, bounding box, its mask there, and the part of the mask above ``surface``."""
    for index, box in enumerate(ndimage.find_objects(instances)):
        if box is None:
            continue
        mask = instances[box] == index + 1
        heights = np.arange(box[0].start, box[0].stop)[:, None, None]
        yield index + 1, box, mask, mask & (heights > surface[box[1:]][None])


def _straddles(mask: np.ndarray, above: np.ndarray, min_share: float, min_piece_voxels: float) -> bool:
    upper, total = int(above.sum()), int(mask.sum())
    smaller = min(upper, total - upper)
    return smaller >= min_share * total and smaller >= min_piece_voxels


def occlusal_surface(instances: np.ndarray, spacing_zyx: Sequence[float], min_share: float = 0.25,
                     min_piece_mm3: float = 50.0, both_jaws: bool = False) -> np.ndarray | None:
    """Height of the occlusal surface (in voxels along axis 0, fractional) over every (y, x) column of a
    canonical 3D map of tooth instances (axes towards superior, posterior, left), or None where the teeth
    show no such surface (every piece lies across it, or all on one side: one jaw).

    A first surface through the middles of the columns (longer columns weigh more: they cross both jaws)
    is refined twice from the pieces that lie on one side of it: the lowest voxels of the upper ones and the
    highest of the lower ones, whose contact the surface is. The refinement is what makes it hold where
    many columns cross one jaw only (Validation_0001, whose lower arch sits inside the upper one: the first
    surface runs through the upper crowns there). A piece across it (``min_share`` of it and
    ``min_piece_mm3`` on each side) adds only the inner ends of its two parts, where it crosses the surface
    (its outer ends are another jaw's), which holds the surface there where no piece lies on one side.

    With no piece wholly on one side, a map of one jaw cut through the middle of its teeth and a map of both
    jaws joined along the whole bite look alike, so the answer is None, unless ``both_jaws`` (the user said
    the scan holds both): then the surface is fitted from the inner ends alone. A longer-trained binary model
    joined the jaws that way on one synthetic scan: 13 teeth of 30 found without it, 28 with it."""
    if instances.ndim != 3 or instances.shape[0] == 1:
        raise InputError("the occlusal surface is a 3D notion; this tooth map is 2D")
    tooth = instances > 0
    if not tooth.any():
        raise InputError("the occlusal surface needs a tooth map with teeth in it")
    rows, columns, lowest, highest = _lowest_and_highest(tooth)
    extent = highest - lowest + 1.0
    long = extent >= _LONG_COLUMN * np.percentile(extent, 95)  # across both jaws, where they meet
    surface = _fitted_surface(rows[long], columns[long], (lowest[long] + highest[long]) / 2.0, extent[long],
                              tooth.shape, spacing_zyx)
    min_piece_voxels = min_piece_mm3 / float(np.prod(spacing_zyx))
    for _ in range(_REFINEMENTS):
        points: list[tuple[np.ndarray, ...]] = []
        sides = {"upper": 0, "lower": 0}
        crossing = 0
        for _, box, mask, above in _sides(instances, surface):
            if _straddles(mask, above, min_share, min_piece_voxels):
                crossing += 1
                parts = ((above, True), (mask & ~above, False))  # where it crosses: holds the surface there
            else:
                upper = 2 * int(above.sum()) >= int(mask.sum())
                sides["upper" if upper else "lower"] += 1
                parts = ((mask, upper),)
            for part, upper in parts:
                r, c, low, high = _lowest_and_highest(part)
                points.append((r + box[1].start, c + box[2].start, (low if upper else high) + box[0].start))
        if min(sides.values()) == 0 and not (both_jaws and crossing):
            return None
        r, c, h = (np.concatenate(part) for part in zip(*points))
        surface = _fitted_surface(r, c, h.astype(float), np.ones(h.size), tooth.shape, spacing_zyx)
    return surface


def split_at_occlusal_surface(instances: np.ndarray, surface: np.ndarray, spacing_zyx: Sequence[float],
                              min_share: float = 0.25,
                              min_piece_mm3: float = 50.0) -> tuple[np.ndarray, dict[int, str]]:
    """Instances cut along the occlusal ``surface`` (:func:`occlusal_surface`) where at least ``min_share``
    of an instance, and ``min_piece_mm3``, lies on each side (the lower part gets a new value), and each
    instance's jaw (``upper`` or ``lower``: the side holding most of it). Returns a new array."""
    out = instances.copy()
    jaws: dict[int, str] = {}
    next_value = int(instances.max()) + 1
    min_piece_voxels = min_piece_mm3 / float(np.prod(spacing_zyx))
    for value, box, mask, above in _sides(instances, surface):
        if _straddles(mask, above, min_share, min_piece_voxels):
            out[box][mask & ~above] = next_value
            jaws[value], jaws[next_value] = "upper", "lower"
            next_value += 1
        else:
            jaws[value] = "upper" if 2 * int(above.sum()) >= int(mask.sum()) else "lower"
    return out, jaws


def roots_contradict_the_sides(instances: np.ndarray, jaws: dict[int, str], spacing_zyx: Sequence[float]) -> bool:
    """Whether the surface cut an upper jaw alone in two: the pieces below it whose crown-to-root direction
    is clearly vertical point their roots up, by a clear majority (at least 3 of them, at least twice as
    many up as down). Those are the upper crowns the cut took off their roots: on a true map of
    Validation_0002's upper jaw alone, 10 of 10 such pieces below the surface (0.9 mm; 7 of 7 at 0.6 mm),
    and 7 of 7 on the bundled binary model's map of the real head CT, which holds the upper jaw only; on
    the true maps of both jaws, 0 of 13 (Validation_0002) and 1 of 4 (Validation_0001).

    The pieces above the surface are not counted. A lower jaw alone did not show its crowns there pointing
    down (0 of 2 on Validation_0002's true lower jaw at 0.6 and 0.9 mm; Validation_0001's single jaws give
    no surface at all), so it is not caught either way (hence ``jaws_in_view``), while on the networks' maps
    of both jaws the pieces above are upper teeth whose thin roots were missed or which hold a lower crown,
    and their directions are noise: on the bundled binary model's maps of 18 synthetic scans with both
    jaws, 3 of 3 and 2 of 3 pointed down on two scans of Validation_0001, and counting them undid a right
    cut and numbered every tooth in the other jaw (instance Dice 0.274 -> 0.031 and 0.221 -> 0.072,
    handedness -1; 2026-12-07)."""
    canonical = Volume(instances, spacing=tuple(float(s) for s in spacing_zyx[::-1]))  # LPS axes, identity
    boxes = ndimage.find_objects(instances)
    up = down = 0
    for value, jaw in jaws.items():
        if jaw != "lower" or value > len(boxes) or boxes[value - 1] is None:
            continue
        root = _root_direction(canonical, value, boxes[value - 1])
        if root is not None and abs(root[2]) >= 0.5:  # upper roots point up (LPS +z)
            if root[2] > 0:
                up += 1
            else:
                down += 1
    return up >= 3 and up >= 2 * down
