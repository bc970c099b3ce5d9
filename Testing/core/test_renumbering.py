"""Renumber tooth: the plan the Slicer module applies (swap, no number used twice, non-teeth flagged)."""

from __future__ import annotations

import pytest

from toothseg.core import LabelError, LabelTable
from toothseg.core.renumbering import renumbering_plan, tooth_number_of_segment

TABLE = LabelTable.fdi(deciduous=True)


def names(*fdis: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {f"s{fdi}": TABLE[fdi].segment_name for fdi in fdis} | (extra or {})


def test_tooth_number_is_read_only_from_tooth_segment_names():
    assert tooth_number_of_segment("Tooth 36 (lower left first molar)") == 36
    assert tooth_number_of_segment("Tooth 36") == 36
    assert tooth_number_of_segment(" Tooth 85 (deciduous lower right second molar) ") == 85
    for other in ("Pulp 36 (lower left first molar)", "Tooth 19", "Tooth 3", "Tooth 36x", "Mandible",
                  "Tooth 11 (was Tooth 21 (upper left central incisor))x", "tooth 36", ""):
        assert tooth_number_of_segment(other) is None, other


def test_renumbering_to_a_free_number_changes_only_that_segment():
    plan = renumbering_plan(names(11, 36), "s36", 37)
    assert list(plan) == ["s36"]
    assert plan["s36"].segment_name == "Tooth 37 (lower left second molar)"
    assert plan["s36"].color == TABLE[37].color and plan["s36"].terminology == TABLE[37].terminology


def test_renumbering_to_a_taken_number_swaps_the_two_teeth():
    plan = renumbering_plan(names(11, 21, 36), "s11", 21)
    assert {sid: info.fdi for sid, info in plan.items()} == {"s11": 21, "s21": 11}
    # applied, no FDI number is used twice
    after = names(11, 21, 36) | {sid: info.segment_name for sid, info in plan.items()}
    numbers = [tooth_number_of_segment(n) for n in after.values()]
    assert sorted(numbers) == [11, 21, 36]


def test_a_segment_without_a_tooth_number_takes_the_number_and_the_holder_is_flagged():
    plan = renumbering_plan(names(21, extra={"mine": "Segment_1"}), "mine", 21)
    assert plan["mine"].fdi == 21
    assert plan["s21"] == "Tooth 21 (upper left central incisor) (was Tooth 21 (upper left central incisor))"
    assert tooth_number_of_segment(plan["s21"]) is None  # so the number is held once


def test_a_number_already_held_twice_is_not_handed_back_twice():
    segments = {"a": "Tooth 36", "b": "Tooth 36 (lower left first molar)", "c": "Tooth 46"}
    plan = renumbering_plan(segments, "c", 36)
    assert plan["c"].fdi == 36 and plan["a"].fdi == 46
    assert isinstance(plan["b"], str) and tooth_number_of_segment(plan["b"]) is None
    # renumbering a tooth to its own number only refreshes it, and flags a duplicate holder
    plan = renumbering_plan(segments, "a", 36)
    assert plan["a"].fdi == 36 and isinstance(plan["b"], str)


@pytest.mark.parametrize("number", [0, 10, 19, 49, 56, 100])
def test_a_number_that_is_no_fdi_tooth_is_refused(number):
    with pytest.raises(LabelError, match="not an FDI tooth number"):
        renumbering_plan(names(11), "s11", number)


def test_an_unknown_segment_is_refused():
    with pytest.raises(LabelError, match="select a tooth segment"):
        renumbering_plan(names(11), "nope", 21)
