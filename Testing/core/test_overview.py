"""Overview pictures: radiological orientation whatever the file's axis order, square millimetres,
and a 2D overlay at the X-ray's own size."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from toothseg.core import LabelTable, Volume, VolumeKind
from toothseg.core.export.overview import orthogonal_slices, overlay_rgb, write_overview, write_panoramic_overlay

TABLE = LabelTable.fdi()


def _coloured(rgb: np.ndarray) -> np.ndarray:
    """Pixels where a label colour was blended in (grey pixels have R == G == B)."""
    return (rgb.max(axis=2).astype(int) - rgb.min(axis=2).astype(int)) > 20


def _phantom(direction: np.ndarray) -> tuple[Volume, Volume]:
    """A 40³ scan with tooth 11 in the patient's right-anterior-superior corner, whatever ``direction``."""
    image = Volume(np.random.default_rng(0).normal(0, 1, (40, 40, 40)).astype(np.float32),
                   spacing=(0.5, 0.5, 0.5), direction=direction)
    labels = np.zeros((40, 40, 40), np.uint8)
    # LPS: right = -x, anterior = -y, superior = +z; find the indices whose positions are there
    ijk = np.stack(np.meshgrid(np.arange(40), np.arange(40), np.arange(40), indexing="ij"), -1).reshape(-1, 3)
    lps = ijk @ direction.T * 0.5
    corner = (lps[:, 0] < np.percentile(lps[:, 0], 20)) & (lps[:, 1] < np.percentile(lps[:, 1], 20)) \
        & (lps[:, 2] > np.percentile(lps[:, 2], 60)) & (lps[:, 2] < np.percentile(lps[:, 2], 90))
    i, j, k = ijk[corner].T
    labels[k, j, i] = 11
    return image, Volume(labels, spacing=image.spacing, direction=direction)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, -1.0]),
                                       np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])],
                         ids=["LPS", "flipped", "axes-swapped"])
def test_views_follow_the_radiological_convention(direction):
    image, labels = _phantom(direction)
    views = dict(orthogonal_slices(image, labels, TABLE))
    rows, cols = np.nonzero(_coloured(views["axial"]))
    assert rows.mean() < 20 and cols.mean() < 20  # anterior at the top, patient's right on the left
    rows, cols = np.nonzero(_coloured(views["coronal"]))
    assert rows.mean() < 20 and cols.mean() < 20  # superior at the top, patient's right on the left
    rows, cols = np.nonzero(_coloured(views["sagittal"]))
    assert rows.mean() < 20 and cols.mean() < 20  # superior at the top, anterior on the left


def test_slices_have_square_millimetres():
    image = Volume(np.zeros((10, 30, 40), np.float32), spacing=(0.5, 0.5, 1.5))
    labels = Volume(np.zeros((10, 30, 40), np.uint8), spacing=(0.5, 0.5, 1.5))
    views = dict(orthogonal_slices(image, labels, TABLE))
    assert views["axial"].shape[:2] == (30, 40)
    assert views["coronal"].shape[:2] == (30, 40)  # 10 slices of 1.5 mm = 30 rows of 0.5 mm
    assert views["sagittal"].shape[:2] == (30, 30)


def test_overlay_uses_the_table_colour():
    image = np.zeros((4, 4), np.float32)
    labels = np.zeros((4, 4), np.int32)
    labels[1, 1] = 36
    rgb = overlay_rgb(image, labels, TABLE, (0.0, 1.0), alpha=1.0)
    assert tuple(rgb[1, 1]) == tuple(round(c * 255) for c in TABLE[36].color)
    assert tuple(rgb[0, 0]) == (0, 0, 0)
    with pytest.raises(ValueError):
        overlay_rgb(image, labels[:2], TABLE, (0.0, 1.0))


def test_write_overview_and_panoramic_overlay(tmp_path):
    image, labels = _phantom(np.eye(3))
    path = write_overview(image, labels, TABLE, tmp_path / "overview.png", render_3d=False, cell=100)
    picture = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert picture.shape == (204, 204, 3)
    assert _coloured(picture[:100, :100]).any()  # the axial cell shows the tooth

    xray = Volume(np.tile(np.linspace(0, 255, 64, dtype=np.float32), (1, 32, 1)), spacing=(0.1, 0.1, 1.0),
                  kind=VolumeKind.PANORAMIC_2D)
    teeth = np.zeros((1, 32, 64), np.uint8)
    teeth[0, 10:20, 5:15] = 18
    overlay = write_panoramic_overlay(xray, Volume(teeth, spacing=xray.spacing, kind=VolumeKind.PANORAMIC_2D),
                                      TABLE, tmp_path / "pano.png")
    pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(overlay)))
    assert pixels.shape == (32, 64, 3)
    assert _coloured(pixels)[10:20, 5:15].all() and not _coloured(pixels)[:, 20:].any()
