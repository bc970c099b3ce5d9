"""The handedness contract where training reads labels: manifests, recipes and the built-in STS-2024 maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from toothseg.cli import main
from toothseg.core import Volume
from toothseg.core.errors import InputError, LabelError
from toothseg.core.handedness import handedness_of, mirror_label_numbers
from toothseg.core.io.images import read_label_map
from toothseg.core.labels import label_table_named
from toothseg.train.config import DataConfig
from toothseg.train.data.cases import read_manifest
from toothseg.train.data.dataset import BUILTIN_LABEL_MAPS, TrainingData, read_training_labels

from Testing.conftest import shared_data_dir


@pytest.fixture(scope="module")
def small_sts():
    """Both real STS-2024 patients at 1.2 mm, as stored (mirrored numbering)."""
    out = {}
    for case in ("Validation_0001", "Validation_0002"):
        labels = read_label_map(shared_data_dir() / "sts2024" / f"{case}_gt.nii.gz")
        step = 4
        out[case] = Volume(labels.array[::step, ::step, ::step].copy(), tuple(step * s for s in labels.spacing),
                           labels.origin, labels.direction)
    return out


def _write_folders_dataset(root, cases: dict[str, Volume]) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, labels in cases.items():
        label = sitk.GetImageFromArray(labels.array)
        label.SetSpacing(labels.spacing)
        label.SetOrigin(labels.origin)
        label.SetDirection(tuple(np.asarray(labels.direction).ravel()))
        image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=labels.shape).astype(np.float32))
        image.CopyInformation(label)
        sitk.WriteImage(image, str(root / "images" / f"{name}.nii.gz"))
        sitk.WriteImage(label, str(root / "labels" / f"{name}.nii.gz"))


def test_manifest_refuses_a_mirrored_case_and_writes_nothing(tmp_path, small_sts, capsys):
    corrected = small_sts["Validation_0002"].with_array(mirror_label_numbers(small_sts["Validation_0002"].array))
    _write_folders_dataset(tmp_path / "data", {"good": corrected, "sts1": small_sts["Validation_0001"]})
    out = tmp_path / "manifests"
    assert main(["data", "manifest", "folders", str(tmp_path / "data"), "-o", str(out), "--val-fraction", "0"]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 labeled case(s) have a mirrored left/right numbering (sts1)" in err and "--mirror-labels" in err
    assert not out.exists() or not any(out.iterdir())


def test_manifest_mirror_labels_fixes_only_the_mirrored_cases(tmp_path, small_sts, capsys):
    corrected = small_sts["Validation_0002"].with_array(mirror_label_numbers(small_sts["Validation_0002"].array))
    _write_folders_dataset(tmp_path / "data", {"good": corrected, "sts1": small_sts["Validation_0001"]})
    out = tmp_path / "manifests"
    assert main(["data", "manifest", "folders", str(tmp_path / "data"), "-o", str(out), "--val-fraction", "0",
                 "--mirror-labels"]) == 0
    printed = capsys.readouterr().out
    assert "good: handedness correct +" in printed
    assert "sts1: handedness mirrored -" in printed and "swapped when read" in printed
    listed = {c["id"]: c for c in json.loads((out / "labeled.json").read_text())["cases"]}
    assert listed["sts1"]["mirror_labels"] is True and "mirror_labels" not in listed["good"]
    # training reads both with the patient's right teeth on the right, the files unchanged
    for case in read_manifest(out / "labeled.json"):
        assert handedness_of(read_training_labels(case)).verdict == "correct"
    stored = read_label_map(tmp_path / "data" / "labels" / "sts1.nii.gz")
    assert handedness_of(stored).verdict == "mirrored"


def test_a_recipe_refuses_a_mirrored_label_map_unless_told_to_fix_it(tmp_path, small_sts):
    _write_folders_dataset(tmp_path / "data", {"sts1": small_sts["Validation_0001"]})
    manifest = tmp_path / "labeled.json"
    manifest.write_text(json.dumps({"cases": [{"id": "sts1", "image": str(tmp_path / "data/images/sts1.nii.gz"),
                                               "label": str(tmp_path / "data/labels/sts1.nii.gz")}]}))
    table = label_table_named("fdi")

    def prepared(handedness: str):
        config = DataConfig(source="files", labeled=str(manifest), spacing=None, patch_size=[16, 16, 16],
                            handedness=handedness)
        data = TrainingData(config, table, [0, *table.values])
        return data, data.prepare(data.labeled[0])

    with pytest.raises(LabelError, match="left/right numbering is mirrored.*mirror_labels.*handedness: fix"):
        prepared("check")
    data, fixed = prepared("fix")
    values = np.array(data.class_values)[fixed.labels]
    stored = small_sts["Validation_0001"].array
    assert np.array_equal(values, mirror_label_numbers(stored))  # the same grid: the numbers swapped
    _, as_stored = prepared("off")
    assert np.array_equal(np.array(data.class_values)[as_stored.labels], stored)


def test_recipe_handedness_setting_is_checked():
    from toothseg.train.config.loader import recipe_from_dict

    with pytest.raises(InputError, match="handedness must be one of check, fix, off"):
        recipe_from_dict({"name": "x", "data": {"handedness": "ignore"}, "model": {}, "stages": [{}]})


@pytest.mark.parametrize("name", sorted(BUILTIN_LABEL_MAPS))
def test_built_in_sts_maps_are_read_right_handed(name):
    case = TrainingData._label_map_case(name)
    assert case.mirror_labels
    labels = read_training_labels(case)  # "check": refused if the correction were missing
    assert handedness_of(labels).verdict == "correct"
    values = {int(v) for v in np.unique(labels.array)} - {0}
    assert values and all(11 <= v <= 48 for v in values), sorted(values)  # a stray 3 in one map is background


def test_synthetic_training_scans_number_the_patients_right_on_the_right():
    """The synthetic source paints on the corrected maps: a whole synthetic scan's labels are right-handed."""
    table = label_table_named("fdi")
    config = DataConfig(source="synthetic", labeled="sts2024-0001", validation="1", spacing=[1.2, 1.2, 1.2],
                        patch_size=[16, 16, 16])
    data = TrainingData(config, table, [0, *table.values])
    _, labels = data.validation_volumes()[0][1:]
    assert handedness_of(labels).verdict == "correct"
