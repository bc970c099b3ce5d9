"""The instance-first design's separation: interior/boundary targets from tooth maps, touching teeth split
at their boundary, every tooth numbered from the arch, and a model card whose result is FDI teeth."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core import InputError, LabelTable
from toothseg.core.metrics import best_instance_dice, numbered_right_share
from toothseg.core.labels import TOOTH_BOUNDARY, TOOTH_CONTACT, TOOTH_TYPE_BOUNDARY, label_table_named
from toothseg.core.models.card import ModelCard
from toothseg.core.postprocessing import apply_steps
from toothseg.core.postprocessing.instances import (BOUNDARY, CONTACT_WIDTH_MM, INTERIOR, boundary_classes,
                                                    instance_classes, separate_instances,
                                                    tooth_type_class, type_votes)

from ..conftest import corrected_canonical
from .test_arch_numbering import _arch


def _touching_blocks() -> np.ndarray:
    labels = np.zeros((12, 12, 20), np.uint8)
    labels[2:10, 2:10, 2:10] = 11
    labels[2:10, 2:10, 10:18] = 21  # face to face with tooth 11
    return labels


def test_boundary_runs_between_touching_teeth_and_around_them():
    classes = boundary_classes(_touching_blocks(), (1.0, 1.0, 1.0), width_mm=1.0)
    assert set(np.unique(classes)) == {0, INTERIOR, BOUNDARY}
    assert (classes[5, 5, 9], classes[5, 5, 10]) == (BOUNDARY, BOUNDARY)  # both sides of the contact
    assert classes[5, 5, 2] == BOUNDARY and classes[5, 5, 5] == INTERIOR
    # interior of each block: 6^3 minus the contact layer
    assert (classes == INTERIOR).sum() == 2 * 6 * 6 * 6
    # the same teeth as one value (a binary map): no boundary at the contact, so they could not be split
    merged = boundary_classes((_touching_blocks() > 0).astype(np.uint8), (1.0, 1.0, 1.0), width_mm=1.0)
    assert merged[5, 5, 9] == INTERIOR and merged[5, 5, 10] == INTERIOR


def test_boundary_width_is_in_millimetres_and_ignore_voxels_draw_none():
    labels = _touching_blocks()
    wide = boundary_classes(labels, (0.5, 0.5, 0.5), width_mm=1.0)  # two voxels at 0.5 mm
    assert wide[5, 5, 8] == BOUNDARY and wide[5, 5, 7] == INTERIOR
    unknown = labels.copy()
    unknown[:, :, 18:] = 255  # "don't know" beside tooth 21: no boundary is drawn against it
    classes = boundary_classes(unknown, (1.0, 1.0, 1.0), width_mm=1.0)
    assert classes[5, 5, 17] == INTERIOR and classes[5, 5, 18] == 255
    with pytest.raises(InputError, match="spacing"):
        boundary_classes(labels, (1.0, 1.0), width_mm=1.0)


def test_contact_classes_mark_only_where_a_tooth_meets_another_tooth():
    """``tooth-contact``: the boundary against another tooth only; a tooth's surface against background stays
    tooth (1), so a lone tooth is all class 1, as in a binary map."""
    labels = _touching_blocks()
    labels[2:6, 2:6, 18] = 0
    lone = np.zeros((12, 12, 8), np.uint8)
    lone[3:9, 3:9, 1:7] = 31
    labels = np.concatenate([labels, lone], axis=2)
    classes = boundary_classes(labels, (1.0, 1.0, 1.0), width_mm=1.0, against_background=False)
    assert (classes[5, 5, 9], classes[5, 5, 10]) == (BOUNDARY, BOUNDARY)  # both sides of the contact
    assert classes[5, 5, 2] == INTERIOR and classes[2, 5, 5] == INTERIOR  # surfaces against background
    assert (classes[labels == 31] == INTERIOR).all()
    assert (classes == BOUNDARY).sum() == 2 * 8 * 8  # one layer on each side of the contact, nothing else
    assert ((classes > 0) == (labels > 0)).all()
    np.testing.assert_array_equal(instance_classes(labels, (1.2,) * 3, TOOTH_CONTACT),
                                  boundary_classes(labels, (1.2,) * 3, CONTACT_WIDTH_MM, against_background=False))
    np.testing.assert_array_equal(instance_classes(labels, (1.0,) * 3, TOOTH_BOUNDARY),
                                  boundary_classes(labels, (1.0,) * 3))
    with pytest.raises(InputError, match="not an instance table"):
        instance_classes(labels, (1.0,) * 3, "binary")


@pytest.mark.parametrize("name", ["Validation_0001", "Validation_0002"])
def test_contact_targets_of_both_real_dentitions_leave_one_seed_per_tooth(name, sts_labels, sts_0001_labels):
    """At the 1.2 mm training grid the contact class (1.8 mm) marks a minority of the tooth voxels and every
    real tooth keeps one seed: the targets, turned back into instances, are the teeth."""
    from scipy import ndimage

    source = sts_labels if name == "Validation_0002" else sts_0001_labels
    coarse = ndimage.zoom(source.array, [s / 1.2 for s in source.spacing_zyx], order=0)
    classes = instance_classes(coarse, (1.2,) * 3, TOOTH_CONTACT)
    share = (classes == BOUNDARY).sum() / (classes > 0).sum()
    assert 0.03 < share < 0.2, share
    teeth = [v for v in np.unique(coarse) if v and (coarse == v).sum() * 1.2 ** 3 > 50]
    instances = separate_instances(classes, (1.2,) * 3)
    assert instances.max() == len(teeth)
    assert best_instance_dice(np.where(np.isin(coarse, teeth), coarse, 0), instances) > 0.97


def test_touching_teeth_come_back_as_separate_instances():
    labels = _touching_blocks()
    instances = separate_instances(boundary_classes(labels, (1.0, 1.0, 1.0), width_mm=1.0), (1.0, 1.0, 1.0),
                                   min_seed_mm3=1.0)
    assert instances.max() == 2
    for value in (11, 21):
        found = np.unique(instances[labels == value])
        assert found.size == 1 and found[0] > 0  # every voxel of the tooth, boundary too, in one instance
        assert ((instances == found[0]) == (labels == value)).all()
    # seeds under min_seed_mm3 are dropped, and with them their boundary
    assert separate_instances(boundary_classes(labels, (1.0,) * 3, 1.0), (1.0,) * 3, min_seed_mm3=500).max() == 0


def test_an_ideal_arch_through_the_step_gives_every_fdi_number_back():
    truth = _arch({14, 36})
    classes = boundary_classes(truth.array, truth.spacing_zyx, width_mm=0.5)
    numbered = apply_steps(classes, truth.spacing_zyx, [{"name": "teeth_from_boundary"}])
    values = sorted(int(v) for v in np.unique(truth.array) if v)
    assert sorted(int(v) for v in np.unique(numbered) if v) == values
    for value in values:
        tooth = truth.array == value
        dice = 2 * (tooth & (numbered == value)).sum() / (tooth.sum() + (numbered == value).sum())
        assert dice > 0.95, (value, dice)


def test_the_real_bundled_dentition_at_training_spacing_is_separated_and_numbered(sts_labels):
    """Validation_0002's 30 teeth (sides corrected, canonical axes, 0.9 mm): the targets a network learns,
    turned back into teeth by the step, give ≥ 26 teeth their true number, as the arch numbering alone does."""
    coarse, spacing = corrected_canonical(sts_labels, 3)
    numbered = apply_steps(boundary_classes(coarse, spacing), spacing, [{"name": "teeth_from_boundary"}])
    right = round(numbered_right_share(coarse, numbered) * (len(np.unique(coarse)) - 1))
    assert right >= 26, right


@pytest.mark.parametrize("scale", [1.0, 1.15])
def test_teeth_merged_where_the_boundary_was_missed_are_split_at_their_contacts(sts_labels, scale):
    """Validation_0002 at 0.9 mm as a network that never learnt the boundary would see it: every tooth
    interior, contacts included, one class. Without the split its 30 teeth come back as 3 instances; split
    at their necks they come back nearly whole. With the true boundary the split changes nothing, also
    with the teeth 1.5x larger in volume (``scale`` 1.15 per axis: molars over ``max_tooth_mm3``)."""
    truth, spacing = corrected_canonical(sts_labels, 3)
    spacing = tuple(scale * s for s in spacing)
    classes = boundary_classes(truth, spacing)
    missed = np.where(classes == BOUNDARY, INTERIOR, classes)
    merged = separate_instances(missed, spacing, max_tooth_mm3=0)
    split = separate_instances(missed, spacing)
    assert merged.max() <= 5 and best_instance_dice(truth, merged) < 0.3
    assert split.max() >= 25 and best_instance_dice(truth, split) > 0.9, best_instance_dice(truth, split)
    np.testing.assert_array_equal(separate_instances(classes, spacing), separate_instances(classes, spacing,
                                                                                             max_tooth_mm3=0))


def test_a_fine_map_is_split_on_a_coarser_grid_as_it_would_be_at_full_resolution(sts_labels, monkeypatch):
    """Under 0.5 mm the split runs on every n-th voxel and draws the pieces at full resolution (at 0.25 mm
    the erosion at full resolution took 58 of a full-field scan's 111 s). One side of Validation_0002 with no
    boundary, at 0.225 mm: as many teeth and the same instance Dice as the split done voxel by voxel."""
    from scipy import ndimage

    from toothseg.core.postprocessing import instances

    truth, spacing = corrected_canonical(sts_labels, 3)
    truth = truth[ndimage.find_objects((truth > 0).astype(np.uint8))[0]]
    truth = truth[:, :, : truth.shape[2] // 2]  # one side of both jaws
    classes = boundary_classes(truth, spacing)
    missed = np.where(classes == BOUNDARY, INTERIOR, classes)
    fine_truth, fine = (a.repeat(4, 0).repeat(4, 1).repeat(4, 2) for a in (truth, missed))
    fine_spacing = tuple(s / 4 for s in spacing)  # 0.225 mm
    coarse_grid = separate_instances(fine, fine_spacing)
    monkeypatch.setattr(instances, "_SPLIT_GRID_MM", 0.0)  # voxel by voxel
    full_grid = separate_instances(fine, fine_spacing)
    assert separate_instances(fine, fine_spacing, max_tooth_mm3=0).max() <= 3  # merged without the split
    assert coarse_grid.max() == full_grid.max() >= len(np.unique(truth)) - 4
    assert best_instance_dice(fine_truth, coarse_grid) == pytest.approx(best_instance_dice(fine_truth, full_grid),
                                                                        abs=0.01)
    assert best_instance_dice(fine_truth, coarse_grid) > 0.8


def test_one_large_tooth_is_never_split():
    """A seed over ``max_tooth_mm3`` with no neck (a 12 x 12 x 16 mm block, 2300 mm³) stays one tooth."""
    classes = np.zeros((16, 16, 20), np.uint8)
    classes[2:14, 2:14, 2:18] = INTERIOR
    assert separate_instances(classes, (1.0,) * 3, max_tooth_mm3=800).max() == 1
    # two such blocks joined by a 2 x 2 mm neck come apart there
    classes = np.zeros((16, 16, 44), np.uint8)
    classes[2:14, 2:14, 2:20] = INTERIOR
    classes[2:14, 2:14, 24:42] = INTERIOR
    classes[7:9, 7:9, 20:24] = INTERIOR
    instances = separate_instances(classes, (1.0,) * 3, max_tooth_mm3=800)
    assert instances.max() == 2 and len(set(np.unique(instances[:, :, :20])) - {0}) == 1
    assert separate_instances(classes, (1.0,) * 3, max_tooth_mm3=0).max() == 1


def test_upper_and_lower_crowns_joined_across_the_occlusal_plane_come_apart_by_jaw():
    """An arch of crowns only (roots cut 7 mm from the occlusal plane), upper and lower crowns touching, as a
    coarse network draws them: as one tooth class, every upper crown and the lower one below it are one
    piece and its crown-to-root direction is no cue (instance Dice under 0.3); as upper/lower tooth classes
    (``teeth_from_jaws``) each jaw is separated and numbered on its own (instance Dice over 0.8)."""
    from toothseg.core.labels import jaw_classes
    from toothseg.core.metrics.protocols import sts2024_case

    truth = _arch({14, 36})
    height = np.arange(truth.array.shape[0]) * truth.spacing_zyx[0] + truth.origin[2]  # mm, occlusal plane at 0
    crowns = np.where(np.abs(height)[:, None, None] <= 7, truth.array, 0)
    spacing = truth.spacing_zyx
    one_class = apply_steps((crowns > 0).astype(np.uint8), spacing, [{"name": "teeth_from_boundary"}])
    by_jaw = apply_steps(jaw_classes(crowns), spacing, [{"name": "teeth_from_jaws"}])
    assert sts2024_case(crowns, one_class)["instance_dsc"] < 0.3
    scores = sts2024_case(crowns, by_jaw)
    assert scores["instance_dsc"] > 0.8 and scores["ia"] > 0.8, scores
    with pytest.raises(InputError, match="2D"):
        apply_steps(np.ones((1, 8, 8), np.uint8), (1.0, 1.0, 1.0), [{"name": "teeth_from_jaws"}])


def test_the_step_refuses_2d_maps():
    with pytest.raises(InputError, match="2D"):
        apply_steps(np.ones((1, 8, 8), np.uint8), (1.0, 1.0, 1.0), [{"name": "teeth_from_boundary"}])


def test_a_card_whose_result_is_fdi_teeth():
    table = label_table_named(TOOTH_BOUNDARY)
    card = ModelCard(id="inst", architecture="unet3d", kwargs={}, spatial_dims=3, label_table=table,
                     class_values=[0, 1, 2], postprocessing=[{"name": "teeth_from_boundary"}],
                     output_label_table=LabelTable.fdi())
    again = ModelCard.from_json(card.to_json())
    assert again.output_table.name == LabelTable.fdi().name and 36 in again.output_table
    assert again.label_table.name == TOOTH_BOUNDARY
    plain = ModelCard(id="plain", architecture="unet3d", kwargs={}, spatial_dims=3, label_table=table,
                      class_values=[0, 1, 2])
    assert "output_label_table" not in plain.to_dict() and plain.output_table is plain.label_table
    with pytest.raises(InputError, match="output_label_table needs the post-processing"):
        ModelCard(id="bad", architecture="unet3d", kwargs={}, spatial_dims=3, label_table=table,
                  class_values=[0, 1, 2], output_label_table=LabelTable.fdi())




@pytest.mark.parametrize("table, classes, step, fits", [
    ("binary", [0, 1], "teeth_from_boundary", True),
    (TOOTH_TYPE_BOUNDARY, [0, 1, 2, 3, 4, 5], "teeth_from_boundary", True),
    ("fdi", [0, 11, 12, 21], "teeth_from_boundary", False),  # FDI classes would vanish from its result
    ("tooth-jaw", [0, 1, 2], "teeth_from_jaws", True),
    ("binary", [0, 1], "teeth_from_jaws", False),  # every tooth would become an upper one
    (TOOTH_BOUNDARY, [0, 1, 2], "teeth_from_jaws", False),
])
def test_a_card_whose_steps_read_classes_its_network_does_not_predict_is_refused(table, classes, step, fits):
    """Checked when the card is read, as a recipe's export is checked when the recipe is read: not a
    silently empty or all-upper result at the end of an inference."""
    def card() -> ModelCard:
        return ModelCard(id="steps", architecture="unet3d", kwargs={}, spatial_dims=3,
                         label_table=label_table_named(table), class_values=classes,
                         postprocessing=[{"name": step}], output_label_table=LabelTable.fdi())
    if fits:
        assert card().postprocessing == [{"name": step}]
    else:
        with pytest.raises(InputError, match=f"{step} reads"):
            card()

def test_typed_targets_paint_each_interior_with_its_tooth_type():
    labels = _touching_blocks()
    labels[labels == 11], labels[labels == 21] = 13, 36  # a canine touching a molar
    typed = boundary_classes(labels, (1.0,) * 3, width_mm=1.0, typed=True)
    plain = boundary_classes(labels, (1.0,) * 3, width_mm=1.0)
    assert typed[5, 5, 5] == tooth_type_class(13) == 3 and typed[5, 5, 14] == tooth_type_class(36) == 5
    np.testing.assert_array_equal(typed == BOUNDARY, plain == BOUNDARY)  # the types change the interior only
    np.testing.assert_array_equal(separate_instances(typed, (1.0,) * 3), separate_instances(plain, (1.0,) * 3))
    votes = type_votes(typed, separate_instances(typed, (1.0,) * 3))
    assert sorted(int(np.argmax(v)) for v in votes.values()) == [1, 3]  # canine, molar
    assert type_votes(plain, separate_instances(plain, (1.0,) * 3)) == {}  # untyped: class 1 is not "incisor"
    assert [tooth_type_class(v) for v in (11, 12, 13, 14, 15, 16, 48, 55, 83, 9, 49)] == [1, 1, 3, 4, 4, 5, 5, 5, 3,
                                                                                          None, None]
    labels[0, 0, 0] = 7  # not a tooth number: no type
    with pytest.raises(InputError, match="FDI tooth numbers"):
        boundary_classes(labels, (1.0,) * 3, typed=True)
    assert label_table_named(TOOTH_TYPE_BOUNDARY).values == [1, 2, 3, 4, 5]


def test_tooth_types_number_an_arch_whose_gaps_have_closed():
    """First premolars extracted and the spaces closed (orthodontics): from the arch alone every tooth behind
    the gap moves one position forward; with the interior's type votes the premolar/molar groups hold."""
    truth = _arch({14, 24, 34, 44}, closed_gaps=True)
    values = [int(v) for v in np.unique(truth.array) if v]

    def share_right(typed: bool) -> float:
        classes = boundary_classes(truth.array, truth.spacing_zyx, width_mm=0.5, typed=typed)
        numbered = apply_steps(classes, truth.spacing_zyx, [{"name": "teeth_from_boundary"}])
        found = [np.unique(numbered[truth.array == v], return_counts=True) for v in values]
        return float(np.mean([f[np.argmax(c)] == v for (f, c), v in zip(found, values)]))

    geometry, with_types = share_right(False), share_right(True)
    assert geometry < 0.6 and with_types > 0.9, (geometry, with_types)
