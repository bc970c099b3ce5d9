"""Teeth that a tooth map joined side by side, cut apart along the dental arch.

Neighbouring teeth touch at their contacts, and a coarse map fills the contact in: on the unseen STS-2024
patient the binary cascade's map held 31+32+33 as one piece of 770 mm³, under the size (``max_tooth_mm3``)
at which a piece is split at its necks, because lower incisors are small. What gives such a piece away is
its length along the arch: teeth follow each other along it, and a piece that spans clearly more than
one expected mesiodistal width there (:data:`~.arch_numbering.MESIODISTAL_MM`; 1.4 by default) holds as
many teeth as it spans. It is
cut across the arch where it is thinnest, near the evenly spaced borders between them: a column of the map
(a (y, x) position, all heights) goes to one part.

It needs each piece's jaw (the arch and the widths are a jaw's), which the occlusal split gives
(:mod:`.occlusion`). No true tooth of either STS-2024 patient is cut (a test). On the true tooth maps as one
class (0.6 mm) it made Validation_0002's numbering 0.81 -> 0.85 (Validation_0001 unchanged); on the binary
networks' maps of the unseen patient it raised the best-overlap instance Dice in all 5 cases tried (by
0.02-0.06) and the numbered one in 4 (before the numbering's drop cost; benchmarks README).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .arch_numbering import MESIODISTAL_MM, _arc_coordinates, _expected_centres

__all__ = ["split_along_arch"]

#: Histogram bin (mm) along the arch in which the thinnest place is looked for.
_BIN_MM = 0.5
#: A border between two teeth is looked for this share of the expected width either side of even spacing.
_SEARCH_SHARE = 0.3
#: The span (in expected widths) of the middle 90 % of one real tooth along the arch: 0.8-0.9 for most.
_ONE_TOOTH_SPAN = 0.9


def _centroid_xy(instances: np.ndarray, box: tuple[slice, ...], value: int,
                 spacing_zyx: Sequence[float]) -> tuple[np.ndarray, int]:
    """(x, y) in mm of the instance's centroid (axes 2 and 1 of the canonical array) and its voxel count."""
    _, rows, columns = np.nonzero(instances[box] == value)
    xy = np.array([(columns.mean() + box[2].start) * float(spacing_zyx[2]),
                   (rows.mean() + box[1].start) * float(spacing_zyx[1])])
    return xy, rows.size


def _borders(position: np.ndarray, weight: np.ndarray, low: float, high: float, count: int,
             width: float) -> np.ndarray:
    """``count - 1`` positions (mm) at which the piece is thinnest near the even division of [low, high]."""
    origin = float(position.min())
    bins = int(np.floor((float(position.max()) - origin) / _BIN_MM)) + 1
    profile = np.bincount(((position - origin) / _BIN_MM).astype(int), weights=weight, minlength=bins)
    borders = []
    for index in range(1, count):
        even = low + (high - low) * index / count - origin
        first = max(1, int((even - _SEARCH_SHARE * width) / _BIN_MM))
        last = min(bins - 2, int((even + _SEARCH_SHARE * width) / _BIN_MM))
        if last < first:
            continue
        borders.append(origin + (first + int(np.argmin(profile[first:last + 1])) + 0.5) * _BIN_MM)
    return np.array(borders)


def _weighted_quantiles(values: np.ndarray, weight: np.ndarray, shares: tuple[float, ...]) -> list[float]:
    order = np.argsort(values)
    cumulative = np.cumsum(weight[order]) / weight.sum()
    return [float(values[order][min(np.searchsorted(cumulative, q), len(values) - 1)]) for q in shares]


def split_along_arch(instances: np.ndarray, jaws: dict[int, str], spacing_zyx: Sequence[float],
                     min_span: float = 1.4) -> tuple[np.ndarray, dict[int, str]]:
    """Instances (canonical 3D array) with every piece whose span along its jaw's arch is at least
    ``min_span`` expected tooth widths cut into as many teeth as it spans (new values for the parts after
    the first), and the jaws of all pieces. Pieces without a jaw, and jaws with fewer than 3 pieces (no
    arch to fit), are left as they are. Returns a new array.

    The span is that of the middle 90 % of the piece's voxels along the arch's tangent at the piece: a
    tooth's roots lean across the arch, not along it, and a tangent does not fold where the closest point
    on the curve jumps (behind the incisors). On the 50 real teeth of both patients one tooth spans 0.8-1.2
    widths; two teeth side by side about 1.5-1.8."""
    out = instances.copy()
    jaws = dict(jaws)
    boxes = ndimage.find_objects(instances)
    next_value = len(boxes) + 1
    for jaw in ("upper", "lower"):
        values = [v for v, j in sorted(jaws.items()) if j == jaw and v <= len(boxes) and boxes[v - 1] is not None]
        if len(values) < 3:
            continue
        centroids = [_centroid_xy(instances, boxes[v - 1], v, spacing_zyx) for v in values]
        xy = np.array([c for c, _ in centroids])
        a, b, c = np.polyfit(xy[:, 0], xy[:, 1], 2, w=np.sqrt([n for _, n in centroids]))
        x0 = -b / (2 * a) if a > 1e-6 else float(np.mean(xy[:, 0]))  # the front of the arch
        centres, widths = _expected_centres(MESIODISTAL_MM[jaw]), np.asarray(MESIODISTAL_MM[jaw])
        arcs = _arc_coordinates(xy, a, b, c, x0)
        for value, centroid, arc in zip(values, xy, arcs):
            box = boxes[value - 1]
            mask = instances[box] == value
            thickness = mask.sum(axis=0)
            rows, columns = np.nonzero(thickness)
            points = np.stack([(columns + box[2].start) * float(spacing_zyx[2]),
                               (rows + box[1].start) * float(spacing_zyx[1])], axis=1)
            tangent = np.array([1.0, 2 * a * centroid[0] + b])
            position = points @ (tangent / np.hypot(*tangent))
            weight = thickness[rows, columns].astype(float)
            low, high = _weighted_quantiles(position, weight, (0.05, 0.95))
            width = float(widths[np.argmin(np.abs(centres - abs(arc)))])
            span = (high - low) / width
            count = int(round(span / _ONE_TOOTH_SPAN))
            if span < min_span or count < 2:
                continue
            borders = _borders(position, weight, low, high, count, width)
            part_of_column = np.full(thickness.shape, -1)
            part_of_column[rows, columns] = np.searchsorted(borders, position)
            for part in range(1, len(borders) + 1):
                voxels = mask & (part_of_column == part)[None]
                if voxels.any():
                    out[box][voxels] = next_value
                    jaws[next_value] = jaw
                    next_value += 1
    return out, jaws
