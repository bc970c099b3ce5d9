"""Folders of cases: which files are scans or label maps, and the case id each one stands for.

Shared by batch segmentation, evaluation, the active-learning pool and the training manifests, so
that a case is called the same everywhere (``A.nii.gz``, ``A.seg.nrrd`` and the DICOM folder ``A/``
are all case ``A``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .images import READABLE_SUFFIXES, _suffix, holds_dicom_series

__all__ = ["list_cases", "case_id_for", "is_case_folder", "without_non_scan_folders"]


def list_cases(folder: Path, segmentations: bool = False) -> list[tuple[str, Path]]:
    """``(case id, path)`` for every readable image file and every DICOM sub-folder of ``folder``.

    ``.seg.nrrd`` files are results, not scans, so they are left out unless ``segmentations`` is set
    (label-map folders: ground truth and predictions to evaluate, training labels)."""
    cases = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            cases.append((path.name, path))
        elif _suffix(path) in READABLE_SUFFIXES and (segmentations or _suffix(path) != ".seg.nrrd"):
            cases.append((case_id_for(path), path))
    # Two files of one case (A.nii.gz and A.nrrd) would share an output or a match: one would be skipped as
    # "already done" or scored in place of the other. Which one counts is the user's choice, not ours.
    files: dict[str, list[str]] = {}
    for case_id, path in cases:
        files.setdefault(case_id, []).append(path.name)
    clashes = [names for names in files.values() if len(names) > 1]
    if clashes:
        shown = "; ".join(", ".join(names) for names in clashes[:3])
        raise InputError(f"{folder}: {len(clashes)} case(s) have more than one file ({shown}); keep one file per "
                         "case (rename or move the others)")
    return cases


def without_non_scan_folders(cases: list[tuple[str, Path]]) -> tuple[list[tuple[str, Path]], list[str]]:
    """``cases`` less the sub-folders that hold no DICOM series (notes, empty or result folders), and
    those folders' names: for scans, a folder is a case only as a DICOM series."""
    kept, left_out = [], []
    for case_id, path in cases:
        if path.is_dir() and not holds_dicom_series(path):
            left_out.append(path.name)
        else:
            kept.append((case_id, path))
    return kept, left_out


def case_id_for(path: Path) -> str:
    """A case's ID: its file name without the image suffix (``.nii.gz``, ``.nrrd`` …), or its folder name."""
    name = path.name
    for suffix in sorted(READABLE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_case_folder(path: Path) -> bool:
    """A folder of cases (as opposed to one DICOM series): it holds image files or sub-folders."""
    if not path.is_dir():
        return False
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    return any(p.is_dir() or _suffix(p) in READABLE_SUFFIXES for p in entries) and \
        not any(p.suffix.lower() == ".dcm" for p in entries if p.is_file())
