"""Volume: geometry conventions (LPS, (z, y, x) arrays) and validation of bad geometry."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import GeometryMismatchError, InputError, Volume, check_same_geometry
from toothseg.core.io.images import volume_from_sitk, volume_to_sitk

from ..conftest import oblique_direction


def test_index_to_physical_matches_simpleitk():
    volume = Volume(np.zeros((5, 6, 7), np.int16), (0.3, 0.4, 0.7), (10.0, -5.0, 2.5), oblique_direction())
    image = volume_to_sitk(volume)
    for ijk in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        expected = image.TransformIndexToPhysicalPoint(ijk)
        np.testing.assert_allclose(volume.index_to_physical(np.array([ijk]))[0], expected, atol=1e-9)


def test_array_axis_order_is_zyx():
    array = np.zeros((3, 4, 5), np.uint8)
    array[2, 1, 0] = 7  # k=2, j=1, i=0
    image = volume_to_sitk(Volume(array))
    assert image.GetSize() == (5, 4, 3)
    assert image.GetPixel(0, 1, 2) == 7
    back = volume_from_sitk(image)
    assert back.size_xyz == (5, 4, 3) and back.shape == (3, 4, 5)
    assert back.spacing_zyx == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (1.0, -0.3, 1.0), (np.nan, 1.0, 1.0), (1.0, 1.0)])
def test_bad_spacing_is_refused(spacing):
    with pytest.raises(InputError, match="spacing"):
        Volume(np.zeros((2, 2, 2)), spacing)


def test_four_dimensional_array_is_refused():
    with pytest.raises(InputError, match="4 dimensions"):
        Volume(np.zeros((2, 2, 2, 3)))


def test_non_orthonormal_direction_is_refused():
    with pytest.raises(InputError, match="orthonormal"):
        Volume(np.zeros((2, 2, 2)), direction=np.diag([1.0, 2.0, 1.0]))


def test_nan_voxels_are_reported():
    array = np.zeros((2, 3, 4), np.float32)
    array[1, 1, 1] = np.nan
    array[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="2 NaN or infinite"):
        Volume(array).check_finite()


def test_2d_array_becomes_single_slice():
    volume = Volume(np.ones((5, 6)))
    assert volume.shape == (1, 5, 6)


def test_geometry_mismatch_names_what_differs():
    a = Volume(np.zeros((4, 4, 4)), (0.3, 0.3, 0.3))
    with pytest.raises(GeometryMismatchError, match="spacing"):
        check_same_geometry(a, Volume(np.zeros((4, 4, 4)), (0.3, 0.3, 0.25)))
    with pytest.raises(GeometryMismatchError, match="size"):
        check_same_geometry(a, Volume(np.zeros((4, 4, 5)), (0.3, 0.3, 0.3)))
    with pytest.raises(GeometryMismatchError, match="origin"):
        check_same_geometry(a, Volume(np.zeros((4, 4, 4)), (0.3, 0.3, 0.3), (0.0, 0.0, 1.0)))
    check_same_geometry(a, Volume(np.zeros((4, 4, 4)), (0.3, 0.3, 0.30000001)))  # float32 round-off is fine
    # the values come in the order the sentence names the two volumes: the label map's first
    labels = Volume(np.zeros((5, 4, 4), np.uint8), (0.3, 0.3, 0.6), (1.0, 2.0, 3.0))
    with pytest.raises(GeometryMismatchError) as raised:
        check_same_geometry(a, labels, "image", "label map")
    assert str(raised.value) == ("the label map does not match the image: size (4, 4, 5) vs (4, 4, 4); "
                                 "spacing (0.3, 0.3, 0.6) vs (0.3, 0.3, 0.3) mm; "
                                 "origin (1.0, 2.0, 3.0) vs (0.0, 0.0, 0.0) mm")


def test_with_array_keeps_geometry():
    volume = Volume(np.zeros((2, 3, 4)), (0.5, 0.5, 1.0), (1.0, 2.0, 3.0), oblique_direction())
    other = volume.with_array(np.ones((2, 3, 4), np.uint8))
    assert other.spacing == volume.spacing and other.origin == volume.origin
    np.testing.assert_array_equal(other.direction, volume.direction)
    with pytest.raises(GeometryMismatchError):
        volume.with_array(np.ones((3, 3, 4)))


def test_a_label_map_given_as_the_scan_is_named_and_a_scan_is_not(sts_labels):
    """Segmenting the label file instead of the scan ran without a word and 'found' teeth."""
    from toothseg.core.volume import dental_input_warnings

    labels = sts_labels.array  # the real STS-2024 label map: 31 values
    warned = dental_input_warnings(sts_labels.size_xyz, (0.3, 0.3, 0.3), False, labels)
    assert len(warned) == 1 and "holds only 31 distinct values: it looks like a label map" in warned[0]
    from toothseg.core.volume import distinct_values

    tiled = np.tile(labels.T, (2, 2, 2))  # a transposed (non-contiguous) view, tiled past the sample size
    assert tiled.size > 10_000_000 and distinct_values(tiled) == 31 and distinct_values(tiled.T) == 31
    rng = np.random.default_rng(0)
    scan = (labels * 40 + rng.normal(0, 30, labels.shape)).astype(np.int16)  # noise: thousands of values
    assert dental_input_warnings(sts_labels.size_xyz, (0.3, 0.3, 0.3), False, scan) == []
    xray = rng.integers(0, 256, (1, 512, 1024), dtype=np.uint8)  # an 8-bit X-ray: ~256 values
    assert dental_input_warnings((1024, 512, 1), (0.1, 0.1, 1.0), True, xray) == []
    assert "label map" in dental_input_warnings((1024, 512, 1), (0.1, 0.1, 1.0), True, xray // 8)[0]  # 32 values
