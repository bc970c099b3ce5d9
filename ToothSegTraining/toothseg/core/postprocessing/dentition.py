"""Which tooth pieces belong to the dentition, and which lie too far from it to be teeth.

A tooth network that has seen too little real bone takes dense bone for enamel: on the real head CT the
binary models put about 80 % of their voxels on the skull vault and the walls of the maxilla. Where the
pieces lie tells them apart: a permanent dentition fits in a ball of about 45 mm radius around its middle
(arch width at the third molars about 75 mm, depth about 55 mm, upper to lower root tip about 45 mm; the
piece centroids of STS-2024 ``Validation_0001`` and ``Validation_0002`` lie within 32 and 41 mm of their
median), and bone 80 mm up the skull does not.

Which ball is the dentition is told by the intensities: enamel is the densest tissue of the head, so the
dentition is where the pieces brighter than the typical piece hold the most volume. Counting pieces does
not work: the post-processing first cuts every piece larger than a tooth into tooth-sized ones, and on the
real CT the skull's slabs became 80 pieces against 11 crowns (benchmarks README). The comparison is between
pieces of one scan, so the intensity unit does not matter (HU, CBCT grey values, any linear scale).

The ball (``radius_mm``) is first drawn around the piece whose neighbourhood holds the most such bright
volume, then re-centred on the median of the pieces it holds until they stay the same (at most three
times). A scan cropped to the teeth has every piece in the ball, and nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["DENTITION_RADIUS_MM", "pieces_off_the_dentition"]

#: A dentition's piece centroids lie within this distance of its middle (see the module docstring),
#: with 10-20 mm to spare for a large arch, a head tilted in the scanner or a middle found off-centre.
DENTITION_RADIUS_MM = 55.0
#: The intensity that stands for a piece: a high percentile of its voxels (its enamel, not its rim).
_PIECE_PERCENTILE = 95.0


def _pieces(instances: np.ndarray, image: np.ndarray, spacing: np.ndarray):
    """Values, centroids (mm), volumes (voxels) and intensities of the pieces, each read in its own box
    (a full field at 0.25 mm holds 160 M voxels: no whole-scan coordinate grids)."""
    values, centroids, volumes, brightness = [], [], [], []
    for index, box in enumerate(ndimage.find_objects(instances)):
        if box is None:
            continue
        inside = instances[box] == index + 1
        where = np.nonzero(inside)
        values.append(index + 1)
        centroids.append([(w.mean() + s.start) * d for w, s, d in zip(where, box, spacing)])
        volumes.append(len(where[0]))
        brightness.append(float(np.percentile(image[box][inside], _PIECE_PERCENTILE)))
    return np.array(values), np.array(centroids), np.array(volumes, float), np.array(brightness)


def pieces_off_the_dentition(instances: np.ndarray, spacing_zyx: Sequence[float], image: np.ndarray | None,
                             radius_mm: float = DENTITION_RADIUS_MM) -> list[int]:
    """Values of the instances (1…N, 0 background) whose centroid lies farther than ``radius_mm`` from the
    middle of the dentition (see the module docstring); empty without an ``image`` (on the same grid), with
    fewer than two pieces, or when all pieces lie together."""
    if image is None or int(instances.max()) < 2:
        return []
    values, centroids, volumes, brightness = _pieces(instances, image, np.asarray(spacing_zyx, float))
    if len(values) < 2:
        return []
    near = np.linalg.norm(centroids[:, None] - centroids[None], axis=2) <= radius_mm
    bright_volume = volumes * np.maximum(brightness - np.median(brightness), 0.0)
    inside = near[int(np.argmax(near @ bright_volume + near.sum(axis=1) * 1e-9))]  # ties: the most pieces
    for _ in range(3):
        middle = np.median(centroids[inside], axis=0)
        again = np.linalg.norm(centroids - middle, axis=1) <= radius_mm
        if (again == inside).all():
            break
        inside = again
    return [int(v) for v in values[~inside]]
