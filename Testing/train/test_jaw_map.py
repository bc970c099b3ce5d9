"""Synthetic scans on the real jaw-level map (shared/data/dentalsegmentator): real bone around the
teeth, binary tooth labels, and only binary tooth models may learn from it."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import Volume
from toothseg.core.errors import InputError, LabelError
from toothseg.core.io import read_label_map
from toothseg.core.labels import label_table_named
from toothseg.core.preprocessing import resampled_shape, to_canonical
from toothseg.train.config.schema import DataConfig
from toothseg.train.data.dataset import TrainingData, nearest_resample
from toothseg.train.synth import SynthesisOptions, synthesize
from toothseg.train.synth.cbct import AIR, BONE_CANCELLOUS, BONE_CORTICAL, DENTINE, ENAMEL, PULP, SOFT
from toothseg.train.synth.jaw_map import JAW_MAP_VALUES, prepare_jaw_anatomy

from ..conftest import shared_data_dir


@pytest.fixture(scope="module")
def jaw_map() -> Volume:
    path = shared_data_dir() / "dentalsegmentator" / "PostDentalSurgery_Segmentation.nii.gz"
    assert path.exists(), f"shared data missing: {path}"
    canonical, _ = to_canonical(read_label_map(path))
    shape = resampled_shape(canonical.shape, canonical.spacing_zyx, (1.2, 1.2, 1.2))
    return Volume(nearest_resample(canonical.array, shape), (1.2, 1.2, 1.2), canonical.origin, canonical.direction)


@pytest.fixture(scope="module")
def anatomy(jaw_map):
    return prepare_jaw_anatomy(jaw_map)


def test_tissues_follow_the_real_jaws(jaw_map, anatomy):
    values, tissue = jaw_map.array, anatomy.tissue
    teeth = np.isin(values, (JAW_MAP_VALUES["upper_teeth"], JAW_MAP_VALUES["lower_teeth"]))
    np.testing.assert_array_equal(anatomy.labels.array, teeth.astype(np.uint8))
    assert np.all(np.isin(tissue[teeth], (DENTINE, ENAMEL, PULP)))
    assert (tissue[teeth] == ENAMEL).any() and (tissue[teeth] == PULP).any()
    bone = np.isin(values, (JAW_MAP_VALUES["maxilla"], JAW_MAP_VALUES["mandible"]))
    assert np.all(np.isin(tissue[bone], (BONE_CANCELLOUS, BONE_CORTICAL)))
    assert np.all(tissue[values == JAW_MAP_VALUES["canal"]] == SOFT)
    assert (tissue == AIR).any() and (tissue == SOFT).sum() > bone.sum()
    assert anatomy.teeth == [] and anatomy.centroids == {}  # nothing to number, move or remove


def test_a_scan_on_it_shows_bone_that_is_not_tooth(anatomy):
    image, labels = synthesize(anatomy, np.random.default_rng(0), SynthesisOptions(missing_teeth=(0, 4)))
    np.testing.assert_array_equal(labels.array, anatomy.labels.array)  # no tooth is "missing" from a jaw map
    cortical = float(np.median(image.array[anatomy.tissue == BONE_CORTICAL]))
    soft = float(np.median(image.array[anatomy.tissue == SOFT]))
    assert cortical > soft + 300  # dense bone, labelled background: what a tooth locator must learn to reject
    assert labels.array[anatomy.tissue == BONE_CORTICAL].max() == 0


def test_a_map_without_bone_is_refused(jaw_map):
    teeth_only = jaw_map.with_array(np.where(jaw_map.array >= 3, jaw_map.array, 0))
    with pytest.raises(LabelError, match="bone"):
        prepare_jaw_anatomy(teeth_only)


def test_only_a_binary_tooth_model_learns_from_it():
    fdi = label_table_named("fdi")
    config = DataConfig(source="synthetic", labeled="sts2024-0002,dentalsegmentator", validation="2",
                        spacing=[1.2, 1.2, 1.2], patch_size=[32, 32, 32])
    with pytest.raises(InputError, match="jaw-level"):
        TrainingData(config, fdi, [0, *fdi.values])
    binary = label_table_named("binary")
    config = DataConfig(source="synthetic", labeled="sts2024-0002,dentalsegmentator", validation="2",
                        label_table="binary", spacing=[1.2, 1.2, 1.2], patch_size=[32, 32, 32],
                        synthesis={"tooth_exchange_probability": 1.0})
    data = TrainingData(config, binary, [0, 1])
    teeth_case, jaw_case = data.labeled
    assert jaw_case.anatomy == "jaws" and data._donors_for(teeth_case) == []  # no FDI teeth to lend
    image, labels = data.synthetic_volume(jaw_case, np.random.default_rng(1))
    assert set(np.unique(labels.array)) == {0, 1}
    _, validation_image, validation_labels = data.validation_volumes()[1]  # the second cycles to the jaw map
    assert validation_labels.shape == labels.shape
