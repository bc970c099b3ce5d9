"""The image container every part of ToothSeg exchanges: :class:`Volume`.

Conventions (the same as ITK/SimpleITK, so a Volume maps 1:1 onto an ``sitk.Image``):

* ``array`` is indexed ``[z, y, x]`` (slowest to fastest axis), i.e. ``[k, j, i]``.
* ``spacing``, ``origin`` and ``direction`` are given in ``(x, y, z)`` = ``(i, j, k)`` order,
  in millimetres, in the patient **LPS** frame (DICOM/ITK). Only the Slicer adapter converts to RAS.
* ``direction`` is a 3x3 matrix whose *columns* are the directions of the i, j, k axes.

A 2D panoramic X-ray is a Volume with one slice (``array.shape == (1, H, W)``) and
``kind == VolumeKind.PANORAMIC_2D``, so that the same I/O, resampling and export code serves both.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import GeometryMismatchError, InputError

__all__ = ["Volume", "VolumeKind", "check_same_geometry", "dental_input_warnings", "distinct_values"]

_GEOMETRY_RTOL = 1e-4  # relative tolerance on spacing (files store float32)
_GEOMETRY_ATOL_MM = 1e-3  # absolute tolerance on origin, in mm


class VolumeKind(str, enum.Enum):
    """What an image is, which decides which models may run on it."""

    CBCT_3D = "3d"
    PANORAMIC_2D = "2d"


@dataclass
class Volume:
    """A scalar image on a regular grid with its physical geometry (LPS, mm).

    Args:
        array: voxel values, shape ``(Z, Y, X)``; a 2D image has ``Z == 1``.
        spacing: voxel size in mm along ``(x, y, z)``; every entry finite and > 0.
        origin: LPS position in mm of the centre of voxel ``[0, 0, 0]``.
        direction: 3x3 matrix, columns = LPS directions of the i, j, k axes.
        kind: 3D CBCT (default) or 2D panoramic.
        metadata: free-form provenance (source path, modality, ...); not used for geometry.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    kind: VolumeKind = VolumeKind.CBCT_3D
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.ndim != 3:
            raise InputError(
                f"expected a 3D scalar image (or a 2D image), got an array with {array.ndim} dimensions "
                f"{tuple(array.shape)}; 4D, time series and colour volumes are not supported"
            )
        if array.size == 0:
            raise InputError(f"the image is empty (shape {tuple(array.shape)})")
        self.array = array
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise InputError(f"voxel spacing must be three finite values > 0 mm, got {self.spacing}")
        self.spacing = spacing  # type: ignore[assignment]
        origin = tuple(float(o) for o in self.origin)
        if len(origin) != 3 or not all(np.isfinite(o) for o in origin):
            raise InputError(f"image origin must be three finite values, got {self.origin}")
        self.origin = origin  # type: ignore[assignment]
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.all(np.isfinite(direction)) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
            raise InputError("image direction cosines are not an orthonormal 3x3 matrix")
        self.direction = direction
        self.kind = VolumeKind(self.kind)

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(Z, Y, X)``."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """Number of voxels along ``(x, y, z)`` (ITK's ``GetSize()``)."""
        z, y, x = self.shape
        return (x, y, z)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array axis order ``(z, y, x)``, as networks and resamplers use it."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(np.prod(self.spacing))

    @property
    def is_2d(self) -> bool:
        return self.kind == VolumeKind.PANORAMIC_2D

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel indices ``(i, j, k, 1)`` to LPS mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices of shape ``(N, 3)`` in ``(i, j, k)`` order to LPS points (mm)."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        matrix = self.ijk_to_lps()
        return ijk @ matrix[:3, :3].T + matrix[:3, 3]

    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """A new Volume on the same grid with other voxel values (labels, probabilities, ...)."""
        array = np.asarray(array)
        if array.shape[-3:] != self.array.shape and array.shape != self.array.shape[1:]:
            raise GeometryMismatchError(f"array shape {array.shape} does not match the grid {self.array.shape}")
        return replace(self, array=array, metadata=dict(self.metadata), **changes)

    def check_finite(self) -> None:
        """Raise :class:`InputError` if any voxel is NaN or infinite."""
        if np.issubdtype(self.array.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(self.array)))
            if bad:
                raise InputError(f"the image has {bad} NaN or infinite voxel value(s)")

    def describe(self) -> str:
        """One line for logs and the Slicer panel."""
        sx, sy, sz = self.spacing
        x, y, z = self.size_xyz
        return f"{x}x{y}x{z} voxels, spacing {sx:.3g}x{sy:.3g}x{sz:.3g} mm, {self.array.dtype}, {self.kind.value}"


