"""LabelTable: FDI names, terminology, colours and the left/right swap."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import LabelError, LabelTable, fdi_name, is_fdi_tooth


def test_fdi_names():
    assert fdi_name(11) == "upper right central incisor"
    assert fdi_name(23) == "upper left canine"
    assert fdi_name(36) == "lower left first molar"
    assert fdi_name(48) == "lower right third molar"
    assert fdi_name(85) == "deciduous lower right second molar"
    assert fdi_name(64) == "deciduous upper left first molar"
    for bad in (10, 19, 49, 56, 90, 0, 5):
        assert not is_fdi_tooth(bad)
        with pytest.raises(LabelError):
            fdi_name(bad)


def test_default_table_has_the_permanent_teeth_with_snomed_codes():
    table = LabelTable.fdi()
    assert table.values == [q * 10 + p for q in (1, 2, 3, 4) for p in range(1, 9)]
    codes = {info.terminology.type.value for info in table}
    assert len(codes) == 32  # one distinct SNOMED CT concept per tooth
    assert table[11].terminology.type.value == "422653006"
    assert table[11].terminology.type.meaning == "Permanent maxillary right central incisor tooth"
    assert table[38].terminology.type.value == "74344005"
    assert table[38].terminology.type.meaning == "Mandibular left third molar tooth"
    assert all(info.terminology.category.value == "123037004" for info in table)


def test_full_table_sizes_and_segment_names():
    table = LabelTable.fdi(deciduous=True, pulp=True, jaws=True)
    assert len(table) == 52 + 52 + 4
    assert table[11].segment_name == "Tooth 11 (upper right central incisor)"
    assert table[111].segment_name == "Pulp 11 (upper right central incisor)"
    assert table[2].segment_name == "Mandible"
    assert table[75].terminology.type.value == "49330006"
    assert table[11].file_stem == "11_upper_right_central_incisor"
    assert table[111].terminology is None  # no standard code: none is invented
    # a segment named at length in Slicer (any script) still gives a file name within the 255-byte limit
    long = LabelTable.custom({5: "牙齿" * 200, 6: "Crown / root: " * 40})
    for value in (5, 6):
        stem = long[value].file_stem
        assert stem.startswith(f"{value}_") and len(stem.encode("utf-8")) <= 130 and "/" not in stem


def test_colours_are_distinct_and_valid():
    table = LabelTable.fdi(deciduous=True)
    colours = [info.color for info in table]
    assert all(0.0 <= c <= 1.0 for colour in colours for c in colour)
    assert len(set(colours)) == len(colours)
    for fdi in (11, 12, 21, 31, 41):
        assert table[fdi].color != table[table.swap_partner(fdi)].color


def test_left_right_swap_pairs():
    table = LabelTable.fdi(deciduous=True, pulp=True, jaws=True)
    expected = {11: 21, 18: 28, 36: 46, 47: 37, 55: 65, 71: 81, 111: 121, 146: 136, 3: 4, 4: 3, 1: 1, 2: 2}
    for a, b in expected.items():
        assert table.swap_partner(a) == b
    for value in table.values:  # an involution
        assert table.swap_partner(table.swap_partner(value)) == value


def test_swap_array_and_flip_commute_with_anatomy():
    table = LabelTable.fdi()
    labels = np.array([[0, 11, 12, 21], [36, 46, 0, 48]], dtype=np.uint8)
    swapped = table.swap_left_right(labels)
    np.testing.assert_array_equal(swapped, [[0, 21, 22, 11], [46, 36, 0, 38]])
    assert swapped.dtype == labels.dtype
    np.testing.assert_array_equal(table.swap_left_right(swapped), labels)


def test_channel_permutation_for_mirrored_probabilities():
    table = LabelTable.fdi()
    classes = [0, 11, 21, 36, 46, 18]
    perm = table.channel_swap_permutation(classes)
    assert perm == [0, 2, 1, 4, 3, 5]  # 18's partner 28 is not an output channel: unchanged


def test_unknown_values_are_listed():
    table = LabelTable.fdi()
    with pytest.raises(LabelError, match="2 value.*: 71, 99"):
        table.check_array(np.array([0, 11, 71, 99, 11]))
    assert table.check_array(np.array([[0, 11], [21, 0]])) == [11, 21]


def test_json_round_trip():
    table = LabelTable.fdi(pulp=True, jaws=True)
    back = LabelTable.from_json(table.to_json())
    assert back.values == table.values
    assert back.swap_pairs == table.swap_pairs
    assert back[11] == table[11] or back[11].color == pytest.approx(table[11].color, abs=1e-4)
    assert back[11].terminology == table[11].terminology
    with pytest.raises(Exception, match="JSON"):
        LabelTable.from_json("{not json")


def test_custom_table_for_binary_masks():
    table = LabelTable.custom({1: "tooth"}, name="binary")
    assert table[1].segment_name == "Tooth" and table[1].terminology is None
    with pytest.raises(LabelError):
        LabelTable.custom({0: "background"})


def test_jaw_classes_from_fdi_numbers_survive_a_left_right_mirror():
    """Upper teeth (quadrants 1, 2, 5, 6) -> 1, lower (3, 4, 7, 8) -> 2; background and "ignore" stay; a
    mirror swaps 1x<->2x and 3x<->4x, which keeps every jaw; a map without FDI numbers is refused."""
    from toothseg.core import InputError
    from toothseg.core.labels import LOWER_TOOTH, TOOTH_JAW, UPPER_TOOTH, jaw_classes, label_table_named

    labels = np.array([[0, 11, 18, 21, 28, 31, 38, 41, 48, 51, 65, 71, 85, 255]], np.uint8)
    classes = jaw_classes(labels, ignore=255)
    expected = [0] + [UPPER_TOOTH] * 4 + [LOWER_TOOTH] * 4 + [UPPER_TOOTH] * 2 + [LOWER_TOOTH] * 2 + [255]
    assert classes.tolist() == [expected]
    mirrored = LabelTable.fdi(deciduous=True).swap_left_right(labels)
    assert not np.array_equal(mirrored, labels) and np.array_equal(jaw_classes(mirrored, ignore=255), classes)
    table = label_table_named(TOOTH_JAW)
    assert table.name == TOOTH_JAW and table.values == [UPPER_TOOTH, LOWER_TOOTH]
    for bad in (1, 19, 49, 56, 99):  # a binary or jaw-level map, a ninth tooth, a deciduous sixth
        with pytest.raises(InputError, match="FDI"):
            jaw_classes(np.array([0, bad]))
