"""Tooth-level anatomy augmentation: teeth turned, resized, shifted or exchanged between patients keep
their FDI numbers and their places, labels and tissues agree, and a block is cut from the whole sample."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from toothseg.core import Volume
from toothseg.core.errors import InputError
from toothseg.train.synth import SynthesisOptions, prepare_anatomy, synthesize
from toothseg.train.synth import cbct
from toothseg.train.synth.tooth_moves import (
    TOOTH_TISSUES,
    ToothMoveOptions,
    ToothSite,
    move_teeth,
    tooth_placements,
)


@pytest.fixture(scope="module")
def anatomy(sts_labels):
    coarse = Volume(sts_labels.array[::4, ::4, ::4].copy(), (1.2, 1.2, 1.2), sts_labels.origin, sts_labels.direction)
    return prepare_anatomy(coarse)


def _moved(anatomy, options: ToothMoveOptions, seed: int, donors=()):
    labels, tissue = anatomy.labels.array.copy(), anatomy.tissue.copy()
    region = tuple(slice(0, n) for n in labels.shape)
    rng = np.random.default_rng(seed)
    placements = tooth_placements(anatomy.centroids, [d.centroids for d in donors], rng, options)
    move_teeth(labels, tissue, region, anatomy.labels.spacing_zyx, anatomy.centroids,
               (anatomy.labels.array, anatomy.tissue),
               [(d.labels.array, d.tissue, d.labels.spacing_zyx, d.centroids) for d in donors], placements)
    return labels, tissue, placements


def test_tooth_tissues_are_those_of_the_synthesiser():
    assert TOOTH_TISSUES == (cbct.DENTINE, cbct.ENAMEL, cbct.PULP)


def test_a_move_by_nothing_changes_nothing(anatomy):
    labels, tissue, placements = _moved(anatomy, ToothMoveOptions(1.0, 0.0, 0.0, (1.0, 1.0)), seed=0)
    assert len(placements) == len(anatomy.teeth)
    np.testing.assert_array_equal(labels, anatomy.labels.array)
    np.testing.assert_array_equal(tissue, anatomy.tissue)


def test_jittered_teeth_keep_their_numbers_and_places(anatomy):
    options = ToothMoveOptions(jitter_probability=1.0, rotate_deg=8.0, shift_mm=1.0, scale=(0.9, 1.1))
    labels, tissue, placements = _moved(anatomy, options, seed=1)
    assert not np.array_equal(labels, anatomy.labels.array)
    assert sorted(int(v) for v in np.unique(labels) if v) == anatomy.teeth
    spacing = np.asarray(anatomy.labels.spacing_zyx)
    for value in anatomy.teeth:
        before = anatomy.centroids[value]
        mask = labels == value
        centre = np.array(ndimage.center_of_mass(mask)) * spacing
        # shift ≤ √3 mm, plus what neighbours cut off and 1.2 mm voxels
        assert np.linalg.norm(centre - before.centre_mm) < 3.0, value
        assert 0.5 < mask.sum() * spacing.prod() / before.volume_mm3 < 1.6, value
    # the image is painted from the tissues: a tooth voxel has tooth tissue and only a tooth voxel has
    assert np.array_equal(np.isin(tissue, TOOTH_TISSUES), labels > 0)


def test_an_exchanged_tooth_is_the_donors_tooth_in_this_patients_place(anatomy, sts_labels):
    """The donor is this patient's own map on another grid (0.8 mm, shifted by 7 voxels): exchanging
    every tooth for the donor's must give back each tooth where it was, which only holds if millimetres,
    grids and centroids are handled right."""
    fine = sts_labels.array[::3, ::3, ::3]
    padded = np.pad(fine, ((7, 0), (0, 5), (3, 0)))
    donor = prepare_anatomy(Volume(padded, (0.9, 0.9, 0.9), sts_labels.origin, sts_labels.direction))
    labels, tissue, placements = _moved(anatomy, ToothMoveOptions(exchange_probability=1.0), seed=2, donors=[donor])
    assert {p.source for p in placements} == {0} and len(placements) == len(anatomy.teeth)
    dice = []
    for value in anatomy.teeth:
        a, b = labels == value, anatomy.labels.array == value
        dice.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert np.median(dice) > 0.85 and min(dice) > 0.6, dice
    assert np.array_equal(np.isin(tissue, TOOTH_TISSUES), labels > 0)


def test_another_patients_teeth_replace_this_ones_only_when_comparable(anatomy):
    """With Validation_0001-like donors: a near-empty donor tooth (13 voxels in the real map) is never
    used, a comparable one is."""
    sites = anatomy.centroids
    tiny = {v: ToothSite(s.centre_mm, s.box, s.volume_mm3 * 0.05) for v, s in sites.items()}
    options = ToothMoveOptions(exchange_probability=1.0)
    assert tooth_placements(sites, [tiny], np.random.default_rng(0), options) == []
    fair = {v: ToothSite(s.centre_mm + 3.0, s.box, s.volume_mm3 * 1.3) for v, s in list(sites.items())[:5]}
    placements = tooth_placements(sites, [tiny, fair], np.random.default_rng(0), options)
    assert [p.value for p in placements] == sorted(fair) and {p.source for p in placements} == {1}


def test_a_real_other_patient_lends_teeth_with_their_own_size(anatomy, sts_0001_labels):
    other = prepare_anatomy(Volume(sts_0001_labels.array[::3, ::3, ::3].copy(), (0.75, 0.75, 0.75),
                                   sts_0001_labels.origin, sts_0001_labels.direction))
    labels, tissue, placements = _moved(anatomy, ToothMoveOptions(exchange_probability=1.0), seed=3, donors=[other])
    assert len(placements) >= 10
    spacing = np.asarray(anatomy.labels.spacing_zyx)
    changed = 0
    for p in placements:
        volume = (labels == p.value).sum() * spacing.prod()
        own, lent = anatomy.centroids[p.value].volume_mm3, other.centroids[p.value].volume_mm3
        assert abs(volume - lent) < abs(volume - own) + 0.25 * lent, p.value  # the donor's size, not its own
        changed += abs(own - lent) > 0.2 * own
    assert changed >= 3
    assert sorted(int(v) for v in np.unique(labels) if v) == anatomy.teeth


def test_a_block_gets_the_labels_of_the_whole_sample(anatomy, sts_0001_labels):
    other = prepare_anatomy(Volume(sts_0001_labels.array[::4, ::4, ::4].copy(), (1.2, 1.2, 1.2),
                                   sts_0001_labels.origin, sts_0001_labels.direction))
    options = SynthesisOptions(missing_teeth=(2, 2), tooth_jitter_probability=0.7, tooth_exchange_probability=0.5)
    _, whole = synthesize(anatomy, np.random.default_rng(5), options, donors=[other])
    region = (slice(20, 70), slice(30, 90), slice(10, 80))
    _, block = synthesize(anatomy, np.random.default_rng(5), options, region=region, donors=[other])
    assert not np.array_equal(whole.array, anatomy.labels.array)
    np.testing.assert_array_equal(block.array, whole.array[region])


def test_donors_in_another_orientation_are_refused(anatomy):
    flipped = Volume(anatomy.labels.array, anatomy.labels.spacing, anatomy.labels.origin,
                     np.diag([-1.0, 1.0, 1.0]) @ np.asarray(anatomy.labels.direction).reshape(3, 3))
    donor = prepare_anatomy(flipped)
    with pytest.raises(InputError, match="orientation"):
        synthesize(anatomy, np.random.default_rng(0), SynthesisOptions(tooth_exchange_probability=1.0), donors=[donor])


def test_without_tooth_moves_nothing_is_drawn(anatomy):
    """Off by default: the random stream (and so every earlier sample) is as before."""
    plain = SynthesisOptions()
    assert not plain.tooth_moves.active
    assert tooth_placements(anatomy.centroids, [], np.random.default_rng(0), plain.tooth_moves) == []


def test_a_moved_tooth_never_cuts_a_neighbour(anatomy):
    """Teeth left in place keep every voxel: a moved tooth takes only voxels that no tooth holds."""
    options = ToothMoveOptions(jitter_probability=0.5, rotate_deg=10.0, shift_mm=1.5, scale=(1.1, 1.2))
    labels, _, placements = _moved(anatomy, options, seed=4)
    moved = {p.value for p in placements}
    still = [v for v in anatomy.teeth if v not in moved]
    assert moved and still
    for value in still:
        np.testing.assert_array_equal(labels == value, anatomy.labels.array == value)


def test_training_scans_borrow_teeth_from_the_other_patient_only_and_stay_right_handed():
    """In a recipe, the donors of a map are the other patients' maps (a map and a prediction of one scan
    are one patient); a sample with exchanged and jittered teeth still numbers the patient's sides right."""
    from toothseg.core.handedness import handedness_of
    from toothseg.core.labels import label_table_named
    from toothseg.train.config.schema import DataConfig
    from toothseg.train.data.dataset import TrainingData

    table = label_table_named("fdi")
    synthesis = {"tooth_exchange_probability": 1.0, "tooth_jitter_probability": 0.5, "missing_teeth": [0, 0]}
    config = DataConfig(source="synthetic", labeled="sts2024-0001,sts2024-0001-pred,sts2024-0002", validation="1",
                        spacing=[1.2, 1.2, 1.2], patch_size=[16, 16, 16], synthesis=synthesis)
    data = TrainingData(config, table, [0, *table.values])
    first, _, second = data.labeled
    donors = data._donors_for(first)
    assert donors == [data._anatomy_for(second)]
    image, labels = data.synthetic_volume(first, np.random.default_rng(0))
    plain = data._anatomy_for(first).labels.array
    assert not np.array_equal(labels.array, plain)
    assert handedness_of(labels).verdict == "correct"
    _, kept = data.synthetic_volume(first, np.random.default_rng(0), tooth_moves=False)
    np.testing.assert_array_equal(kept.array, plain)
