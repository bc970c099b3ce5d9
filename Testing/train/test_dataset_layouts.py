"""`toothseg data manifest`: public datasets listed as distributed, classes renumbered by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from toothseg.cli import main
from toothseg.core import InputError
from toothseg.core.labels import MANDIBLE, MAXILLA, standard_value_of_class_name
from toothseg.train.config import DataConfig
from toothseg.train.data.cases import read_manifest
from toothseg.train.data.dataset import TrainingData
from toothseg.core.labels import label_table_named
from toothseg.train.data.layouts import class_mapping, split_validation

# The class names and values of ToothFairy2/3's dataset.json (a subset), as distributed.
TOOTHFAIRY_LABELS = {
    "Background": 0, "Lower Jawbone": 1, "Upper Jawbone": 2, "Left Inferior Alveolar Canal": 3,
    "Right Inferior Alveolar Canal": 4, "Pharynx": 7, "Crown": 9, "Upper Right Central Incisor": 11,
    "NA1": 19, "Lower Left Third Molar (Wisdom Tooth)": 38, "Upper Right Central Incisor Pulp": 111,
}


@pytest.mark.parametrize("name, value", [
    ("Upper Right Third Molar (Wisdom Tooth)", 18), ("Upper Right Central Incisor Pulp", 111),
    ("Lower Jawbone", MANDIBLE), ("Upper Jawbone", MAXILLA), ("Right Inferior Alveolar Canal", 4),
    ("pulp of lower left canine", 133), ("Tooth 36", 36), ("Lower Right 2nd Premolar", 45),
    ("Primary upper right canine", 53), ("Pharynx", None), ("NA1", None), ("Lingual Canal", None),
])
def test_class_names_of_public_datasets(name, value):
    assert standard_value_of_class_name(name) == value


def _toothfairy(root, cases=("tf_a", "tf_b", "tf_c")):
    """A tiny nnU-Net raw dataset in ToothFairy's numbering: .mha images with the _0000 channel suffix."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "ToothFairy 2", "labels": TOOTHFAIRY_LABELS,
                                                   "file_ending": ".mha"}), encoding="utf-8")
    labels = np.zeros((12, 16, 16), np.uint8)
    labels[:3] = 1        # lower jaw (ToothFairy) = our mandible 2
    labels[9:] = 2        # upper jaw = our maxilla 1
    labels[4:8, 2:6, 2:6] = 11
    labels[5:7, 3:5, 3:5] = 111  # its pulp
    labels[4:8, 8:12, 8:12] = 38
    labels[4:6, 12:14, 2:4] = 7  # pharynx: no ToothSeg class
    for case in cases:
        image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=labels.shape).astype(np.float32))
        image.SetSpacing((0.5, 0.5, 0.5))
        label = sitk.GetImageFromArray(labels)
        label.CopyInformation(image)
        sitk.WriteImage(image, str(root / "imagesTr" / f"{case}_0000.mha"))
        sitk.WriteImage(label, str(root / "labelsTr" / f"{case}.mha"))
    return labels


def _classes_seen(out, label_table: str) -> dict[int, int]:
    """Voxel counts per ToothSeg value of the first labeled case, read the way training reads it."""
    config = DataConfig(source="files", labeled=str(out / "labeled.json"), label_table=label_table,
                        spacing=[0.5, 0.5, 0.5], patch_size=[8, 8, 8])
    table = label_table_named(label_table)
    values = [0, *table.values]
    prepared = TrainingData(config, table, values, 0).prepare(read_manifest(out / "labeled.json")[0])
    classes, counts = np.unique(prepared.labels, return_counts=True)
    return {values[c]: int(n) for c, n in zip(classes, counts)}


def test_toothfairy_teeth_only_counts_the_pulp_as_its_tooth(tmp_path, capsys):
    labels = _toothfairy(tmp_path / "tf")
    out = tmp_path / "manifests"
    assert main(["data", "manifest", "nnunet", str(tmp_path / "tf"), "-o", str(out), "--val-fraction", "0.34"]) == 0
    printed = capsys.readouterr().out
    assert "2 labeled, 1 validation, 0 unlabeled" in printed and "label_table: fdi" in printed
    assert "Pharynx" in printed and "NA1" in printed  # told what is dropped
    manifest = json.loads((out / "labeled.json").read_text(encoding="utf-8"))
    assert manifest["label_values"] == {"1": 0, "2": 0, "3": 0, "4": 0, "7": 0, "9": 0, "19": 0, "111": 11}
    seen = _classes_seen(out, "fdi")
    assert seen == {0: int(np.isin(labels, (0, 1, 2, 7)).sum()), 11: int(np.isin(labels, (11, 111)).sum()),
                    38: int((labels == 38).sum())}


