"""Geometry conversions between Slicer (RAS, IJK) and ToothSeg's core (LPS, ITK conventions).

Pure numpy, no Slicer import, so the tests exercise it directly:

* Slicer volume nodes give ``IJKToRAS`` (4x4) and ``arrayFromVolume`` arrays indexed ``[k, j, i]``;
* the core's :class:`toothseg.core.Volume` stores the same ``[k, j, i]`` array with spacing, origin and
  direction in LPS — RAS and LPS differ by the sign of the first two axes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RAS_FROM_LPS", "ijkToRasFromGeometry", "geometryFromIjkToRas", "lpsToRasPoints"]

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ijkToRasFromGeometry(spacing, origin, direction) -> np.ndarray:
    """4x4 IJK→RAS of a core Volume (spacing/origin in (x, y, z), direction columns = i, j, k in LPS)."""
    ijkToLps = np.eye(4)
    ijkToLps[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(spacing)
    ijkToLps[:3, 3] = origin
    return RAS_FROM_LPS @ ijkToLps


Vector3 = tuple[float, float, float]


def geometryFromIjkToRas(ijkToRas: np.ndarray) -> tuple[Vector3, Vector3, np.ndarray]:
    """(spacing, origin, direction) in the core's LPS convention from a node's IJK→RAS matrix."""
    ijkToLps = RAS_FROM_LPS @ np.asarray(ijkToRas, dtype=float)
    columns = ijkToLps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("the volume has a zero voxel size")
    return tuple(float(s) for s in spacing), tuple(float(o) for o in ijkToLps[:3, 3]), columns / spacing


def lpsToRasPoints(points: np.ndarray) -> np.ndarray:
    """(N, 3) LPS points → RAS (and back: the conversion is its own inverse)."""
    points = np.asarray(points, dtype=float)
    return points * np.array([-1.0, -1.0, 1.0])