def check_same_geometry(a: Volume, b: Volume, what_a: str = "image", what_b: str = "label map") -> None:
    """Raise :class:`GeometryMismatchError` unless ``a`` and ``b`` share one voxel grid.

    Spacing and direction are compared with a relative tolerance (files store float32);
    origins with 1 µm.
    """
    problems = []
    # each pair is written "<the what_b's> vs <the what_a's>", the order of the sentence that names them
    if a.shape != b.shape:
        problems.append(f"size {b.size_xyz} vs {a.size_xyz}")
    if not np.allclose(a.spacing, b.spacing, rtol=_GEOMETRY_RTOL, atol=0):
        problems.append(f"spacing {tuple(round(s, 5) for s in b.spacing)} vs "
                        f"{tuple(round(s, 5) for s in a.spacing)} mm")
    tol = max(_GEOMETRY_ATOL_MM, _GEOMETRY_RTOL * max(a.spacing))
    if not np.allclose(a.origin, b.origin, atol=tol, rtol=0):
        problems.append(f"origin {tuple(round(o, 3) for o in b.origin)} vs {tuple(round(o, 3) for o in a.origin)} mm")
    if not np.allclose(a.direction, b.direction, atol=1e-4):
        problems.append("direction differs")
    if problems:
        raise GeometryMismatchError(f"the {what_b} does not match the {what_a}: " + "; ".join(problems))


#: Fewer distinct values than this (in a sample of about a million voxels) is a label map or mask, not
#: a scan: label maps here hold at most ~50 values (33 in STS-2024 and UFBA-425), X-rays 200 or more
#: (UFBA-425: 200-256), CBCT/CT thousands.
_FEW_VALUES = 64


def distinct_values(array: np.ndarray, sample: int = 1_000_000) -> int:
    """Number of distinct values in a regular grid sample of at most about ``sample`` voxels (fast on any
    size: the sample is a strided view, so a large or non-contiguous scan is never copied whole)."""
    step = max(1, math.ceil((array.size / sample) ** (1 / max(1, array.ndim))))
    return int(np.unique(array[tuple(slice(None, None, step if n > step else 1) for n in array.shape)]).size)


def dental_input_warnings(size_xyz: tuple[int, ...], spacing_xyz: tuple[float, ...], is_2d: bool,
                          array: np.ndarray | None = None) -> list[str]:
    """Warnings when an image does not look like a dental CBCT (or a panoramic X-ray): results on it
    may be poor, so the user hears it before trusting them. Used by ``segment`` and by Slicer's panel.
    ``array`` (the voxels, when at hand) also catches a label map or mask given as the scan."""
    warnings = []
    if array is not None and array.size:
        count = distinct_values(array)
        if count < _FEW_VALUES:
            warnings.append(f"the image holds only {count} distinct values: it looks like a label map or mask, "
                            "not a scan, and any teeth found in it are meaningless")
    if is_2d:
        return warnings + ([] if min(size_xyz[:2]) >= 256 else ["this 2D image is small for a panoramic X-ray"])
    if max(spacing_xyz) > 1.0:
        warnings.append(f"voxels of {max(spacing_xyz):.2f} mm are coarse for dental CBCT (typically 0.1-0.5 mm): "
                        "this may be a conventional CT, and results may be poor")
    extent = [n * s for n, s in zip(size_xyz, spacing_xyz)]
    if max(extent) > 250:
        warnings.append(f"the field of view ({max(extent):.0f} mm) is large for a dental CBCT; teeth are found, "
                        "but slowly")
    return warnings
