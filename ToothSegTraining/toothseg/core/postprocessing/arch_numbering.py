"""FDI numbers for separated teeth from the geometry of the dental arch (the instance-first design's
numbering step).

A network that only separates teeth (binary tooth + boundary, then instances) learns much less than
one that must tell 32 tooth classes apart, which is what small training sets and CPU budgets allow;
the numbers then come from where each tooth sits. In the patient frame of the header (LPS: +x the
patient's left, +y posterior, +z superior), per tooth instance:

1. **jaw**: each tooth's crown-to-root direction where it is clearly vertical (upper roots point up),
   else the jaw whose teeth lie nearest in height (or two height groups ``jaw_gap_mm`` apart);
2. **side**: a parabola fitted to the jaw's centroids in the axial plane (the arch), its vertex is the
   midline; teeth at larger x than the vertex are on the patient's left (quadrants 2 and 3);
3. **position**: the arc length along the parabola from the midline to each tooth's closest point on
   it, matched to the expected centres of positions 1-8 (cumulative mean mesiodistal crown widths, per
   jaw) by dynamic programming: positions increase away from the midline, gaps (missing teeth) allowed,
   the patient's arch size fitted as one scale per jaw.

Where a network also says each tooth's type (incisor, canine, premolar, molar: ``type_votes``, the share
of the tooth's voxels voting for each), a position of another type costs ``type_weight`` (mm², against
the squared distances) times the votes against it: the type says which group a tooth belongs to, the
arch where in the group; gaps in front of a group (a missing central incisor) no longer shift the rest.

A piece may also be left unnumbered, at a cost in proportion to its volume (``drop_weight`` mm² for a
tooth of the jaw's median volume, plus ``type_weight`` when it is typed): a fragment, or a tooth put in the
wrong jaw, then no longer takes a position and pushes the teeth behind it one place back. On the true
dentitions nothing is dropped; on the binary networks' maps of the unseen patient it was what shifted
whole quadrants (benchmarks README).

It numbers permanent teeth (11-48) only, and says when it cannot tell (fewer than two teeth in a jaw).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..handedness import _root_direction
from ..volume import Volume

__all__ = ["ArchNumbering", "number_teeth_from_arch", "renumber_from_arch", "MESIODISTAL_MM", "TOOTH_TYPES",
           "POSITION_TYPES", "type_of_position"]

#: Mean mesiodistal crown widths (mm) of permanent teeth, positions 1-8 (central incisor … third molar),
#: from the usual dental-anatomy tables; only their ratios and sums matter (the scale is fitted).
MESIODISTAL_MM = {"upper": (8.6, 6.6, 7.6, 7.0, 6.6, 10.2, 9.0, 8.6),
                  "lower": (5.3, 5.9, 6.9, 7.0, 7.1, 11.1, 10.5, 10.0)}
#: Arch sizes tried (one per jaw, both sides): a scale of the expected centres. Fitting a midline shift
#: as well was tried and numbered worse on both STS-2024 patients (it explains gaps away).
SCALES = np.linspace(0.75, 1.3, 23)
#: Tooth types in the order of ``type_votes``; positions 1-8 of a quadrant have these types.
TOOTH_TYPES = ("incisor", "canine", "premolar", "molar")
POSITION_TYPES = (0, 0, 1, 2, 2, 3, 3, 3)
#: Cost (mm², against the squared distances) of leaving a tooth of the jaw's median volume unnumbered;
#: smaller pieces cost less in proportion (``_assign_positions``' ``drop_cost``). 0: every piece numbered.
DROP_WEIGHT = 100.0


def type_of_position(fdi: int) -> int:
    """Index into :data:`TOOTH_TYPES` of a permanent FDI number (11-48)."""
    position = fdi % 10
    if fdi // 10 not in (1, 2, 3, 4) or not 1 <= position <= 8:
        raise ValueError(f"{fdi} is not a permanent FDI tooth number")
    return POSITION_TYPES[position - 1]


@dataclass
class ArchNumbering:
    """Instance value → FDI number, and what could not be numbered (with why)."""

    numbers: dict[int, int] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    def relabel(self, instances: np.ndarray) -> np.ndarray:
        """The instance map with FDI numbers (unnumbered instances become 0)."""
        lookup = np.zeros(int(instances.max()) + 1, dtype=np.uint16)
        for value, number in self.numbers.items():
            lookup[value] = number
        return lookup[instances]


def _expected_centres(widths: tuple[float, ...]) -> np.ndarray:
    edges = np.concatenate([[0.0], np.cumsum(widths)])
    return (edges[:-1] + edges[1:]) / 2.0


def _assign_positions(distances: np.ndarray, target: np.ndarray, type_cost: np.ndarray | None = None,
                      drop_cost: np.ndarray | None = None) -> tuple[list[int | None], float]:
    """Positions (1-based, strictly increasing) for teeth sorted by distance from the midline, matched
    to the expected centres ``target`` (mm) by least squares plus ``type_cost`` (teeth x positions, mm²);
    gaps (missing teeth) cost nothing. With ``drop_cost`` (mm² per tooth) a tooth may also be left without
    a position (None) at that cost: a fragment, or a tooth of the other jaw, then no longer pushes the
    teeth behind it one position back."""
    n, m = len(distances), len(target)
    if n == 0:
        return [], 0.0
    if n > m and drop_cost is None:
        return [], np.inf
    cost = (distances[:, None] - target[None, :]) ** 2  # (teeth, positions)
    if type_cost is not None:
        cost = cost + type_cost
    # table[i, j]: the first i teeth placed among the first j positions; move: 0 position j-1 empty,
    # 1 tooth i-1 at position j-1, 2 tooth i-1 dropped
    table = np.full((n + 1, m + 1), np.inf)
    move = np.zeros((n + 1, m + 1), dtype=np.int8)
    table[0, :] = 0.0
    for i in range(1, n + 1):
        for j in range(0, m + 1):
            options = [table[i, j - 1] if j > 0 else np.inf,
                       table[i - 1, j - 1] + cost[i - 1, j - 1] if j > 0 else np.inf,
                       table[i - 1, j] + drop_cost[i - 1] if drop_cost is not None else np.inf]
            move[i, j] = int(np.argmin(options))
            table[i, j] = options[move[i, j]]
    if not np.isfinite(table[n, m]):
        return [], np.inf
    positions: list[int | None] = []
    i, j = n, m
    while i > 0:
        if move[i, j] == 0:
            j -= 1
        elif move[i, j] == 1:
            positions.append(j)
            i, j = i - 1, j - 1
        else:
            positions.append(None)
            i -= 1
    return positions[::-1], float(table[n, m])


def _arc_coordinates(xy: np.ndarray, a: float, b: float, c: float, x0: float) -> np.ndarray:
    """Signed arc length from the vertex (x0) along y = a x² + b x + c of each point's closest point on
    the curve (closest, not straight below: a third molar sitting inwards is still behind the second)."""
    span = np.abs(xy[:, 0] - x0).max() + 20.0
    x = np.linspace(x0 - span, x0 + span, 2001)
    y = a * x**2 + b * x + c
    step = np.hypot(np.diff(x), np.diff(y))
    arc = np.concatenate([[0.0], np.cumsum(step)])
    arc -= np.interp(x0, x, arc)
    nearest = np.argmin((xy[:, :1] - x[None]) ** 2 + (xy[:, 1:] - y[None]) ** 2, axis=1)
    return arc[nearest]


def number_teeth_from_arch(instances: Volume, min_mm3: float = 20.0, jaw_gap_mm: float = 6.0,
                           type_votes: dict[int, np.ndarray] | None = None,
                           type_weight: float = 100.0, jaws: dict[int, str] | None = None,
                           drop_weight: float = DROP_WEIGHT) -> ArchNumbering:
    """FDI numbers for the tooth instances (values 1…N) of a 3D map; see the module docstring.

    ``type_votes[value]``: the instance's shares of voxels per :data:`TOOTH_TYPES` (summing to 1); an
    instance without votes costs nothing for any position. ``jaws[value]``: ``upper`` or ``lower`` where
    the network said it (a tooth-jaw model); it overrides the crown-to-root direction, which a map of
    crowns without roots gets backwards."""
    array = instances.array
    result = ArchNumbering()
    boxes = ndimage.find_objects(array)
    centroids: dict[int, np.ndarray] = {}
    volumes: dict[int, float] = {}
    for index, box in enumerate(boxes):
        if box is None:
            continue
        value = index + 1
        kji = np.nonzero(array[box] == value)
        if len(kji[0]) * instances.voxel_volume_mm3 < min_mm3:
            result.skipped[value] = f"under {min_mm3:g} mm3"
            continue
        centre = np.array([c.mean() + s.start for c, s in zip(kji, box)])
        volumes[value] = len(kji[0]) * instances.voxel_volume_mm3
        centroids[value] = instances.index_to_physical(centre[::-1][None])[0]
    if len(centroids) < 2:
        result.skipped.update({v: "fewer than two teeth" for v in centroids})
        return result
    values = sorted(centroids)
    # jaw: a tooth whose crown-to-root direction is clearly vertical says it (upper roots point up);
    # the others join the jaw whose decided teeth lie nearest in height (without any decided tooth:
    # two groups by height, when they stand ``jaw_gap_mm`` apart)
    jaw_of: dict[int, str] = {v: jaws[v] for v in values if jaws and jaws.get(v) in ("upper", "lower")}
    for v in values:
        if v in jaw_of:
            continue
        root = _root_direction(instances, v, boxes[v - 1])
        if root is not None and abs(root[2]) >= 0.5:
            jaw_of[v] = "upper" if root[2] > 0 else "lower"
    heights = {v: centroids[v][2] for v in values}
    level = {jaw: np.median([heights[v] for v in values if jaw_of.get(v) == jaw])
             for jaw in ("upper", "lower") if any(j == jaw for j in jaw_of.values())}
    if len(level) < 2:
        z = np.array(list(heights.values()))
        low, high = z.min(), z.max()
        for _ in range(20):
            upper = np.abs(z - high) < np.abs(z - low)
            if upper.all() or not upper.any():
                break
            low, high = z[~upper].mean(), z[upper].mean()
        if high - low > jaw_gap_mm:
            level = {"upper": high, "lower": low}
    for v in values:
        if v in jaw_of:
            continue
        if len(level) == 2:
            jaw_of[v] = min(level, key=lambda jaw: abs(heights[v] - level[jaw]))
        elif len(level) == 1:
            jaw_of[v] = next(iter(level))
        else:
            result.skipped[v] = "neither its height nor its crown-to-root direction tells its jaw"
    for jaw in ("upper", "lower"):
        teeth = [v for v in values if jaw_of.get(v) == jaw]
        if len(teeth) < 2:
            result.skipped.update({v: f"the only tooth of the {jaw} jaw" for v in teeth})
            continue
        xy = np.array([centroids[v][:2] for v in teeth])
        a, b, c = np.polyfit(xy[:, 0], xy[:, 1], 2) if len(teeth) >= 3 else (0.0, 0.0, float(xy[:, 1].mean()))
        x0 = -b / (2 * a) if a > 1e-6 else float(np.mean(xy[:, 0]))  # vertex: the front of the arch
        arc = _arc_coordinates(xy, a, b, c, x0)  # < 0: the patient's right (LPS −x)
        quadrants = {"upper": (1, 2), "lower": (4, 3)}[jaw]  # (patient's right, patient's left)
        centres = _expected_centres(MESIODISTAL_MM[jaw])
        sorted_sides = [sorted((abs(s), v) for s, v in zip(arc, teeth) if s * side > 0 or (s == 0 and side == 1))
                        for side in (-1, 1)]
        for members in sorted_sides:  # a quadrant holds 8 teeth: more pieces are fragments, the smallest go
            if len(members) > len(centres):
                kept = set(sorted((v for _, v in members), key=lambda v: -volumes[v])[:len(centres)])
                result.skipped.update({v: f"one of more than {len(centres)} pieces on one side of the {jaw} jaw, "
                                          "and among the smallest" for _, v in members if v not in kept})
                members[:] = [(d, v) for d, v in members if v in kept]
        best = None
        position_types = np.array(POSITION_TYPES)
        type_costs = [None if not type_votes else
                      np.array([type_weight * (1.0 - np.asarray(type_votes[v], float)[position_types])
                                if v in type_votes else np.zeros(len(position_types)) for _, v in members])
                      for members in sorted_sides]
        typical = float(np.median([volumes[v] for v in teeth]))
        # a typed tooth's drop also forgoes its type: dropping it must cost more than a wrong vote
        drop_costs = [np.array([(drop_weight + (type_weight if type_votes and v in type_votes else 0.0))
                                * volumes[v] / typical for _, v in members]) if drop_weight > 0 else None
                      for members in sorted_sides]
        for scale in SCALES:  # one arch size for both sides of the jaw
            sides, cost = [], 0.0
            for members, type_cost, drop_cost in zip(sorted_sides, type_costs, drop_costs):
                positions, part = _assign_positions(np.array([d for d, _ in members]), centres * scale,
                                                    type_cost if members else None, drop_cost)
                sides.append((members, positions))
                cost += part
            if best is None or cost < best[0]:
                best = (cost, sides)
        assert best is not None  # at most 8 pieces a side are left, so every scale gives a finite cost
        for (members, positions), quadrant in zip(best[1], quadrants):
            for (_, v), position in zip(members, positions):
                if position is None:
                    result.skipped[v] = "no position of its side fits it (a fragment, or another jaw's tooth)"
                else:
                    result.numbers[v] = quadrant * 10 + position
    return result


def renumber_from_arch(labels: Volume, min_mm3: float = 20.0) -> tuple[Volume, ArchNumbering]:
    """A labelled dentition renumbered from its geometry alone: each connected piece of each label of at
    least ``min_mm3`` is one tooth instance (two teeth a network gave one number stay two), numbered by
    :func:`number_teeth_from_arch`; pieces it cannot number become background."""
    array = labels.array
    instances = np.zeros(array.shape, dtype=np.int32)
    structure = ndimage.generate_binary_structure(3, 3)
    voxel = labels.voxel_volume_mm3
    count = 0
    for index, box in enumerate(ndimage.find_objects(array)):
        if box is None:
            continue
        pieces, n = ndimage.label(array[box] == index + 1, structure)
        sizes = np.bincount(pieces.ravel())
        for piece in range(1, n + 1):
            if sizes[piece] * voxel >= min_mm3:
                count += 1
                instances[box][pieces == piece] = count
    result = number_teeth_from_arch(labels.with_array(instances), min_mm3)
    return labels.with_array(result.relabel(instances).astype(array.dtype)), result
