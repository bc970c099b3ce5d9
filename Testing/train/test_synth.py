"""Synthetic CBCT on real tooth shapes: plausible tissue contrast, randomness, regions, missing teeth."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import Volume
from toothseg.train.synth import SynthesisOptions, prepare_anatomy, synthesize
from toothseg.train.synth.cbct import AIR, BONE_CANCELLOUS, DENTINE, ENAMEL, PULP, SOFT


@pytest.fixture(scope="module")
def anatomy(sts_labels):
    coarse = Volume(sts_labels.array[::4, ::4, ::4].copy(), (1.2, 1.2, 1.2), sts_labels.origin, sts_labels.direction)
    return prepare_anatomy(coarse)


def test_tissues_follow_the_anatomy(anatomy):
    tissue = anatomy.tissue
    teeth = anatomy.labels.array > 0
    assert np.all(np.isin(tissue[teeth], [DENTINE, ENAMEL, PULP]))
    assert (tissue == BONE_CANCELLOUS).sum() > 0 and (tissue == SOFT).sum() > 0 and (tissue == AIR).sum() > 0
    assert (tissue == ENAMEL).sum() < (tissue == DENTINE).sum()


def test_intensity_order_and_randomness(anatomy):
    options = SynthesisOptions(missing_teeth=(0, 0), metal_probability=0.0)
    image, labels = synthesize(anatomy, np.random.default_rng(1), options)
    assert image.metadata["synthetic"] is True
    np.testing.assert_array_equal(labels.array, anatomy.labels.array)
    means = {k: float(image.array[anatomy.tissue == k].mean()) for k in (AIR, SOFT, BONE_CANCELLOUS, DENTINE, ENAMEL)}
    assert means[AIR] < means[SOFT] < means[BONE_CANCELLOUS] < means[DENTINE] < means[ENAMEL]
    other, _ = synthesize(anatomy, np.random.default_rng(2), options)
    assert not np.array_equal(image.array, other.array)


def test_missing_teeth_leave_the_labels(anatomy):
    image, labels = synthesize(anatomy, np.random.default_rng(3), SynthesisOptions(missing_teeth=(3, 3)))
    present = set(np.unique(labels.array)) - {0}
    assert len(present) == len(anatomy.teeth) - 3


def test_region_synthesis_keeps_geometry(anatomy):
    region = (slice(10, 40), slice(20, 60), slice(30, 90))
    image, labels = synthesize(anatomy, np.random.default_rng(4), SynthesisOptions(missing_teeth=(0, 0)), region=region)
    assert image.shape == (30, 40, 60)
    np.testing.assert_array_equal(labels.array, anatomy.labels.array[region])
    expected_origin = anatomy.labels.index_to_physical(np.array([[30, 20, 10]]))[0]
    np.testing.assert_allclose(image.origin, expected_origin)
