"""The occlusal surface: where upper and lower teeth meet, found from a tooth map without jaw classes; a
piece across it is cut, every other piece takes the jaw of its side (``teeth_from_boundary``'s
``occlusal_share``)."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import InputError
from toothseg.core.metrics.protocols import sts2024_case
from toothseg.core.postprocessing import apply_steps, step_problems
from toothseg.core.postprocessing import instances as instances_module
from toothseg.core.postprocessing.instances import JAWS_NOT_FROM_THE_BITE, SAY_WHICH_JAWS, separate_instances
from toothseg.core.postprocessing.arch_split import split_along_arch
from toothseg.core.postprocessing.occlusion import occlusal_surface, split_at_occlusal_surface

from ..conftest import corrected_canonical
from .test_arch_numbering import _arch


def _as_instances(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    values = [int(v) for v in np.unique(labels) if v]
    instances = (np.searchsorted(values, labels) + 1).astype(np.int32)
    instances[labels == 0] = 0
    return instances, values


def test_the_surface_of_a_flat_bite_lies_on_it_where_the_teeth_are():
    """The ideal arch bites on the plane z = 0 (crowns overlapping 1 mm, so every upper crown is joined to
    a lower one); the upper and lower teeth stand at different places along the arch (their widths
    differ), so many columns cross one jaw only, and their middles lie 7 mm off the plane. The surface
    stays within 1.5 mm of it over every tooth."""
    truth = _arch({14, 36})
    spacing = truth.spacing_zyx
    surface = occlusal_surface(separate_instances((truth.array > 0).astype(np.uint8), spacing), spacing)
    plane = -truth.origin[2] / spacing[0]  # index of z = 0
    footprint = (truth.array > 0).any(axis=0)
    assert np.abs(surface[footprint] - plane).max() * spacing[0] < 1.5


@pytest.mark.parametrize("patient", ["Validation_0001", "Validation_0002"])
def test_the_true_teeth_of_both_patients_lie_on_their_jaws_side(patient, sts_labels, sts_0001_labels):
    """The real dentitions (sides corrected, 0.75-0.9 mm), each true tooth one piece: at most one tooth per
    patient is cut or on the wrong side — Validation_0002's ground-truth "36", which sits in the upper jaw,
    and one lower premolar of Validation_0001, whose lower arch lies inside the upper one. A surface through
    the middles of the columns alone, without the refits from the pieces on either side, cut 2 true teeth
    of Validation_0001 and 5 of Validation_0002."""
    labels = sts_0001_labels if patient == "Validation_0001" else sts_labels
    truth, spacing = corrected_canonical(labels, 3 if patient == "Validation_0002" else 2)  # 0.9 and 0.75 mm
    instances, values = _as_instances(truth)
    cut, jaws = split_at_occlusal_surface(instances, occlusal_surface(instances, spacing), spacing)
    wrong = [v for i, v in enumerate(values) if jaws[i + 1] != ("upper" if v // 10 in (1, 2) else "lower")]
    assert int(cut.max()) - len(values) <= 1 and len(wrong) <= 1, (wrong, int(cut.max()) - len(values))


def test_crowns_joined_across_the_bite_come_apart_and_are_numbered():
    """Crowns only, upper and lower touching, one tooth class (as a coarse binary network draws them): by
    the crown-to-root direction the joined pairs number badly (instance Dice under 0.3); cut along the
    occlusal surface, with each piece's jaw from its side, over 0.8; the lower incisors, which touch, cut
    apart along the arch as well (``arch_split``), over 0.95."""
    truth = _arch({14, 36})
    height = np.arange(truth.array.shape[0]) * truth.spacing_zyx[0] + truth.origin[2]
    crowns = np.where(np.abs(height)[:, None, None] <= 7, truth.array, 0)
    tooth = (crowns > 0).astype(np.uint8)
    spacing = truth.spacing_zyx
    plain = apply_steps(tooth, spacing, [{"name": "teeth_from_boundary"}])
    occlusal = apply_steps(tooth, spacing, [{"name": "teeth_from_boundary", "occlusal_share": 0.25}])
    assert sts2024_case(crowns, plain)["instance_dsc"] < 0.3
    scores = sts2024_case(crowns, occlusal)
    assert scores["instance_dsc"] > 0.8 and scores["ia"] > 0.8, scores
    along_arch = apply_steps(tooth, spacing, [{"name": "teeth_from_boundary", "occlusal_share": 0.25,
                                               "arch_split": 1.4}])
    along = sts2024_case(crowns, along_arch)  # the lower incisors touch: cut along the arch, 0.89 -> 0.97
    assert along["instance_dsc"] > max(0.95, scores["instance_dsc"]), (along, scores)


def test_one_jaw_whose_teeth_all_lie_across_the_surface_is_left_alone():
    """An upper jaw alone: the first surface runs through the middle of its teeth, no piece lies on one side
    of it, so there is no bite to find (None) and the step numbers as without the option."""
    truth = _arch({14})
    upper = np.where(truth.array < 30, truth.array, 0)
    instances, _ = _as_instances(upper)
    assert occlusal_surface(instances, truth.spacing_zyx) is None
    tooth = (upper > 0).astype(np.uint8)
    steps = [{"name": "teeth_from_boundary"}]
    notes: list[str] = []
    np.testing.assert_array_equal(apply_steps(tooth, truth.spacing_zyx, [{**steps[0], "occlusal_share": 0.25}],
                                              notes=notes),
                                  apply_steps(tooth, truth.spacing_zyx, steps))
    assert notes == [JAWS_NOT_FROM_THE_BITE["all_across"] + SAY_WHICH_JAWS]  # jaws from the roots, and the user is told
    said: list[str] = []  # the user said so: nothing to tell
    apply_steps(tooth, truth.spacing_zyx, [{**steps[0], "occlusal_share": 0.25}], jaws_in_view="upper", notes=said)
    both = (truth.array > 0).astype(np.uint8)  # both jaws, apart at the bite: a surface, no note
    apply_steps(both, truth.spacing_zyx, [{**steps[0], "occlusal_share": 0.25}], notes=said)
    assert said == []


def _antagonists_joined():
    """The ideal full arch (a Volume) and its instances with every lower tooth joined to its upper antagonist
    (41 to 11, 36 to 26, ...)."""
    truth = _arch(set())
    pairs = np.where(truth.array >= 40, truth.array - 30, np.where(truth.array >= 30, truth.array - 10, truth.array))
    return truth, _as_instances(pairs)[0]


def test_jaws_joined_along_the_whole_bite_give_a_surface_when_both_are_known():
    """Every piece lies across the surface, as the teeth of an upper jaw alone cut through their middles
    do, so without being told the step finds no surface. Told that both jaws are there, it fits the
    surface from the pieces' inner ends, and the cut gives each jaw its own halves."""
    truth, instances = _antagonists_joined()
    spacing = truth.spacing_zyx
    assert occlusal_surface(instances, spacing) is None
    surface = occlusal_surface(instances, spacing, both_jaws=True)
    assert surface is not None
    plane = -truth.origin[2] / spacing[0]
    footprint = (truth.array > 0).any(axis=0)
    assert np.abs(surface[footprint] - plane).max() * spacing[0] < 1.5
    cut, jaws = split_at_occlusal_surface(instances, surface, spacing)
    assert int(cut.max()) == 2 * int(instances.max())  # every pair cut once
    said_upper = np.isin(cut, [v for v, jaw in jaws.items() if jaw == "upper"])
    is_upper = np.isin(truth.array // 10, (1, 2))
    tooth = truth.array > 0
    assert (said_upper == is_upper)[tooth].mean() > 0.95  # the crowns overlap 2 mm at the bite: not 1.0
    for value, jaw in jaws.items():  # and each part mostly of its jaw
        assert np.isin(truth.array[cut == value] // 10, (1, 2) if jaw == "upper" else (3, 4)).mean() > 0.7
    # what the user says makes no surface out of pieces that all lie on one side and none across it
    blobs = np.zeros((9, 9, 30), np.int32)
    for index in range(5):
        blobs[3:6, 3:6, 6 * index:6 * index + 3] = index + 1  # 27 mm³ each: too small to lie across
    assert occlusal_surface(blobs, (1.0, 1.0, 1.0), both_jaws=True) is None


def test_the_step_told_both_jaws_numbers_a_dentition_joined_along_the_bite(monkeypatch):
    """The same pieces as a network map that closed the bite leaves them (on one synthetic scan of
    Validation_0002 a longer-trained binary model found 13 teeth of 30 this way, 28 with ``--jaws both``):
    ``jaws_in_view="both"`` reaches the surface step, and the teeth come out numbered."""
    truth, instances = _antagonists_joined()
    monkeypatch.setattr(instances_module, "separate_instances", lambda *args, **kwargs: instances.copy())
    tooth = (truth.array > 0).astype(np.uint8)
    steps = [{"name": "teeth_from_boundary", "occlusal_share": 0.25}]
    notes: list[str] = []
    unknown = sts2024_case(truth.array, apply_steps(tooth, truth.spacing_zyx, steps, notes=notes))
    told_notes: list[str] = []
    told = sts2024_case(truth.array, apply_steps(tooth, truth.spacing_zyx, steps, jaws_in_view="both",
                                                 notes=told_notes))
    assert unknown["instance_dsc"] < 0.6 and told["instance_dsc"] > 0.9 and told["ia"] > 0.9, (unknown, told)
    # not told, the step says what it did and what to do: the user alone can tell this map from one jaw
    assert notes == [JAWS_NOT_FROM_THE_BITE["all_across"] + SAY_WHICH_JAWS] and "--jaws" in notes[0]
    assert told_notes == []


def test_bad_input_is_refused():
    with pytest.raises(InputError, match="2D"):
        occlusal_surface(np.ones((1, 4, 4), np.int32), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="teeth"):
        occlusal_surface(np.zeros((4, 4, 4), np.int32), (1.0, 1.0, 1.0))
    assert step_problems([{"name": "teeth_from_boundary", "occlusal_share": 0.6}])  # above one half: both sides
    assert not step_problems([{"name": "teeth_from_boundary", "occlusal_share": 0.25}])


def _true_jaws(values: list[int]) -> dict[int, str]:
    return {i + 1: "upper" if v // 10 in (1, 2) else "lower" for i, v in enumerate(values)}


def test_neighbours_joined_at_their_contacts_are_cut_apart_along_the_arch():
    """The ideal arch with 31+32+33 and 16+17 each one piece (as a coarse map joins them; the incisors
    together are under the neck split's size): cut along the arch where the pieces are thinnest, every one
    of those teeth comes back with Dice over 0.85; teeth that were one piece each are not touched."""
    truth = _arch({14, 36})
    instances, values = _as_instances(truth.array)
    jaws = _true_jaws(values)
    joined = instances.copy()
    for group in ((31, 32, 33), (16, 17)):
        first = values.index(group[0]) + 1
        for fdi in group[1:]:
            joined[instances == values.index(fdi) + 1] = first
    split, split_jaws = split_along_arch(joined, jaws, truth.spacing_zyx)
    for fdi in (31, 32, 33, 16, 17):
        tooth = truth.array == fdi
        pieces, counts = np.unique(split[tooth], return_counts=True)
        piece = split == pieces[np.argmax(counts)]
        dice = 2 * np.count_nonzero(tooth & piece) / (np.count_nonzero(tooth) + np.count_nonzero(piece))
        assert dice > 0.85, (fdi, dice)
    assert int(split.max()) == int(joined.max()) + 3 and all(split_jaws[v] == "lower" for v in np.unique(split[
        np.isin(truth.array, (31, 32, 33))]))
    untouched = ~np.isin(truth.array, (31, 32, 33, 16, 17))
    np.testing.assert_array_equal(split[untouched], joined[untouched])


@pytest.mark.parametrize("patient", ["Validation_0001", "Validation_0002"])
def test_no_true_tooth_spans_two_widths_along_the_arch(patient, sts_labels, sts_0001_labels):
    """The real teeth, each one piece with its true jaw: none is cut (a molar's roots spread, incisors
    stand tilted, and still none spans two expected widths of its position)."""
    truth, spacing = corrected_canonical(sts_0001_labels if patient == "Validation_0001" else sts_labels, 2)
    instances, values = _as_instances(truth)
    split, _ = split_along_arch(instances, _true_jaws(values), spacing)
    np.testing.assert_array_equal(split, instances)


def test_arch_split_is_off_or_at_least_1_2_widths():
    assert step_problems([{"name": "teeth_from_boundary", "occlusal_share": 0.25, "arch_split": 1.0}])
    assert not step_problems([{"name": "teeth_from_boundary", "occlusal_share": 0.25, "arch_split": 1.4}])
    assert not step_problems([{"name": "teeth_from_boundary", "arch_split": 0}])


def test_a_true_upper_jaw_alone_is_not_cut_in_two(sts_labels):
    """Validation_0002's upper teeth alone (0.9 mm, one tooth class): the surface runs through their middles,
    but most teeth's crown-to-root directions then contradict their sides, so the cut is undone and the
    step numbers them as without the option. (The lower jaw alone is not caught: a documented limit.)"""
    truth, spacing = corrected_canonical(sts_labels, 3)
    upper = ((truth > 0) & (truth < 30)).astype(np.uint8)
    plain = apply_steps(upper, spacing, [{"name": "teeth_from_boundary"}])
    notes: list[str] = []
    options = apply_steps(upper, spacing, [{"name": "teeth_from_boundary", "occlusal_share": 0.25, "arch_split": 1.4}],
                          notes=notes)
    np.testing.assert_array_equal(options, plain)
    assert notes == [JAWS_NOT_FROM_THE_BITE["roots_up"] + SAY_WHICH_JAWS]


@pytest.mark.parametrize("patient", ["Validation_0001", "Validation_0002"])
def test_one_jaw_named_by_the_user_is_numbered_in_that_jaw_and_not_cut(patient, sts_labels, sts_0001_labels):
    """A lower jaw alone, which the roots check does not catch (the surface halves its teeth and the crowns go
    to the upper jaw: instance Dice 0.300 (Validation_0001, 0.75 mm) and 0.443 (Validation_0002, 0.6 mm),
    2026-12-07): told ``lower``, every tooth is numbered in the lower jaw and none is cut, 0.799 and 0.597.
    Told ``upper``, an upper jaw alone is numbered in it (0.332 -> 0.332, 0.749 -> 0.873)."""
    labels = sts_0001_labels if patient == "Validation_0001" else sts_labels
    truth, spacing = corrected_canonical(labels, 3 if patient == "Validation_0001" else 2)  # 0.75 and 0.6 mm
    steps = [{"name": "teeth_from_boundary", "occlusal_share": 0.25, "arch_split": 1.4}]
    for jaw, quadrants in (("lower", (3, 4)), ("upper", (1, 2))):
        one = np.where(np.isin(truth // 10, quadrants), truth, 0)
        tooth = (one > 0).astype(np.uint8)
        unsaid = sts2024_case(one, apply_steps(tooth, spacing, steps))["instance_dsc"]
        told = apply_steps(tooth, spacing, steps, jaws_in_view=jaw)
        assert set(np.unique(told[told > 0]) // 10) <= set(quadrants)
        scores = sts2024_case(one, told)
        assert scores["instance_dsc"] >= unsaid - 1e-9, (jaw, scores, unsaid)
        if jaw == "lower":  # the case the checks miss: a clear gain
            assert scores["instance_dsc"] > unsaid + 0.1 and scores["instance_dsc"] > 0.55, (scores, unsaid)
        # no tooth cut in two: as many pieces as the truth has teeth of any size the step keeps
        assert len(np.unique(told[told > 0])) <= len(np.unique(one[one > 0]))


def test_both_jaws_named_by_the_user_keep_the_cut_the_roots_would_undo(sts_labels):
    """The user's word outranks the roots check: a true upper jaw alone, said to hold both jaws, is cut along
    the surface through its teeth (the check would have kept them whole, as without the option)."""
    truth, spacing = corrected_canonical(sts_labels, 3)
    upper = ((truth > 0) & (truth < 30)).astype(np.uint8)
    steps = [{"name": "teeth_from_boundary", "occlusal_share": 0.25}]
    unsaid = apply_steps(upper, spacing, steps)
    np.testing.assert_array_equal(unsaid, apply_steps(upper, spacing, [{"name": "teeth_from_boundary"}]))
    told = apply_steps(upper, spacing, steps, jaws_in_view="both")
    assert (told // 10 >= 3).any() and not np.array_equal(told, unsaid)


def test_a_tooth_jaw_map_of_one_named_jaw_is_numbered_in_it():
    """teeth_from_jaws: the network's upper/lower classes are both the named jaw's teeth."""
    from toothseg.core.labels import LOWER_TOOTH, UPPER_TOOTH

    truth = _arch({14})
    lower = np.where(truth.array >= 30, truth.array, 0)
    jaw_map = np.where(lower > 0, LOWER_TOOTH, 0).astype(np.uint8)
    jaw_map[(lower // 10 == 3) & (lower % 10 <= 2)] = UPPER_TOOTH  # the network's mistake on the incisors
    told = apply_steps(jaw_map, truth.spacing_zyx, [{"name": "teeth_from_jaws"}], jaws_in_view="lower")
    assert told.any() and set(np.unique(told[told > 0]) // 10) <= {3, 4}
    unsaid = apply_steps(jaw_map, truth.spacing_zyx, [{"name": "teeth_from_jaws"}])
    assert set(np.unique(unsaid[unsaid > 0]) // 10) & {1, 2}  # without the user's word they go to the upper jaw


def test_jaws_in_view_must_be_one_of_three():
    with pytest.raises(InputError, match="jaws in view"):
        apply_steps(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0), [{"name": "teeth_from_boundary"}],
                    jaws_in_view="left")
    assert step_problems([{"name": "teeth_from_boundary", "jaws_in_view": 1}])  # no option a card can set


def test_only_a_clear_majority_of_roots_against_their_sides_undoes_the_cut(monkeypatch):
    """The pieces below the surface say whether it cut an upper jaw alone: 10 of them pointing their roots
    up against none (a true upper jaw alone cut in two) and 3 against none undo the cut; 6 up and 5 down, a
    network's noise, keep it. Pieces above the surface pointing down are not counted: on the bundled
    binary model's maps of two synthetic scans with both jaws, 3 and 2 of them did, and undoing the cut
    numbered every tooth in the other jaw."""
    from toothseg.core.postprocessing import occlusion

    instances = np.zeros((4, 4, 40), np.int32)
    for value in range(1, 13):
        instances[0, 0, 3 * value] = value

    def verdict(against: int, agreeing: int, side: str = "lower") -> bool:
        jaws = {v: side for v in range(1, against + agreeing + 1)}
        sign = 1.0 if side == "lower" else -1.0  # against the side: up below the surface, down above it
        directions = {v: np.array([0.0, 0.0, sign if v <= against else -sign]) for v in jaws}
        monkeypatch.setattr(occlusion, "_root_direction", lambda canonical, value, box: directions[value])
        return occlusion.roots_contradict_the_sides(instances, jaws, (1.0, 1.0, 1.0))

    assert not verdict(6, 5)
    assert not verdict(4, 3)
    assert verdict(10, 0)
    assert verdict(3, 0)
    assert verdict(4, 2)
    assert not verdict(3, 0, side="upper") and not verdict(11, 0, side="upper")
    assert not verdict(2, 0)  # too few to say
