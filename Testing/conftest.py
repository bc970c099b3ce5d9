"""Shared fixtures: real data locations and small synthetic volumes with awkward geometry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RESOURCES = REPO / "Resources"


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (or ``$TOOTHSEG_SHARED_DATA``)."""
    return Path(os.environ.get("TOOTHSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("TOOTHSEG_SLOW") == "1" or "slow" in (config.getoption("-m") or "")
    skip_slow = pytest.mark.skip(reason="slow test: set TOOTHSEG_SLOW=1 or run with -m slow")
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def text_encoding_is_left_as_found():
    """A test (or a C library it calls: GDCM's DICOM writer sets LC_CTYPE to "C") that changes the
    locale's text encoding would turn every later test's text subprocess and ``open()`` into ASCII, and
    fail some other test far away; the test that does it fails instead."""
    import locale

    before = locale.getpreferredencoding(False)
    yield
    after = locale.getpreferredencoding(False)
    assert after == before, f"the locale's text encoding changed from {before} to {after} during this test"


@pytest.fixture(scope="session")
def sts_gt_path() -> Path:
    """The real STS-2024 ``Validation_0002`` ground-truth tooth label map (bundled copy)."""
    path = RESOURCES / "SampleData" / "STS2024_Validation_0002_teeth.nii.gz"
    assert path.exists(), f"bundled sample missing: {path}"
    return path


@pytest.fixture(scope="session")
def sts_labels(sts_gt_path):
    from toothseg.core.io import read_label_map

    return read_label_map(sts_gt_path)


@pytest.fixture(scope="session")
def sts_0001_labels():
    """The other real STS-2024 patient, ``Validation_0001`` ground truth (20 teeth, as stored: mirrored
    like the bundled ``Validation_0002`` map, so the two agree with each other)."""
    from toothseg.core.io import read_label_map

    path = shared_data_dir() / "sts2024" / "Validation_0001_gt.nii.gz"
    assert path.exists(), f"shared data missing: {path}"
    return read_label_map(path)


def corrected_canonical(labels, step: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """A real STS-2024 dentition as the post-processing steps receive it: left/right numbering corrected
    (both maps are stored mirrored), canonical axes, every ``step``-th voxel; and its spacing (z, y, x)."""
    from toothseg.core.handedness import handedness_of, mirror_label_numbers
    from toothseg.core.preprocessing import to_canonical

    if handedness_of(labels).sign < 0:
        labels = labels.with_array(mirror_label_numbers(labels.array))
    canonical, _ = to_canonical(labels)
    return canonical.array[::step, ::step, ::step], tuple(step * s for s in canonical.spacing_zyx)


def oblique_direction() -> np.ndarray:
    """A rotation about z and x (det +1), so that axis mix-ups show up in tests."""
    a, b = np.deg2rad(20.0), np.deg2rad(-12.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def ellipsoid_teeth(shape=(40, 48, 56), spacing=(0.4, 0.3, 0.5), direction=None, origin=(-12.0, 30.5, 7.25)):
    """Two ellipsoid 'teeth' (FDI 11 and 21) on an anisotropic, optionally oblique grid."""
    from toothseg.core import Volume

    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    labels = np.zeros(shape, dtype=np.uint8)
    labels[((z - 20) / 12) ** 2 + ((y - 24) / 9) ** 2 + ((x - 16) / 7) ** 2 <= 1] = 11
    labels[((z - 18) / 10) ** 2 + ((y - 22) / 8) ** 2 + ((x - 40) / 8) ** 2 <= 1] = 21
    return Volume(labels, spacing, origin, np.eye(3) if direction is None else direction)


@pytest.fixture
def teeth_volume():
    return ellipsoid_teeth(direction=oblique_direction())
