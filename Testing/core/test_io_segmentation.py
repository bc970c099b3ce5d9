"""Slicer .seg.nrrd files through slicerio: names, colours, terminology and values survive."""

from __future__ import annotations

import numpy as np
import pytest
import slicerio

from toothseg.core import GeometryMismatchError, InputError, LabelError, LabelTable, Volume
from toothseg.core.io import read_segmentation, write_segmentation
from toothseg.core.io.segmentation import paste_onto_grid

# the bundled Validation_0002 map, its STS-2024 numbering corrected for the mirror (shared/data/README.md)
STS_TEETH = [11, 12, 13, 14, 15, 16, 17, 18, 21, 22, 23, 24, 25, 26, 28,
             31, 32, 33, 34, 35, 36, 37, 38, 41, 42, 43, 44, 45, 46, 47]


@pytest.fixture(scope="module")
def sts_segmentation(tmp_path_factory, sts_labels):
    path = tmp_path_factory.mktemp("seg") / "Validation_0002.seg.nrrd"
    write_segmentation(sts_labels, LabelTable.fdi(), path)
    return path


def test_sts_case_gives_30_segments_with_exact_voxel_counts(sts_segmentation, sts_labels):
    data = slicerio.read_segmentation(str(sts_segmentation))
    segments = data["segments"]
    assert len(segments) == 30
    assert sorted(s["labelValue"] for s in segments) == STS_TEETH
    voxels = data["voxels"]  # (i, j, k)
    counts = np.bincount(sts_labels.array.ravel(), minlength=49)
    table = LabelTable.fdi()
    for segment in segments:
        value = segment["labelValue"]
        assert int(np.count_nonzero(voxels == value)) == counts[value]
        assert segment["name"] == table[value].segment_name
        np.testing.assert_allclose(segment["color"], table[value].color, atol=1e-6)
        assert segment["terminology"]["type"][1] == table[value].terminology.type.value
        assert segment["layer"] == 0


def test_sts_geometry_is_lps_and_exact(sts_segmentation, sts_labels):
    data = slicerio.read_segmentation(str(sts_segmentation))
    np.testing.assert_allclose(data["ijkToLPS"], sts_labels.ijk_to_lps(), atol=1e-6)
    import nrrd

    header = nrrd.read_header(str(sts_segmentation))
    assert header["space"] == "left-posterior-superior"
    assert "TerminologyEntry:Segmentation category and type" in header["Segment0_Tags"]


def test_read_back_unchanged(sts_segmentation, sts_labels):
    seg = read_segmentation(sts_segmentation)
    np.testing.assert_array_equal(seg.labels.array, sts_labels.array)
    np.testing.assert_allclose(seg.labels.spacing, sts_labels.spacing, rtol=1e-6)
    np.testing.assert_allclose(seg.labels.origin, sts_labels.origin, atol=1e-6)
    assert seg.table.values == STS_TEETH
    assert seg.table[36].segment_name == "Tooth 36 (lower left first molar)"
    assert seg.table.swap_partner(36) == 46


def test_slicerio_rewrite_is_lossless(tmp_path, sts_segmentation):
    """What slicerio reads, it writes back identically (no field of ours is lost)."""
    first = slicerio.read_segmentation(str(sts_segmentation))
    slicerio.write_segmentation(str(tmp_path / "again.seg.nrrd"), first)
    second = slicerio.read_segmentation(str(tmp_path / "again.seg.nrrd"))
    np.testing.assert_array_equal(first["voxels"], second["voxels"])
    for a, b in zip(first["segments"], second["segments"]):
        assert {k: a[k] for k in ("id", "name", "labelValue", "terminology")} == \
               {k: b[k] for k in ("id", "name", "labelValue", "terminology")}


