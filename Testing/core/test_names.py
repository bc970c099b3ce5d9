"""Names that become file names: the plain-name rule and names made from free text (Slicer node names)."""

from __future__ import annotations

import pytest

from toothseg.core.names import is_plain_name, is_plain_relative_path, plain_name_from


@pytest.mark.parametrize("text, expected", [
    ("CBCT 2024/03 (1)", "CBCT_2024_03_1"),  # '/' would point into a folder that does not exist
    ("3: CBCT Head teeth", "3_CBCT_Head_teeth"),  # ':' on Windows writes into a hidden stream of file '3'
    ("..\\..\\evil", "evil"),
    ("  .hidden  ", "hidden"),
    ("Zahnärztliche Aufnahme", "Zahn_rztliche_Aufnahme"),
    ("///", "segmentation"),
    ("x" * 300, "x" * 128),
])
def test_plain_names_from_free_text(text, expected):
    name = plain_name_from(text, "segmentation")
    assert name == expected and is_plain_name(name)


def test_the_plain_name_rule():
    assert is_plain_name("Validation_0002") and is_plain_name("v1.2-b")
    for bad in ("", ".x", "../x", "a/b", "a b", "x" * 129, None, 3):
        assert not is_plain_name(bad)
    assert is_plain_relative_path("coarse/fold_0")
    for bad in ("", "/abs", "a/../b", "a//b", "a\\b", "./a"):
        assert not is_plain_relative_path(bad)
