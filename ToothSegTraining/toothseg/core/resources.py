"""Where the bundled assets (sample data, model catalogue, terminology) live.

In a source checkout they are in the repository's top-level ``Resources/`` folder; an installed
extension or wheel can point elsewhere with the ``TOOTHSEG_RESOURCES`` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

__all__ = ["resources_dir", "sample_label_map", "sample_scan", "sample_scan_labels"]

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


#: The patient whose real tooth shapes the bundled sample is painted on (a model card's
#: ``provenance.training_anatomy`` names the label maps a synthetic-data model was trained on).
SAMPLE_ANATOMY = "Validation_0002"


def sample_scan() -> Path:
    """The bundled sample CBCT: SYNTHETIC intensities painted onto the real shapes of ``Validation_0002``."""
    return resources_dir() / "SampleData" / "SyntheticCBCT_Validation_0002.nii.gz"


def sample_scan_labels() -> Path:
    """The tooth labels the sample CBCT was painted from, on its grid (its ground truth)."""
    return resources_dir() / "SampleData" / "SyntheticCBCT_Validation_0002_teeth.nii.gz"