def test_unknown_values_are_refused(tmp_path, teeth_volume):
    array = teeth_volume.array.copy()
    array[0, 0, 0] = 71
    with pytest.raises(LabelError, match="71"):
        write_segmentation(teeth_volume.with_array(array), LabelTable.fdi(), tmp_path / "x.seg.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_overlapping_segments_from_slicer(tmp_path, teeth_volume):
    """Slicer stores overlapping segments on extra layers with clashing label values."""
    seg = slicerio.create_segmentation(teeth_volume.size_xyz, teeth_volume.ijk_to_lps())
    mask11 = (teeth_volume.array == 11).transpose(2, 1, 0)
    grown = np.zeros_like(mask11)
    grown[5:30, 5:40, 5:30] = True
    slicerio.add_segment(seg, mask11, {"id": "a", "name": "Tooth 11 (upper right central incisor)"})
    slicerio.add_segment(seg, grown & mask11, {"id": "b", "name": "Tooth 36 (lower left first molar)"})
    assert seg["voxels"].ndim == 4
    slicerio.write_segmentation(str(tmp_path / "layers.seg.nrrd"), seg)
    result = read_segmentation(tmp_path / "layers.seg.nrrd")
    values = set(np.unique(result.labels.array)) - {0}
    assert values == {11, 36}
    assert np.count_nonzero(result.labels.array == 36) == np.count_nonzero(grown & mask11)


def test_cropped_segmentation_is_pasted_onto_the_image_grid(tmp_path, teeth_volume):
    """Slicer saves segmentations cropped to their extent; the reference grid restores them."""
    crop = teeth_volume.array[5:35, 8:40, 3:50]
    origin = teeth_volume.index_to_physical(np.array([[3, 8, 5]]))[0]
    cropped = Volume(crop, teeth_volume.spacing, tuple(origin), teeth_volume.direction)
    write_segmentation(cropped, LabelTable.fdi(), tmp_path / "crop.seg.nrrd")
    result = read_segmentation(tmp_path / "crop.seg.nrrd", reference=teeth_volume)
    np.testing.assert_array_equal(result.labels.array, teeth_volume.array)
    shifted = Volume(crop, teeth_volume.spacing, tuple(origin + 0.37 * np.array(teeth_volume.spacing)),
                     teeth_volume.direction)
    with pytest.raises(GeometryMismatchError, match="aligned"):
        paste_onto_grid(shifted, teeth_volume)
    other_spacing = Volume(crop, (1.0, 1.0, 1.0), tuple(origin), teeth_volume.direction)
    with pytest.raises(GeometryMismatchError, match="spacing"):
        paste_onto_grid(other_spacing, teeth_volume)


def test_truncated_segmentation(tmp_path, sts_segmentation):
    data = sts_segmentation.read_bytes()
    (tmp_path / "cut.seg.nrrd").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.seg.nrrd"):
        read_segmentation(tmp_path / "cut.seg.nrrd")
    with pytest.raises(InputError, match=".seg.nrrd"):
        write_segmentation(Volume(np.zeros((2, 2, 2), np.uint8)), LabelTable.fdi(), tmp_path / "x.nrrd")


STANDARD = LabelTable.fdi(deciduous=True, pulp=True, jaws=True)


def _with_hand_drawn_segments(tmp_path, teeth_volume, table: LabelTable) -> tuple[dict, np.ndarray, np.ndarray]:
    """A ToothSeg file of ``teeth_volume`` plus two segments painted in Slicer's way (slicerio's
    ``add_segment`` stores them as Slicer does): one overlapping tooth 11 (a new layer, stored value 1,
    the maxilla's value) and one in the background (layer 0, the next free value)."""
    path = write_segmentation(teeth_volume, table, tmp_path / "teeth.seg.nrrd")
    data = slicerio.read_segmentation(str(path))
    over_tooth = (teeth_volume.array == 11).transpose(2, 1, 0).copy()
    background = np.zeros_like(over_tooth)
    background[0:3, 0:3, 0:3] = True
    assert not np.any(data["voxels"][background])
    slicerio.add_segment(data, over_tooth, {"id": "Segment_1", "name": "Segment_1"})
    slicerio.add_segment(data, background, {"id": "Segment_2", "name": "Segment_2"})
    return data, over_tooth.transpose(2, 1, 0), background.transpose(2, 1, 0)


def test_hand_drawn_segments_never_pass_for_a_standard_class(tmp_path, teeth_volume):
    """Slicer stores a new segment on a new layer as 1 (= maxilla) or as the next layer value, which
    can be a deciduous tooth (51); read as those, a corrected case would teach the model wrong classes."""
    data, over_tooth, background = _with_hand_drawn_segments(tmp_path, teeth_volume, LabelTable.fdi())
    stored = {s["name"]: (s["layer"], s["labelValue"]) for s in data["segments"]}
    assert stored["Segment_1"] == (1, 1)
    data["segments"][-1]["labelValue"] = 51  # as Slicer would store it after teeth up to 48 and 49, 50
    data["voxels"][0][background.transpose(2, 1, 0)] = 51
    slicerio.write_segmentation(str(tmp_path / "edited.seg.nrrd"), data)
    result = read_segmentation(tmp_path / "edited.seg.nrrd")
    array = result.labels.array
    teeth = set(np.unique(teeth_volume.array).tolist()) - {0}
    assert set(np.unique(array[(teeth_volume.array > 0) & ~over_tooth]).tolist()) == teeth - {11}
    drawn = {int(np.unique(array[over_tooth])[0]), int(np.unique(array[background])[0])}
    assert len(drawn) == 2 and not drawn & set(STANDARD.values)
    assert {result.table[value].name for value in drawn} == {"Segment_1", "Segment_2"}
    assert result.unrecognised == ["Segment_1", "Segment_2"]


def test_a_hand_drawn_segment_named_as_a_tooth_is_that_tooth(tmp_path, teeth_volume):
    data, _, background = _with_hand_drawn_segments(tmp_path, teeth_volume, LabelTable.fdi())
    data["segments"][-1]["name"] = "Tooth 38"
    slicerio.write_segmentation(str(tmp_path / "edited.seg.nrrd"), data)
    result = read_segmentation(tmp_path / "edited.seg.nrrd")
    assert set(np.unique(result.labels.array[background]).tolist()) == {38}
    assert result.unrecognised == ["Segment_1"]


def test_classes_of_a_custom_table_keep_their_values(tmp_path, teeth_volume):
    """A binary model's 'tooth' class is stored as 1, the maxilla's value in the standard table; the
    segment carries ToothSeg's key, so its value is kept (a fine-tuned binary model needs it)."""
    binary = LabelTable.custom({1: "tooth"})
    mask = teeth_volume.with_array((teeth_volume.array > 0).astype(np.uint8))
    path = write_segmentation(mask, binary, tmp_path / "binary.seg.nrrd")
    result = read_segmentation(path)
    np.testing.assert_array_equal(result.labels.array, mask.array)
    assert result.unrecognised == []


def test_a_label_map_imported_into_slicer_keeps_its_values(tmp_path, teeth_volume):
    """Slicer names the segments of a label map imported without a colour table ``Label_<value>`` and
    keeps the values; such a file from another FDI tool reads back with its tooth numbers."""
    data = slicerio.read_segmentation(str(write_segmentation(teeth_volume, LabelTable.fdi(), tmp_path / "t.seg.nrrd")))
    for segment in data["segments"]:
        segment["name"] = f"Label_{segment['labelValue']}"
        segment["tags"] = {}
    slicerio.write_segmentation(str(tmp_path / "imported.seg.nrrd"), data)
    np.testing.assert_array_equal(read_segmentation(tmp_path / "imported.seg.nrrd").labels.array,
                                  teeth_volume.array)


def test_a_tooth_number_used_twice_is_reported(tmp_path, teeth_volume):
    """Two segments named "Tooth 11": the second cannot be tooth 11 too, so it gets a value of its own
    and is listed, or Save as corrected case would say nothing until fine-tuning refuses the value."""
    data, _, background = _with_hand_drawn_segments(tmp_path, teeth_volume, LabelTable.fdi())
    data["segments"][-1]["name"] = "Tooth 11"
    slicerio.write_segmentation(str(tmp_path / "edited.seg.nrrd"), data)
    result = read_segmentation(tmp_path / "edited.seg.nrrd")
    value = int(np.unique(result.labels.array[background])[0])
    assert value not in STANDARD and result.unrecognised == ["Segment_1", "Tooth 11"]


def test_an_xray_segmentation_reads_back_as_2d(tmp_path):
    """A one-slice segmentation (a panoramic X-ray's teeth, as Slicer and `convert` save it) is 2D again
    when read, as a one-slice image is, so that no 3D-only step (surfaces) runs on it; a scan stays 3D."""
    from toothseg.core import VolumeKind

    xray = np.zeros((1, 40, 60), np.uint8)
    xray[0, 10:20, 10:20], xray[0, 10:20, 30:40] = 11, 21
    path = write_segmentation(Volume(xray, (0.1, 0.1, 1.0), kind="2d"), LabelTable.fdi(), tmp_path / "x.seg.nrrd")
    back = read_segmentation(path).labels
    assert back.kind == VolumeKind.PANORAMIC_2D and back.shape == (1, 40, 60)
    np.testing.assert_array_equal(back.array, xray)
    scan = np.zeros((3, 40, 60), np.uint8)
    scan[1, 10:20, 10:20] = 11
    path = write_segmentation(Volume(scan, (0.5, 0.5, 0.5)), LabelTable.fdi(), tmp_path / "s.seg.nrrd")
    assert read_segmentation(path).labels.kind == VolumeKind.CBCT_3D


def test_extra_header_fields_are_written_and_checked(tmp_path):
    import nrrd

    labels = Volume(np.pad(np.ones((2, 2, 2), np.uint8) * 11, 1))
    path = write_segmentation(labels, LabelTable.fdi(), tmp_path / "a.seg.nrrd",
                              fields={"ToothSeg_Handedness": "mirrored -0.93", "ToothSeg_Model": "m"})
    header = nrrd.read_header(str(path))
    assert header["ToothSeg_Handedness"] == "mirrored -0.93" and header["ToothSeg_Model"] == "m"
    assert read_segmentation(path).labels.array.max() == 11  # still a segmentation Slicer and ToothSeg read
    for bad in ({"Handedness": "x"}, {"ToothSeg_Note": "two\nlines"}, {"ToothSeg_a:b": "x"}):
        with pytest.raises(InputError, match="header field"):
            write_segmentation(labels, LabelTable.fdi(), tmp_path / "b.seg.nrrd", fields=bad)
    assert not (tmp_path / "b.seg.nrrd").exists()
