"""Where the bundled assets (sample data, model catalogue, terminology) live.

In a source checkout they are in the repository's top-level ``Resources/`` folder; an installed
extension or wheel can point elsewhere with the ``TOOTHSEG_RESOURCES`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

__all__ = ["resources_dir", "sample_label_map"]

_MARKER = Path("SampleData")


def resources_dir() -> Path:
    """The ``Resources`` folder: ``$TOOTHSEG_RESOURCES`` or the nearest one above this package."""
    override = os.environ.get("TOOTHSEG_RESOURCES")
    if override:
        path = Path(override)
        if not (path / _MARKER).is_dir():
            raise InputError(f"TOOTHSEG_RESOURCES={override} has no {_MARKER} folder")
        return path
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "Resources"
        if (candidate / _MARKER).is_dir():
            return candidate
    raise InputError("cannot find the ToothSeg Resources folder; set TOOTHSEG_RESOURCES to its path")


def sample_label_map() -> Path:
    """The bundled real tooth label map (STS-2024 ``Validation_0002``)."""
    return resources_dir() / "SampleData" / "STS2024_Validation_0002_teeth.nii.gz"
