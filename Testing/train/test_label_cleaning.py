"""``data.min_label_voxels``: tiny label fragments (the coarse-to-fine method's "small teeth" under 36
voxels) read as background in training, while every larger tooth and the ignore value are kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from toothseg.core import InputError
from toothseg.core.labels import label_table_named
from toothseg.train.config import DataConfig
from toothseg.train.config.loader import load_recipe
from toothseg.train.data.cases import read_manifest
from toothseg.train.data.dataset import IGNORE, TrainingData, drop_small_labels


def test_labels_under_the_size_become_background_and_others_stay():
    labels = np.zeros((6, 10, 10), np.uint16)
    labels[0:4, 0:3, 0:3] = 11     # 36 voxels: kept (the rule is "fewer than")
    labels[0:5, 5:9, 5:9] = 21     # 80 voxels
    labels[5, 0:5, 0:7] = 48       # 35 voxels: dropped
    labels[5, 9, 9] = 1            # a stray click: dropped
    labels[4, 0:2, 0:2] = IGNORE   # 4 voxels of "ignore": never a tooth to drop
    cleaned, dropped = drop_small_labels(labels, 36)
    assert dropped == [1, 48] and cleaned.dtype == labels.dtype
    assert set(np.unique(cleaned).tolist()) == {0, 11, 21, IGNORE}
    assert (cleaned[labels == 48] == 0).all() and (cleaned[labels == 21] == 21).all()
    assert (cleaned[labels == 11] == 11).all() and (cleaned[labels == IGNORE] == IGNORE).all()
    same, none = drop_small_labels(labels, 0)
    assert same is labels and none == []


RECIPE = Path(__file__).resolve().parents[2] / "ToothSegTraining/toothseg/train/recipes/coarse_to_fine.yaml"


def _case(tmp_path):
    labels = np.zeros((8, 12, 12), np.uint8)
    labels[1:7, 1:6, 1:6] = 11   # 150 voxels
    labels[2:4, 8:10, 8:11] = 38  # 12 voxels: a fragment
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(size=labels.shape).astype(np.float32))
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(label, str(tmp_path / "a_label.nii.gz"))
    (tmp_path / "labeled.json").write_text(json.dumps(
        {"cases": [{"id": "a", "image": "a.nii.gz", "label": "a_label.nii.gz"}]}), encoding="utf-8")
    return read_manifest(tmp_path / "labeled.json")[0]


@pytest.mark.parametrize("min_voxels, expected", [(0, {0, 11, 38}), (36, {0, 11})])
def test_training_reads_a_case_without_its_fragments(tmp_path, min_voxels, expected):
    case = _case(tmp_path)
    config = DataConfig(source="files", labeled=str(tmp_path / "labeled.json"), spacing=[1.0, 1.0, 1.0],
                        patch_size=[8, 8, 8], min_label_voxels=min_voxels)
    table = label_table_named("fdi")
    values = [0, *table.values]
    prepared = TrainingData(config, table, values, 0).prepare(case)
    assert {values[c] for c in np.unique(prepared.labels)} == expected


def test_the_coarse_to_fine_recipe_drops_small_teeth_and_a_negative_size_is_refused():
    recipe, _ = load_recipe(RECIPE)
    assert recipe.data.min_label_voxels == 36
    with pytest.raises(InputError, match="min_label_voxels must be ≥ 0"):
        load_recipe(RECIPE, ["data.min_label_voxels=-1"])
