"""Acquisition: TTA and ensemble disagreement, ranking, the held-out share."""

from __future__ import annotations

import numpy as np
import pytest
from toothseg.core import Volume
from toothseg.core.errors import InputError
from toothseg.core.inference.predictor import InferenceOptions, Predictor
from toothseg.core.pool.ranking import case_score, rank_cases
from toothseg.train.active_learning.acquisition import ensemble_disagreement, tta_disagreement
from toothseg.train.active_learning.loop import holdout_cases

from ...core.inference.helpers import HalfImage, IntensityToClass, loaded
from .helpers import TABLE


def test_tta_disagreement_is_zero_for_a_side_consistent_model_and_one_for_a_side_blind_one():
    """HalfImage labels the image-left half 11 and the right half 21 whatever it sees: mirrored,
    mirrored back and FDI-swapped it agrees with itself. IntensityToClass labels by intensity only:
    on a left-right symmetric image the swap turns every 11 into 21, total disagreement."""
    image = np.zeros((1, 24, 24), np.float32)
    image[:, 4:10, 4:20] = 1.0
    image[:, 14:20, 4:20] = 2.0  # symmetric left-right
    volume = Volume(image)
    consistent = Predictor(loaded(HalfImage(), [0, 11, 21], TABLE, patch=[1, 24, 24]), InferenceOptions(tta=False))
    assert tta_disagreement(consistent, volume) == {11: 0.0, 21: 0.0}
    blind = Predictor(loaded(IntensityToClass(3), [0, 11, 21], TABLE, patch=[1, 24, 24]), InferenceOptions(tta=False))
    assert tta_disagreement(blind, volume) == {11: 1.0, 21: 1.0}
    # given the plain prediction (as predict_pool has it), the same answer from one prediction less
    assert tta_disagreement(blind, volume, blind.predict(volume).labels) == {11: 1.0, 21: 1.0}
    assert tta_disagreement(consistent, volume, consistent.predict(volume).labels) == {11: 0.0, 21: 0.0}


def test_ensemble_disagreement_needs_members_and_measures_them():
    volume = Volume(np.ones((1, 16, 16), np.float32))
    same = loaded(None, [0, 11, 21], TABLE, members=[("ensemble", loaded(HalfImage(), [0, 11, 21], TABLE)),
                                                     ("ensemble", loaded(HalfImage(), [0, 11, 21], TABLE))])
    assert ensemble_disagreement(same, volume, InferenceOptions(tta=False)) == {11: 0.0, 21: 0.0}
    single = loaded(HalfImage(), [0, 11, 21], TABLE)
    with pytest.raises(InputError, match="not an ensemble"):
        ensemble_disagreement(single, volume, InferenceOptions(tta=False))


def test_rank_cases_orders_randomises_and_diversifies():
    scores = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.1}
    assert rank_cases(list(scores), scores, 2, "entropy") == ["a", "b"]
    assert rank_cases(list(scores), scores, 3, "random", seed=1) == rank_cases(list(scores), {}, 3, "random", seed=1)
    assert sorted(rank_cases(list(scores), {}, 4, "random")) == sorted(scores)
    # a and b doubt the same tooth; c doubts another: diverse picks a, then c
    features = {"a": {"11": 0.9}, "b": {"11": 0.8}, "c": {"21": 0.7}, "d": {"21": 0.1}}
    assert rank_cases(list(scores), scores, 2, "entropy", diverse=True, features=features) == ["a", "c"]
    with pytest.raises(InputError, match="diverse"):  # a random draw has no doubts to spread over
        rank_cases(list(scores), {}, 2, "random", diverse=True)
    with pytest.raises(InputError, match="no 'tta' score"):
        rank_cases(list(scores), {}, 2, "tta")
    assert case_score({}) == 1.0 and case_score({11: 0.2, 21: 0.4}) == pytest.approx(0.3)


def test_holdout_is_stable_and_grows_with_the_corrections():
    first = holdout_cases([f"c{i}" for i in range(5)], [])
    assert len(first) == 1
    later = holdout_cases([f"c{i}" for i in range(10)], first)
    assert later[0] == first[0] and len(later) == 2
    assert holdout_cases(["only"], []) == []
