"""The Export section's files: named per segmentation, never replaced unasked, surfaces folder replaced whole."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import InputError, LabelTable, OutputExistsError, Volume
from toothseg.core.export.case_files import export_case_files
from toothseg.core.io.images import read_label_map
from toothseg.core.io.segmentation import read_segmentation

from ..conftest import ellipsoid_teeth


def _tree(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_two_patients_in_one_folder_keep_their_own_teeth(tmp_path):
    one = ellipsoid_teeth()
    other = ellipsoid_teeth()
    other.array[other.array == 21] = 0  # the second patient has tooth 11 only
    export_case_files(one, LabelTable.fdi(), tmp_path, "patient_a")
    written = export_case_files(other, LabelTable.fdi(), tmp_path, "patient_b")
    assert sorted(p.name for p in (tmp_path / "patient_a_surfaces").iterdir()) == [
        "11_upper_right_central_incisor.stl", "21_upper_left_central_incisor.stl"]
    assert [p.name for p in (tmp_path / "patient_b_surfaces").iterdir()] == ["11_upper_right_central_incisor.stl"]
    assert {p.name for p in written} == {"11_upper_right_central_incisor.stl", "patient_b_labels.nii.gz",
                                         "patient_b.seg.nrrd"}
    assert np.array_equal(read_label_map(tmp_path / "patient_b_labels.nii.gz").array, other.array)
    assert np.array_equal(read_segmentation(tmp_path / "patient_b.seg.nrrd").labels.array, other.array)


def test_an_earlier_export_is_replaced_only_when_asked_and_then_whole(tmp_path):
    labels = ellipsoid_teeth()
    export_case_files(labels, LabelTable.fdi(), tmp_path, "case")
    before = _tree(tmp_path)
    corrected = ellipsoid_teeth()
    corrected.array[corrected.array == 21] = 0  # the clinician deleted tooth 21 in the Segment Editor
    with pytest.raises(OutputExistsError, match="case_surfaces"):
        export_case_files(corrected, LabelTable.fdi(), tmp_path, "case")
    assert _tree(tmp_path) == before  # refused before anything was written
    export_case_files(corrected, LabelTable.fdi(), tmp_path, "case", overwrite=True)
    # no stale 21 left for a lab to print, and no staging folders left behind
    assert [p.name for p in (tmp_path / "case_surfaces").iterdir()] == ["11_upper_right_central_incisor.stl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.seg.nrrd", "case_labels.nii.gz", "case_surfaces"]


def test_panoramic_gets_a_png_and_no_surfaces_and_empty_is_refused(tmp_path):
    xray = Volume(np.zeros((1, 20, 30), np.uint8), kind="2d")
    xray.array[0, 5:10, 5:10] = 36
    written = export_case_files(xray, LabelTable.fdi(), tmp_path, "pano", seg_nrrd=False)
    assert [p.name for p in written] == ["pano_labels.png"]
    empty = Volume(np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(InputError, match="empty"):
        export_case_files(empty, LabelTable.fdi(), tmp_path / "e", "case")
    assert not (tmp_path / "e").exists()
