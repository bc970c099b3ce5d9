"""The files the Slicer module's Export section writes for one segmentation.

Kept in the core so that its rules are tested without Slicer:

- every file is named after the segmentation (``<name>_surfaces/``, ``<name>_labels.nii.gz``,
  ``<name>.seg.nrrd``), so two patients exported into one folder never mix their teeth;
- files of an earlier export are never replaced unless the caller says so (the panel asks first);
- the surfaces folder is replaced whole, so a tooth deleted since the last export leaves no stale
  STL behind that a lab would print.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, OutputExistsError
from ..io.atomic import atomic_folder, make_output_folder
from ..io.images import write_volume
from ..io.segmentation import write_segmentation
from ..labels import LabelTable
from ..progress import Progress
from ..volume import Volume
from .surfaces import SurfaceOptions, export_surfaces

__all__ = ["export_targets", "export_case_files"]


def export_targets(out_dir: str | os.PathLike[str], base: str, is_2d: bool, label_map: bool = True,
                   seg_nrrd: bool = True) -> dict[str, Path]:
    """Where each kind of file goes: ``surfaces`` (a folder, 3D only), ``label_map``, ``seg_nrrd``."""
    out = Path(out_dir)
    targets: dict[str, Path] = {}
    if not is_2d:
        targets["surfaces"] = out / f"{base}_surfaces"
    if label_map:
        targets["label_map"] = out / f"{base}_labels{'.png' if is_2d else '.nii.gz'}"
    if seg_nrrd:
        targets["seg_nrrd"] = out / f"{base}.seg.nrrd"
    return targets


def export_case_files(labels: Volume, table: LabelTable, out_dir: str | os.PathLike[str], base: str,
                      options: SurfaceOptions | None = None, merged: bool = False, label_map: bool = True,
                      seg_nrrd: bool = True, overwrite: bool = False,
                      progress: Progress | None = None) -> list[Path]:
    """Write surfaces per tooth (or merged), the label map and the ``.seg.nrrd``; return the files written.

    A panoramic X-ray (one slice) has no volume to mesh: its label map is a PNG of FDI values.

    Raises:
        InputError: the segmentation holds no labelled voxel (nothing to export).
        OutputExistsError: files of an earlier export exist and ``overwrite`` is False; nothing is written.
    """
    if not table.check_array(labels.array):
        raise InputError("the segmentation is empty: there is nothing to export")
    targets = export_targets(out_dir, base, labels.is_2d, label_map, seg_nrrd)
    if not targets:
        raise InputError("choose at least one kind of file to export")
    existing = [path for path in targets.values() if path.exists()]
    if existing and not overwrite:
        names = ", ".join(path.name for path in existing)
        raise OutputExistsError(f"an earlier export is in {Path(out_dir)} ({names})")
    make_output_folder(out_dir, "exported files go into a folder")
    written: list[Path] = []
    if "surfaces" in targets:
        folder = targets["surfaces"]
        with atomic_folder(folder, overwrite=True) as staging:
            results = export_surfaces(labels, table, staging, options or SurfaceOptions(), merged=merged,
                                      progress=progress)
        written += sorted({folder / item.path.name for item in results if item.path is not None})
    if "label_map" in targets:
        written.append(Path(write_volume(labels, targets["label_map"], overwrite=True)))
    if "seg_nrrd" in targets:
        written.append(Path(write_segmentation(labels, table, targets["seg_nrrd"], overwrite=True)))
    return written
