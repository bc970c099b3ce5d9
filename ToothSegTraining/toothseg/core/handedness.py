"""Handedness of an FDI label map: are the patient's right teeth numbered as right ones?

A mirrored dentition is a valid-looking anatomy, so nothing but geometry tells a correctly numbered
label map from a mirrored one (both STS-2024 label maps are mirrored in their own LPS headers). The
contract used by data manifests, training recipes and every prediction:

From the tooth centroids (LPS, mm) three directions are estimated,

* ``left``: from the patient's right teeth (quadrants 1/4/5/8) towards the left ones (2/3/6/7),
  pairing teeth of the same position where both sides have one;
* ``molars``: from the incisors towards the molars (slope of centroid against tooth position within
  each quadrant, averaged over quadrants so that the lateral parts cancel), made orthogonal to ``left``;
* ``upper``: from the lower teeth towards the upper ones (pairs of the same side and position, else
  the jaw means made orthogonal to the other two directions); with one jaw only, from each tooth's
  crown towards its root tip (the crown is the bulky end: the voxel distribution along the tooth's
  long axis has its thin tail at the apex), upwards for upper teeth and downwards for lower ones;

and ``determinant = det[left, molars, upper]`` (unit vectors). A correctly numbered dentition in a
correct header gives a right-handed frame (about +1: left is +x, posterior +y, superior +z in LPS);
a mirrored one gives about -1. Too few teeth (none on one side, a single tooth position) or a
degenerate frame give ``sign == 0`` with the reason, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .labels import LabelTable, is_fdi_tooth
from .volume import Volume

__all__ = ["Handedness", "handedness_of", "mirror_label_numbers", "MIRRORED_MESSAGE"]

MIN_DETERMINANT = 0.5  # |det| below this: the frame is too skewed to decide
RIGHT_QUADRANTS = (1, 4, 5, 8)
UPPER_QUADRANTS = (1, 2, 5, 6)

MIRRORED_MESSAGE = ("left/right numbering is mirrored: the teeth numbered as the patient's right lie on the "
                    "patient's left in this image's LPS frame (handedness {det:+.2f}; a correctly numbered "
                    "dentition gives about +1); either the labels or the image header's orientation is "
                    "mirrored")
#: Where a mirrored frame has its left/right as the header says and one other axis against it, the header
#: is at fault: either that axis alone is flipped (the numbers may be right; the real head CT here is stored
#: face to LPS +y) or the head is turned 180 degrees in it (left/right swapped too). Geometry cannot tell the
#: two apart, so the message names both and sends the user to the scan's orientation.
FLIPPED_AXIS_MESSAGE = ("left/right numbering looks mirrored (handedness {det:+.2f}): the teeth's left/right agrees "
                        "with the image header but their {axis} does not ({what}). Either the header's {axis} "
                        "axis is flipped, and the numbers may be right, or the head is turned in the header, and "
                        "left and right are swapped as well: check the scan's orientation before trusting or "
                        "renumbering the left/right tooth numbers")
_AXIS_EVIDENCE = {"anterior-posterior": "the incisors lie posterior to the molars (LPS +y)",
                  "superior-inferior": "the upper teeth lie below the lower ones (LPS -z)"}
#: A direction agrees with its LPS axis beyond this cosine (and disagrees below minus it).
_AXIS_COSINE = 0.5


@dataclass(frozen=True)
class Handedness:
    """The frame of a dentition and its verdict.

    ``sign``: +1 right-handed (correct), -1 mirrored, 0 cannot tell (``reason`` says why).
    Vectors are unit vectors in LPS; ``None`` where they could not be estimated.
    """

    sign: int
    determinant: float | None
    reason: str
    left: tuple[float, float, float] | None = None
    molars: tuple[float, float, float] | None = None
    upper: tuple[float, float, float] | None = None
    upper_from: str | None = None  # "jaws" or "root direction"
    teeth: list[int] = field(default_factory=list)

    @property
    def suspect_axis(self) -> str | None:
        """For a mirrored frame in a header near LPS: the one axis whose direction disagrees with the teeth
        (``left-right``: the numbers or the header's x; ``anterior-posterior``, ``superior-inferior``: the
        header), or None (not mirrored, or an oblique or doubly flipped header)."""
        if self.sign >= 0 or self.left is None or self.molars is None or self.upper is None:
            return None
        cosines = {"left-right": self.left[0], "anterior-posterior": self.molars[1],
                   "superior-inferior": self.upper[2]}
        against = [axis for axis, c in cosines.items() if c < -_AXIS_COSINE]
        if len(against) == 1 and all(c > _AXIS_COSINE for axis, c in cosines.items() if axis not in against):
            return against[0]
        return None

    @property
    def mirrored(self) -> bool:
        return self.sign < 0

    @property
    def verdict(self) -> str:
        return {1: "correct", -1: "mirrored", 0: "undetermined"}[self.sign]

    def message(self) -> str:
        """One line for a report or a warning."""
        if self.sign < 0:
            axis = self.suspect_axis
            if axis in _AXIS_EVIDENCE:
                return FLIPPED_AXIS_MESSAGE.format(det=self.determinant, axis=axis, what=_AXIS_EVIDENCE[axis])
            return MIRRORED_MESSAGE.format(det=self.determinant)
        if self.sign > 0:
            return f"left/right numbering consistent with the image's orientation (handedness {self.determinant:+.2f})"
        return f"left/right numbering cannot be checked: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        def rounded(v):
            return None if v is None else [round(float(x), 3) for x in v]

        return {"verdict": self.verdict, "sign": self.sign,
                "determinant": None if self.determinant is None else round(float(self.determinant), 3),
                "reason": self.reason, "left": rounded(self.left), "molars": rounded(self.molars),
                "upper": rounded(self.upper), "upper_from": self.upper_from, "teeth": len(self.teeth),
                "suspect_axis": self.suspect_axis}


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else None


def _tooth_points(labels: Volume, min_mm3: float) -> tuple[dict[int, np.ndarray], dict[int, tuple]]:
    """Centroid (LPS mm) and bounding box of each FDI tooth of at least ``min_mm3``.

    One pass for the boxes, then each tooth within its own box (a 640 x 640 x 400 map in about a second)."""
    array = labels.array
    boxes = ndimage.find_objects(array)
    centroids, kept = {}, {}
    for index, box in enumerate(boxes):
        value = index + 1
        if box is None or not is_fdi_tooth(value):
            continue
        kji = np.nonzero(array[box] == value)
        if len(kji[0]) * labels.voxel_volume_mm3 < min_mm3:
            continue
        centre = np.array([c.mean() + s.start for c, s in zip(kji, box)])
        centroids[value] = labels.index_to_physical(centre[::-1][None])[0]
        kept[value] = box
    return centroids, kept


def _root_direction(labels: Volume, value: int, box: tuple[slice, ...], max_voxels: int = 20000) -> np.ndarray | None:
    """Unit LPS vector from a tooth's crown towards its root tip, or None when its shape does not tell.

    The tooth's long axis is its first principal axis; the crown is the bulky end, so the distribution
    of voxels along the axis is skewed with its long thin tail at the apex."""
    kji = np.argwhere(labels.array[box] == value)
    if len(kji) < 30:
        return None
    if len(kji) > max_voxels:
        kji = kji[np.random.default_rng(0).choice(len(kji), max_voxels, replace=False)]
    kji = kji + np.array([s.start for s in box])
    points = labels.index_to_physical(kji[:, ::-1].astype(float))
    centred = points - points.mean(axis=0)
    _, values, vectors = np.linalg.svd(centred, full_matrices=False)
    if values[0] < 1.2 * values[1]:  # no clear long axis
        return None
    axis = vectors[0]
    t = centred @ axis
    skew = float(np.mean(t**3) / (np.mean(t**2) ** 1.5 + 1e-12))
    if abs(skew) < 0.1:
        return None
    return axis * np.sign(skew)


def handedness_of(labels: Volume, min_mm3: float = 10.0) -> Handedness:
    """The handedness of an FDI label map (3D); see the module docstring. Labels under ``min_mm3``
    (fragments; a real tooth is hundreds of mm3) are left out."""
    if labels.is_2d:
        return Handedness(0, None, "a 2D image has no 3D frame")
    if not np.issubdtype(labels.array.dtype, np.integer):
        return Handedness(0, None, "the label map is not an integer image")
    centroids, boxes = _tooth_points(labels, min_mm3)
    present = sorted(centroids)
    if len(present) < 2:
        return Handedness(0, None, f"{len(present)} tooth/teeth in the label map (need teeth on both sides)",
                          teeth=present)
    right = [v for v in present if v // 10 in RIGHT_QUADRANTS]
    left_teeth = [v for v in present if v // 10 not in RIGHT_QUADRANTS]
    if not right or not left_teeth:
        return Handedness(0, None, "teeth on one side only", teeth=present)
    # left: pairs at the same position in the same jaw (11<->21, 46<->36, ...), else the side means
    pairs = [(v, partner) for v in right if (partner := v + 10 if v // 10 in (1, 5) else v - 10) in left_teeth]
    if pairs:
        left_vec = np.mean([centroids[b] - centroids[a] for a, b in pairs], axis=0)
    else:
        left_vec = np.mean([centroids[v] for v in left_teeth], axis=0) - np.mean([centroids[v] for v in right], axis=0)
    left = _unit(left_vec)
    # molars: per quadrant, slope of centroid against tooth position
    slopes = []
    for quadrant in sorted({v // 10 for v in present}):
        teeth = [v for v in present if v // 10 == quadrant]
        if len(teeth) < 2:
            continue
        position = np.array([v % 10 for v in teeth], float)
        points = np.array([centroids[v] for v in teeth])
        dp = position - position.mean()
        slopes.append((dp[:, None] * (points - points.mean(0))).sum(0) / (dp @ dp))
    if left is None or not slopes:
        return Handedness(0, None, "no quadrant has two teeth of different positions", teeth=present)
    molar_vec = np.mean(slopes, axis=0)
    molar_vec = molar_vec - (molar_vec @ left) * left
    molars = _unit(molar_vec)
    # upper: upper minus lower teeth at the same side and position (16 over 46, 21 over 31, ...); else
    # the jaw means without their parts along the other two axes (which teeth are present biases them:
    # upper incisors over lower molars point forward too); with one jaw, the direction of the roots
    upper_teeth = [v for v in present if v // 10 in UPPER_QUADRANTS]
    lower_teeth = [v for v in present if v // 10 not in UPPER_QUADRANTS]
    opposite = {1: 4, 2: 3, 5: 8, 6: 7}
    vertical = [(v, w) for v in upper_teeth if (w := opposite[v // 10] * 10 + v % 10) in lower_teeth]
    if vertical:
        upper_vec = np.mean([centroids[v] - centroids[w] for v, w in vertical], axis=0)
        upper_from = "jaws"
    elif upper_teeth and lower_teeth:
        upper_vec = (np.mean([centroids[v] for v in upper_teeth], axis=0)
                     - np.mean([centroids[v] for v in lower_teeth], axis=0))
        if molars is not None:
            raw = float(np.linalg.norm(upper_vec))
            upper_vec = upper_vec - (upper_vec @ left) * left - (upper_vec @ molars) * molars
            if np.linalg.norm(upper_vec) < 0.3 * raw:
                upper_vec = np.zeros(3)
        upper_from = "jaws"
    else:
        directions = []
        for v in present:
            root = _root_direction(labels, v, boxes[v])
            if root is not None:
                directions.append(root if v in upper_teeth else -root)
        upper_vec = np.mean(directions, axis=0) if directions else np.zeros(3)
        upper_from = "root direction"
    upper = _unit(upper_vec)
    if molars is None or upper is None:
        return Handedness(0, None, "the teeth do not show where the molars or the upper jaw are",
                          _tuple(left), _tuple(molars), _tuple(upper), upper_from, present)
    det = float(np.linalg.det(np.stack([left, molars, upper], axis=1)))
    if abs(det) < MIN_DETERMINANT:
        return Handedness(0, det, f"the teeth give a skewed frame (determinant {det:+.2f})",
                          _tuple(left), _tuple(molars), _tuple(upper), upper_from, present)
    sign = 1 if det > 0 else -1
    reason = "right-handed frame" if sign > 0 else "left-handed frame: left/right numbering mirrored"
    return Handedness(sign, det, reason, _tuple(left), _tuple(molars), _tuple(upper), upper_from, present)


def _tuple(v: np.ndarray | None) -> tuple[float, float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]), float(v[2]))


def mirror_label_numbers(labels: np.ndarray, table: LabelTable | None = None) -> np.ndarray:
    """Swap left/right label numbers (1x<->2x, 3x<->4x, 5x<->6x, 7x<->8x, sided classes) in place of a
    mirrored numbering; the geometry is untouched, so the result has the opposite handedness."""
    return (table or LabelTable.fdi(deciduous=True, pulp=True)).swap_left_right(labels)
