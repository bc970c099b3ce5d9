"""Post-processing steps on hand-made arrays, and the FDI numbering checks."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import InputError, Volume
from toothseg.core.labels import LabelTable
from toothseg.core.postprocessing import apply_steps, check_numbering, postprocessing_steps


def test_registry():
    assert postprocessing_steps() == ["fill_holes", "largest_component", "merge_fragments", "remove_small",
                                      "teeth_from_boundary", "teeth_from_jaws"]
    with pytest.raises(InputError, match="unknown post-processing step"):
        apply_steps(np.zeros((2, 2, 2), np.uint8), (1, 1, 1), [{"name": "smooth"}])
    # steps given directly (predictor options) are checked as a card's are
    with pytest.raises(InputError, match=r"step 1 \(teeth_from_boundary\): type_weight must be a finite"):
        apply_steps(np.zeros((2, 2, 2), np.uint8), (1, 1, 1),
                    [{"name": "fill_holes"}, {"name": "teeth_from_boundary", "type_weight": -1.0}])


def test_remove_small_uses_millimetres():
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, :3, :3] = 11  # 9 pixels
    labels[0, 5, 5] = 11  # 1 pixel
    labels[0, 5, 0:2] = 21  # 2 pixels
    out = apply_steps(labels, (1.0, 0.5, 0.5), [{"name": "remove_small", "min_mm3": 0.6}])  # 0.25 mm² pixels
    assert out[0, 5, 5] == 0 and out[0, 0, 0] == 11 and (out[0, 5, 0:2] == 0).all()
    out = apply_steps(labels, (1.0, 0.5, 0.5), [{"name": "remove_small", "min_mm3": 0.4}])
    assert (out[0, 5, 0:2] == 21).all() and out[0, 5, 5] == 0


def test_largest_component_and_fill_holes():
    labels = np.zeros((5, 5, 9), np.uint8)
    labels[1:4, 1:4, 0:3] = 11
    labels[2, 2, 1] = 0  # enclosed hole
    labels[1:3, 1:3, 6:8] = 11  # second, smaller piece
    out = apply_steps(labels, (1, 1, 1), [{"name": "largest_component"}, {"name": "fill_holes"}])
    assert out[2, 2, 1] == 11 and not out[..., 6:].any()
    assert (out == 11).sum() == 27


def test_merge_fragments_gives_one_label_per_tooth():
    labels = np.zeros((4, 4, 12), np.uint8)
    labels[:, :, 0:6] = 11
    labels[:, :, 6:12] = 12
    labels[1:3, 1:3, 9:11] = 11  # a stray piece of 11 inside tooth 12
    out = apply_steps(labels, (1, 1, 1), [{"name": "merge_fragments"}])
    assert (out[:, :, 6:] == 12).all() and (out[:, :, :6] == 11).all()


def test_numbering_checks():
    spacing = (1.0, 1.0, 1.0)
    labels = np.zeros((20, 20, 40), np.uint8)
    labels[12:16, 5:8, 5:9] = 11  # upper (high z), right (low x in LPS)
    labels[12:16, 5:8, 30:34] = 21
    labels[3:7, 5:8, 5:9] = 41
    labels[3:7, 5:8, 30:34] = 31
    assert check_numbering(Volume(labels, spacing)) == []
    mirrored = labels[:, :, ::-1].copy()  # one position per side: no handedness, the LPS x test decides
    assert any(w.startswith("left/right numbering appears mirrored") and "too few teeth" in w
               for w in check_numbering(Volume(mirrored, spacing)))
    upside_down = labels[::-1].copy()
    assert any("upper/lower" in w for w in check_numbering(Volume(upside_down, spacing)))
    # with premolars too the handedness decides, whatever the head's pose: a mirrored numbering is named
    # as such even when the whole head is turned so that the patient's left lies at -x
    arch = labels.copy()
    arch[12:16, 11:14, 2:5] = 14
    arch[12:16, 11:14, 34:37] = 24
    assert check_numbering(Volume(arch, spacing)) == []
    turned = Volume(arch, spacing, direction=np.diag([-1.0, -1.0, 1.0]))  # rotated 180 degrees about z
    assert check_numbering(turned) == []
    numbers_mirrored = LabelTable.fdi().swap_left_right(arch)
    warnings = check_numbering(Volume(numbers_mirrored, spacing, direction=np.diag([-1.0, -1.0, 1.0])))
    # the head turned in the header puts the incisors behind the molars: the warning names that turn, which a
    # header flipped front to back alone would give as well
    assert any(w.startswith("left/right numbering looks mirrored") and "head is turned in the header" in w
               for w in warnings)
    twice = labels.copy()
    twice[12:16, 14:18, 15:19] = 11
    assert any("tooth 11 appears as 2 separate objects" in w for w in check_numbering(Volume(twice, spacing)))
