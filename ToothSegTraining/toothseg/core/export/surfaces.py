"""Per-tooth surface meshes (STL/OBJ) from a label map, with VTK.

Each label is cropped to its bounding box plus a one-voxel empty border, so the iso-surface is
always closed; the surface is extracted at the 0.5 level of the binary mask (VTK flying edges),
optionally smoothed with a windowed-sinc filter (Slicer's own mapping of a 0–1 "smoothing
factor" to the pass band) and decimated with volume preservation, then mapped from voxel indices
to patient millimetres. Coordinates are **LPS** by default, the convention of DICOM, ITK and
3D Slicer's STL writer; ``RAS`` flips x and y for tools that expect it.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import InputError, OutputWriteError
from ..io.atomic import TEMP_PREFIX, atomic_output, make_output_folder
from ..labels import LabelTable
from ..progress import Progress
from ..volume import Volume

log = logging.getLogger("toothseg")

__all__ = ["CoordinateSystem", "SurfaceOptions", "ExportedSurface", "label_surface", "label_boxes",
           "export_surfaces", "existing_surfaces", "surface_stats"]


class CoordinateSystem(str, enum.Enum):
    LPS = "LPS"
    RAS = "RAS"


@dataclass(frozen=True)
class SurfaceOptions:
    """How surfaces are made.

    Attributes:
        smoothing: 0 (none) … 1 (strong); pass band ``10**(-4*smoothing)`` as in 3D Slicer.
        decimate: fraction of triangles to remove, 0 … 0.95.
        coordinate_system: LPS (default) or RAS.
        file_format: ``stl`` or ``obj``.
    """

    smoothing: float = 0.0
    decimate: float = 0.0
    coordinate_system: CoordinateSystem = CoordinateSystem.LPS
    file_format: str = "stl"

    def __post_init__(self) -> None:
        if not 0.0 <= self.smoothing <= 1.0:
            raise InputError(f"smoothing must be between 0 and 1, got {self.smoothing}")
        if not 0.0 <= self.decimate <= 0.95:
            raise InputError(f"decimation must be between 0 and 0.95, got {self.decimate}")
        if self.file_format not in ("stl", "obj"):
            raise InputError(f"surface format must be stl or obj, got {self.file_format}")
        system = self.coordinate_system
        system = system.value if isinstance(system, CoordinateSystem) else str(system).upper()
        if system not in ("LPS", "RAS"):
            raise InputError(f"coordinate system must be LPS or RAS, got {self.coordinate_system}")
        object.__setattr__(self, "coordinate_system", CoordinateSystem(system))


@dataclass
class ExportedSurface:
    """What was written for one label (volumes in mm³, centroid in the chosen frame, mm)."""

    value: int
    path: Path | None
    triangles: int
    surface_volume_mm3: float
    voxel_volume_mm3: float
    centroid: tuple[float, float, float]
    watertight: bool


def _vtk_image(mask: np.ndarray, offset_ijk: tuple[int, int, int]):
    """vtkImageData in index units whose points are the voxel centres of ``mask`` (z, y, x)."""
    from vtkmodules.util import numpy_support  # noqa: PLC0415 (vtk: toothseg.core loads without it)
    from vtkmodules.vtkCommonDataModel import vtkImageData  # noqa: PLC0415 (vtk: toothseg.core loads without it)

    image = vtkImageData()
    z, y, x = mask.shape
    image.SetDimensions(x, y, z)
    image.SetOrigin(*[float(o) for o in offset_ijk])
    image.SetSpacing(1.0, 1.0, 1.0)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(mask).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def _index_to_output_matrix(volume: Volume, system: CoordinateSystem) -> np.ndarray:
    matrix = volume.ijk_to_lps()
    if system == CoordinateSystem.RAS:
        matrix = np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix
    return matrix


def label_boxes(labels: np.ndarray) -> list[tuple[slice, ...] | None]:
    """Bounding box (z, y, x slices) of every label value, in one pass: ``boxes[value - 1]``."""
    return ndimage.find_objects(labels.astype(np.int64, copy=False) if labels.dtype.kind != "u" else labels)


def label_surface(volume: Volume, value: int, options: SurfaceOptions = SurfaceOptions(),
                  box: tuple[slice, ...] | None = None):
    """Closed triangle surface (vtkPolyData, mm in the chosen frame) of ``volume.array == value``.

    Args:
        box: the label's bounding box if already known (see :func:`label_boxes`).

    Returns None when the label is absent.
    """
    from vtkmodules.vtkCommonMath import vtkMatrix4x4  # noqa: PLC0415 (vtk: toothseg.core loads without it)
    from vtkmodules.vtkCommonTransforms import vtkTransform  # noqa: PLC0415 (vtk: toothseg.core loads without it)
    from vtkmodules.vtkFiltersCore import (  # noqa: PLC0415 (vtk: toothseg.core loads without it)
        vtkFlyingEdges3D,
        vtkPolyDataNormals,
        vtkQuadricDecimation,
        vtkTriangleFilter,
        vtkWindowedSincPolyDataFilter,
    )
    from vtkmodules.vtkFiltersGeneral import vtkTransformFilter  # noqa: PLC0415 (vtk: toothseg.core loads without it)

    if box is None:
        boxes = label_boxes(volume.array)
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
    if box is None:
        return None
    lo = [max(0, s.start - 1) for s in box]
    hi = [min(n, s.stop + 1) for s, n in zip(box, volume.shape)]
    crop = volume.array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] == value
    padded = np.pad(crop, 1).astype(np.uint8)  # guarantees an empty border even at the image edge
    offset_ijk = (lo[2] - 1, lo[1] - 1, lo[0] - 1)

    contour = vtkFlyingEdges3D()
    contour.SetInputData(_vtk_image(padded, offset_ijk))
    contour.SetValue(0, 0.5)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    poly = contour.GetOutput()

    if options.decimate > 0:
        triangles = vtkTriangleFilter()
        triangles.SetInputData(poly)
        decimation = vtkQuadricDecimation()
        decimation.SetInputConnection(triangles.GetOutputPort())
        decimation.SetTargetReduction(options.decimate)
        decimation.VolumePreservationOn()
        decimation.Update()
        poly = decimation.GetOutput()
    if options.smoothing > 0:
        smoother = vtkWindowedSincPolyDataFilter()
        smoother.SetInputData(poly)
        smoother.SetNumberOfIterations(20)
        smoother.SetPassBand(10.0 ** (-4.0 * options.smoothing))
        smoother.BoundarySmoothingOff()
        smoother.FeatureEdgeSmoothingOff()
        smoother.NonManifoldSmoothingOn()
        smoother.NormalizeCoordinatesOn()
        smoother.Update()
        poly = smoother.GetOutput()

    matrix = _index_to_output_matrix(volume, options.coordinate_system)
    vtk_matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vtk_matrix.SetElement(r, c, float(matrix[r, c]))
    transform = vtkTransform()
    transform.SetMatrix(vtk_matrix)
    mapper = vtkTransformFilter()
    mapper.SetInputData(poly)
    mapper.SetTransform(transform)

    normals = vtkPolyDataNormals()
    normals.SetInputConnection(mapper.GetOutputPort())
    normals.SplittingOff()  # splitting duplicates points along sharp edges and opens the surface
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOn()  # outward normals and counter-clockwise triangles, whatever det(matrix)
    normals.Update()
    return normals.GetOutput()


def surface_stats(poly) -> tuple[float, tuple[float, float, float], bool, int]:
    """Enclosed volume (mm³), volume centroid, watertight+manifold flag, triangle count."""
    from vtkmodules.util import numpy_support  # noqa: PLC0415 (vtk: toothseg.core loads without it)
    from vtkmodules.vtkFiltersCore import vtkFeatureEdges, vtkMassProperties, vtkTriangleFilter  # noqa: PLC0415 (vtk: toothseg.core loads without it)

    triangles = vtkTriangleFilter()
    triangles.SetInputData(poly)
    triangles.Update()
    tri = triangles.GetOutput()
    mass = vtkMassProperties()
    mass.SetInputData(tri)
    mass.Update()
    edges = vtkFeatureEdges()
    edges.SetInputData(tri)
    edges.BoundaryEdgesOn()
    edges.NonManifoldEdgesOn()
    edges.FeatureEdgesOff()
    edges.ManifoldEdgesOff()
    edges.Update()
    watertight = edges.GetOutput().GetNumberOfCells() == 0
    # Volume centroid of a closed surface: sum over triangles of signed tetrahedra (origin, a, b, c).
    points = numpy_support.vtk_to_numpy(tri.GetPoints().GetData()).astype(np.float64)
    cells = numpy_support.vtk_to_numpy(tri.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    a, b, c = points[cells[:, 0]], points[cells[:, 1]], points[cells[:, 2]]
    signed = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
    total = signed.sum()
    centroid = ((a + b + c) * signed[:, None]).sum(axis=0) / (4.0 * total) if total else points.mean(axis=0)
    return abs(float(mass.GetVolume())), tuple(float(v) for v in centroid), watertight, int(tri.GetNumberOfCells())


def _write_poly(poly, path: Path, file_format: str, header: str, overwrite: bool) -> None:
    from vtkmodules.vtkIOGeometry import vtkOBJWriter, vtkSTLWriter  # noqa: PLC0415 (vtk: toothseg.core loads without it)

    with atomic_output(path, overwrite=overwrite) as tmp:
        if file_format == "stl":
            writer = vtkSTLWriter()
            writer.SetFileTypeToBinary()
            writer.SetHeader(header[:79])
        else:
            writer = vtkOBJWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(poly)
        if not writer.Write() or not tmp.exists() or tmp.stat().st_size == 0:
            raise OutputWriteError(f"cannot write {path} (VTK writer failed; is the disk full?)")


def export_surfaces(labels: Volume, table: LabelTable, out_dir: str | os.PathLike[str],
                    options: SurfaceOptions = SurfaceOptions(), values: list[int] | None = None,
                    merged: bool = False, overwrite: bool = False,
                    progress: Progress | None = None) -> list[ExportedSurface]:
    """Write one surface file per label (``11_upper_right_central_incisor.stl``), or one merged file.

    Args:
        labels: integer label map (3D; a single-slice 2D map has no volume to mesh).
        table: names the labels; every value present must be in it.
        values: labels to export (default: all present).
        merged: write all selected labels into one ``teeth.<ext>`` file instead.
        overwrite: replace existing files; otherwise an existing file is an error (checked first,
            before anything is written).

    The files are written into a hidden folder beside their targets and renamed into place only when
    every one is written, so a full disk, an error or a cancel half-way leaves the folder as it was
    (never a set of surfaces from two exports, nor a partial set that blocks the next run).

    Returns:
        One record per exported label, with the checks a user may want to see.
    """
    from vtkmodules.vtkFiltersCore import vtkAppendPolyData  # noqa: PLC0415 (vtk: toothseg.core loads without it)

    if labels.shape[0] < 2 and labels.is_2d:
        raise InputError("a 2D label map has no volume to turn into surfaces")
    present = table.check_array(labels.array)
    selected = values is not None
    if values is None:
        if not present:
            raise InputError("the label map holds no labels (all voxels are 0): there is nothing to export")
        values = present
    else:
        missing = [v for v in values if v not in present]
        if missing:
            raise InputError(f"label(s) {', '.join(map(str, missing))} are not in the label map")
    out_dir = make_output_folder(out_dir, "surfaces go into a folder")
    ext = options.file_format
    targets = {v: out_dir / f"{table[v].file_stem}.{ext}" for v in values}
    if merged:
        targets = {0: out_dir / f"teeth.{ext}"}
    if not overwrite:
        existing = [str(p) for p in targets.values() if p.exists()]
        if existing:
            raise OutputWriteError(f"{len(existing)} output file(s) exist, e.g. {existing[0]} (use --overwrite)")
    progress = progress or Progress()
    voxel_mm3 = labels.voxel_volume_mm3
    counts = np.bincount(labels.array.ravel(), minlength=max(values, default=0) + 1)
    boxes = label_boxes(labels.array)
    results: list[ExportedSurface] = []
    append = vtkAppendPolyData()
    system = options.coordinate_system.value
    staging = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=out_dir))
    try:
        for index, value in enumerate(values):
            progress.update(index / max(1, len(values)), f"surface {table[value].segment_name}")
            poly = label_surface(labels, value, options, box=boxes[value - 1])
            volume_mm3, centroid, watertight, n_tri = surface_stats(poly)
            path = None
            if not merged:
                path = targets[value]
                header = f"ToothSeg label {value} {table[value].name}, mm, {system}"
                _write_poly(poly, staging / path.name, ext, header, overwrite=False)
            else:
                append.AddInputData(poly)
            results.append(ExportedSurface(value, path, n_tri, volume_mm3, float(counts[value]) * voxel_mm3,
                                           centroid, watertight))
        if merged and values:
            append.Update()
            _write_poly(append.GetOutput(), staging / targets[0].name, ext, f"ToothSeg teeth, mm, {system}",
                        overwrite=False)
            for item in results:
                item.path = targets[0]
        if not overwrite:  # a file that appeared meanwhile (another export) is not replaced
            existing = [str(p) for p in targets.values() if p.exists()]
            if existing:
                raise OutputWriteError(f"{len(existing)} output file(s) appeared while exporting, e.g. {existing[0]}")
        for target in targets.values():
            if (staging / target.name).exists():  # a merged export of no label writes nothing
                os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if overwrite and not merged and not selected:
        _remove_stale_surfaces(out_dir, table, ext, set(targets.values()))
    progress.update(1.0, "surfaces written")
    return results


def existing_surfaces(out_dir: str | os.PathLike[str], table: LabelTable, ext: str = "stl") -> list[Path]:
    """The files in ``out_dir`` named as :func:`export_surfaces` names tooth surfaces (``11_….stl``)."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    return [path for entry in table.entries.values() if (path := folder / f"{entry.file_stem}.{ext}").is_file()]


def _remove_stale_surfaces(out_dir: Path, table: LabelTable, ext: str, written: set[Path]) -> None:
    """After a whole label map is exported again over an earlier export, the surfaces of teeth it no
    longer has (deleted in the Segment Editor, say) would stay beside the new ones and be taken for
    part of it. Only files named as this export names tooth surfaces, in its format, are removed (an
    OBJ export beside an STL one is the user's); others are kept."""
    stale = [path for path in existing_surfaces(out_dir, table, ext) if path not in written]
    for path in stale:
        path.unlink()
    if stale:
        log.warning("removed %d surface(s) of an earlier export that the label map no longer has: %s", len(stale),
                    ", ".join(path.name for path in stale))