def test_toothfairy_all_classes_swaps_the_jaws_by_name(tmp_path, capsys):
    labels = _toothfairy(tmp_path / "tf")
    out = tmp_path / "manifests"
    assert main(["data", "manifest", "nnunet", str(tmp_path / "tf"), "-o", str(out), "--classes", "all",
                 "--val-fraction", "0"]) == 0
    assert f"label_table: {out / 'label_table.json'}" in capsys.readouterr().out
    seen = _classes_seen(out, str(out / "label_table.json"))
    assert seen[MANDIBLE] == int((labels == 1).sum()) and seen[MAXILLA] == int((labels == 2).sum())
    assert seen[111] == int((labels == 111).sum()) and seen[11] == int((labels == 11).sum())
    assert not (out / "validation.json").exists()


def test_a_fixed_split_is_not_replaced_by_accident(tmp_path, capsys):
    _toothfairy(tmp_path / "tf")
    out = tmp_path / "manifests"
    assert main(["data", "manifest", "nnunet", str(tmp_path / "tf"), "-o", str(out)]) == 0
    before = (out / "labeled.json").read_text(encoding="utf-8")
    assert main(["data", "manifest", "nnunet", str(tmp_path / "tf"), "-o", str(out), "--seed", "3"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "labeled.json").read_text(encoding="utf-8") == before
    assert main(["data", "manifest", "nnunet", str(tmp_path / "tf"), "-o", str(out), "--classes", "all",
                 "--overwrite", "--val-fraction", "0"]) == 0
    assert not (out / "validation.json").exists()  # no stale manifest from the first listing


def test_a_failed_overwrite_leaves_the_earlier_split_whole(tmp_path, monkeypatch):
    """--overwrite replaces the manifests as one set: when writing the second one fails (a full disk),
    every earlier manifest is byte for byte as it was and no half-written file is left."""
    import toothseg.train.data.cases as cases

    _toothfairy(tmp_path / "tf", cases=("tf_a", "tf_b", "tf_c", "tf_d"))
    out = tmp_path / "manifests"
    assert main(["data", "manifest", "nnunet", str(tmp_path / "tf"), "-o", str(out), "--val-fraction", "0.25"]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert {"labeled.json", "validation.json"} <= set(before)
    real_write, calls = cases.write_manifest, []

    def fail_on_the_second(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(path, *args, **kwargs)

    monkeypatch.setattr(cases, "write_manifest", fail_on_the_second)
    assert main(["data", "manifest", "nnunet", str(tmp_path / "tf"), "-o", str(out), "--val-fraction", "0.5",
                 "--seed", "7", "--overwrite"]) != 0
    assert len(calls) == 2 and {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_sts2024_folders_masks_and_unlabeled(tmp_path, capsys):
    root = tmp_path / "sts"
    for folder in ("Images", "Masks", "Train-Unlabeled-update"):
        (root / folder).mkdir(parents=True)
    image = sitk.Image([8, 8, 8], sitk.sitkInt16)
    mask = sitk.Image([8, 8, 8], sitk.sitkUInt8)
    for case in ("Validation_0001", "Validation_0002"):
        sitk.WriteImage(image, str(root / "Images" / f"{case}.nii.gz"))
        sitk.WriteImage(mask, str(root / "Masks" / f"{case}_Mask.nii.gz"))
    sitk.WriteImage(image, str(root / "Images" / "Validation_0003.nii.gz"))  # no mask: unlabeled
    sitk.WriteImage(image, str(root / "Train-Unlabeled-update" / "U_0001.nii.gz"))
    out = tmp_path / "m"
    assert main(["data", "manifest", "sts2024", str(root), "-o", str(out), "--val-fraction", "0"]) == 0
    assert "2 labeled, 0 validation, 2 unlabeled" in capsys.readouterr().out
    labeled = read_manifest(out / "labeled.json")
    assert [(c.id, c.label.name) for c in labeled] == [("Validation_0001", "Validation_0001_Mask.nii.gz"),
                                                       ("Validation_0002", "Validation_0002_Mask.nii.gz")]
    assert labeled[0].label_values == ((1, 0), (71, 0))
    assert sorted(c.id for c in read_manifest(out / "unlabeled.json")) == ["U_0001", "Validation_0003"]


def test_folders_with_named_subfolders_and_binary_masks(tmp_path, capsys):
    root = tmp_path / "Integrity" / "Labeled"
    for folder in ("Image", "Mask"):
        (root / folder).mkdir(parents=True)
    (tmp_path / "Integrity" / "Unlabeled" / "Image").mkdir(parents=True)
    image = sitk.Image([6, 6, 6], sitk.sitkInt16)
    sitk.WriteImage(image, str(root / "Image" / "a.nii.gz"))
    sitk.WriteImage(sitk.Image([6, 6, 6], sitk.sitkUInt8), str(root / "Mask" / "a.nii.gz"))
    sitk.WriteImage(sitk.Image([6, 6, 6], sitk.sitkUInt8), str(root / "Mask" / "orphan.nii.gz"))
    sitk.WriteImage(image, str(tmp_path / "Integrity" / "Unlabeled" / "Image" / "u.nii.gz"))
    out = tmp_path / "m"
    assert main(["data", "manifest", "folders", str(root), "--images", "Image", "--labels", "Mask", "--unlabeled",
                 str(tmp_path / "Integrity" / "Unlabeled" / "Image"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 labeled, 0 validation, 1 unlabeled" in printed and "orphan" in printed
    assert "label_values" not in json.loads((out / "labeled.json").read_text(encoding="utf-8"))
    assert main(["data", "manifest", "folders", str(root), "--images", "Nope", "-o", str(tmp_path / "n")]) == 1
    assert "Nope: no such folder" in capsys.readouterr().err


def test_bad_layouts_say_what_is_missing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["data", "manifest", "nnunet", str(tmp_path / "empty"), "-o", str(tmp_path / "m")]) == 1
    assert "dataset.json" in capsys.readouterr().err
    assert main(["data", "manifest", "folders", str(tmp_path / "empty"), "-o", str(tmp_path / "m")]) == 1
    assert "no images folder" in capsys.readouterr().err
    # the sts2024 layout has fixed names: its message points to the layout that takes others, not to an option
    # it refuses
    assert main(["data", "manifest", "sts2024", str(tmp_path / "empty"), "-o", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "no images folder" in err and "use the folders layout with --images and --labels" in err
    # options that another layout would ignore are refused before anything is listed or written
    assert main(["data", "manifest", "folders", str(tmp_path / "empty"), "-o", str(tmp_path / "m"),
                 "--classes", "teeth+pulp"]) == 1
    assert "--classes applies to the nnunet layout" in capsys.readouterr().err
    assert main(["data", "manifest", "sts2024", str(tmp_path / "empty"), "-o", str(tmp_path / "m"),
                 "--labels", "Masks"]) == 1
    assert "--images and --labels apply to the folders layout" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    (tmp_path / "bad.json").write_text(json.dumps({"label_values": {"1": "x"}, "cases": [{"id": "a", "image": "a"}]}))
    with pytest.raises(InputError, match="label_values"):
        read_manifest(tmp_path / "bad.json")


@pytest.mark.parametrize("content, message", [
    ([{"id": "a", "image": "a.nii.gz"}], "a manifest is a JSON object whose 'cases' is a list"),
    ({"cases": {"id": "a", "image": "a.nii.gz"}}, "a manifest is a JSON object whose 'cases' is a list"),
    ({"cases": ["a.nii.gz"]}, "every case needs 'id' and 'image'"),
    ({"cases": [{"id": "a", "image": ["a.nii.gz"]}]}, "case a: 'image' and 'label' are file paths"),
    ({"cases": [{"id": "a", "image": "a.nii.gz", "label": 3}]}, "case a: 'image' and 'label' are file paths"),
    ({"cases": [{"id": "a", "image": "a.nii.gz"}, {"id": "a", "image": "b.nii.gz"}]}, "case ID 'a' appears twice"),
    ({"cases": []}, "lists no cases"),
    ("{not json", "cannot read manifest"),
])
def test_a_malformed_manifest_is_refused_with_its_problem(tmp_path, content, message):
    """Hand-written manifests: wrong shapes are InputErrors that say what a manifest is, never a raw
    AttributeError; a repeated case ID (cases are cached and pseudo-labelled by ID) is refused."""
    path = tmp_path / "m.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_manifest(path)


def test_validation_split_is_stable_and_order_free():
    from toothseg.train.data.cases import Case

    cases = [Case(f"c{i}", f"c{i}.nii.gz") for i in range(40)]
    train, val = split_validation(cases, 0.1, seed=0)
    assert len(val) == 4 and len(train) == 36
    assert {c.id for c in split_validation(cases[::-1], 0.1, seed=0)[1]} == {c.id for c in val}
    more = split_validation(cases + [Case("new", "new.nii.gz")], 0.1, seed=0)[1]
    assert {c.id for c in val} <= {c.id for c in more}  # adding a case keeps the earlier choices
    assert {c.id for c in split_validation(cases, 0.1, seed=1)[1]} != {c.id for c in val}


def test_class_sets():
    values = {1: MANDIBLE, 2: MAXILLA, 11: 11, 111: 111, 7: 0}
    assert class_mapping(values, "teeth") == {1: 0, 2: 0, 7: 0, 111: 11}
    assert class_mapping(values, "teeth+pulp") == {1: 0, 2: 0, 7: 0}
    assert class_mapping(values, "all") == {1: MANDIBLE, 2: MAXILLA, 7: 0}


def test_the_printed_data_block_reads_back_as_the_same_paths(tmp_path, capsys):
    """Pasted into a recipe, 'labeled: /data/Study #2/…' ended at ' #' (a YAML comment)."""
    import yaml

    _toothfairy(tmp_path / "tf")
    out = tmp_path / "Study #2: manifests"
    assert main(["data", "manifest", "nnunet", str(tmp_path / "tf"), "-o", str(out), "--classes", "all"]) == 0
    printed = capsys.readouterr().out
    block = yaml.safe_load(printed[printed.index("data:"):])["data"]
    assert block["labeled"] == str(out / "labeled.json") and block["label_table"] == str(out / "label_table.json")
