"""Renumber tooth: the plan the Slicer module applies (swap, no number used twice, non-teeth flagged),
and what the ``.seg.nrrd`` reader makes of a renumbered segmentation."""

from __future__ import annotations

import numpy as np
import pytest
import slicerio

from toothseg.core import LabelError, LabelTable
from toothseg.core.io import read_segmentation
from toothseg.core.labels import fdi_of_segment_name
from toothseg.core.renumbering import UNNUMBERED_PREFIX, renumbering_plan

TABLE = LabelTable.fdi(deciduous=True)


def names(*fdis: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {f"s{fdi}": TABLE[fdi].segment_name for fdi in fdis} | (extra or {})


def test_tooth_numbers_are_read_only_from_tooth_segment_names():
    assert fdi_of_segment_name("Tooth 36 (lower left first molar)") == 36
    assert fdi_of_segment_name("Tooth 36") == 36
    assert fdi_of_segment_name("tooth 36") == fdi_of_segment_name("FDI 36 crown") == 36
    assert fdi_of_segment_name(" Tooth 85 (deciduous lower right second molar) ") == 85
    for other in ("Pulp 36 (lower left first molar)", "Tooth 19", "Tooth 3", "Tooth 36x", "Mandible",
                  f"{UNNUMBERED_PREFIX} (was Tooth 21 (upper left central incisor))", "Segment_1", ""):
        assert fdi_of_segment_name(other) is None, other


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
    assert sorted(fdi_of_segment_name(n) for n in after.values()) == [11, 21, 36]


def test_a_segment_without_a_tooth_number_takes_the_number_and_the_holder_is_flagged():
    plan = renumbering_plan(names(21, extra={"mine": "Segment_1"}), "mine", 21)
    assert plan["mine"].fdi == 21
    assert plan["s21"] == f"{UNNUMBERED_PREFIX} (was Tooth 21 (upper left central incisor))"
    assert fdi_of_segment_name(plan["s21"]) is None  # so the number is held once


def test_a_number_already_held_twice_is_not_handed_back_twice():
    segments = {"a": "Tooth 36", "b": "Tooth 36 (lower left first molar)", "c": "Tooth 46"}
    plan = renumbering_plan(segments, "c", 36)
    assert plan["c"].fdi == 36 and plan["a"].fdi == 46
    assert isinstance(plan["b"], str) and fdi_of_segment_name(plan["b"]) is None
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


def _renumbered_file(tmp_path, teeth_volume, names_before: dict[int, str], target: int, number: int):
    """The two teeth (11, 21) of ``teeth_volume`` as ToothSeg writes them (stored values 11 and 21),
    segments named as ``names_before`` says (a name that is no tooth loses its key, as a user's own
    segment has none), then renumbered as the Slicer module does it: ``target``'s segment gets
    ``number``; names and label keys follow the plan, a flagged tooth loses its key."""
    from toothseg.core.io import write_segmentation

    path = write_segmentation(teeth_volume, LabelTable.fdi(), tmp_path / "teeth.seg.nrrd")
    data = slicerio.read_segmentation(str(path))
    by_value = {int(segment["labelValue"]): segment for segment in data["segments"]}
    for value, name in names_before.items():
        by_value[value]["name"] = name
        if fdi_of_segment_name(name) is None:
            by_value[value]["tags"].pop("ToothSeg.LabelKey")
    plan = renumbering_plan({str(v): seg["name"] for v, seg in by_value.items()}, str(target), number)
    for value, change in plan.items():
        segment = by_value[int(value)]
        if isinstance(change, str):
            segment["name"] = change
            segment["tags"].pop("ToothSeg.LabelKey", None)
        else:
            segment["name"], segment["tags"]["ToothSeg.LabelKey"] = change.segment_name, change.key
    slicerio.write_segmentation(str(tmp_path / "renumbered.seg.nrrd"), data)
    return read_segmentation(tmp_path / "renumbered.seg.nrrd")


def test_a_swapped_pair_reads_back_swapped(tmp_path, teeth_volume):
    result = _renumbered_file(tmp_path, teeth_volume, {}, target=11, number=21)
    swapped = np.where(teeth_volume.array == 11, 21, np.where(teeth_volume.array == 21, 11, 0))
    np.testing.assert_array_equal(result.labels.array, swapped)


def test_a_flagged_tooth_reads_back_as_no_tooth_and_the_new_tooth_keeps_its_voxels(tmp_path, teeth_volume):
    """The user's own segment (stored value 11, renamed "Segment_1") becomes tooth 21; the tooth that was
    21 must not come back as 21 (its stored value, and before the fix its key) nor as any standard class."""
    result = _renumbered_file(tmp_path, teeth_volume, {11: "Segment_1"}, target=11, number=21)
    array = result.labels.array
    assert np.array_equal(array == 21, teeth_volume.array == 11)
    flagged = set(np.unique(array[teeth_volume.array == 21]).tolist())
    assert len(flagged) == 1
    value = flagged.pop()
    assert value not in LabelTable.fdi(deciduous=True, pulp=True, jaws=True)
    assert result.table[value].name.startswith(UNNUMBERED_PREFIX)
