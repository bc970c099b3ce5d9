"""Pieces off the dentition: bone up the skull that a tooth network took for teeth is dropped, the teeth
of a whole real dentition never are, and the scan's intensities reach the step through the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from toothseg.core.postprocessing import apply_steps, step_problems
from toothseg.core.postprocessing.dentition import pieces_off_the_dentition
from toothseg.core.postprocessing.instances import INTERIOR, separate_instances
from toothseg.core.postprocessing import steps as step_registry
from toothseg.core.postprocessing.steps import register_step

from ..conftest import corrected_canonical

SPACING = (1.0, 1.0, 1.0)


def _head() -> tuple[np.ndarray, np.ndarray, set[int], set[int]]:
    """Two jaws of 8 tooth-sized blocks along an arch (enamel-bright) and, 90 mm above them, a 'skull' of
    28 blocks of bone (dimmer): more pieces than teeth, as after the split of a skull slab. Instances, image,
    the teeth's values and the skull's values."""
    instances = np.zeros((130, 120, 160), np.int32)
    image = np.full(instances.shape, 0.0, np.float32)
    teeth, skull = set(), set()
    value = 0
    for z in (10, 32):  # lower and upper teeth, an arch of radius 25 mm around (y=60, x=80)
        for angle in np.linspace(-1.2, 1.2, 8):
            y, x = int(60 - 25 * np.cos(angle)), int(80 + 25 * np.sin(angle))
            value += 1
            instances[z:z + 10, y - 3:y + 3, x - 3:x + 3] = value
            image[z:z + 10, y - 3:y + 3, x - 3:x + 3] = 2500.0
            teeth.add(value)
    for y in (20, 32):  # a band of bone 90 mm up, 140 mm wide
        for index in range(14):
            x = 6 + 10 * index
            value += 1
            instances[105:113, y:y + 8, x:x + 7] = value
            image[105:113, y:y + 8, x:x + 7] = 1600.0
            skull.add(value)
    return instances, image, teeth, skull


def test_bone_up_the_skull_is_dropped_even_where_it_has_more_pieces_than_the_teeth():
    instances, image, teeth, skull = _head()
    assert set(pieces_off_the_dentition(instances, SPACING, image)) == skull
    # the intensity unit does not matter: the comparison is between pieces of one scan
    assert set(pieces_off_the_dentition(instances, SPACING, image * 0.01 - 7.0)) == skull
    # counting pieces alone would keep the skull (what was tried first): the brightness decides
    assert teeth <= set(pieces_off_the_dentition(instances, SPACING, np.ones_like(image)))


def test_without_intensities_or_with_every_piece_together_nothing_is_dropped():
    instances, image, teeth, _ = _head()
    assert pieces_off_the_dentition(instances, SPACING, None) == []
    cropped = np.where(np.isin(instances, list(teeth)), instances, 0)  # a scan cropped to the teeth
    assert pieces_off_the_dentition(cropped, SPACING, image) == []


@pytest.mark.parametrize("scale", [1.0, 1.3])
def test_no_tooth_of_a_real_dentition_is_dropped(sts_labels, sts_0001_labels, scale):
    """Both real STS-2024 dentitions (30 and 20 teeth, their centroids within 41 and 32 mm of their middle),
    also 1.3x larger, whatever brightness each tooth has."""
    rng = np.random.default_rng(0)
    for labels in (sts_labels, sts_0001_labels):
        truth, spacing = corrected_canonical(labels, 2)
        spacing = tuple(scale * s for s in spacing)
        brightness = rng.uniform(1000, 3000, int(truth.max()) + 1)
        assert pieces_off_the_dentition(truth.astype(np.int32), spacing, brightness[truth]) == []


def test_the_step_drops_the_skull_with_the_image_and_keeps_it_without():
    """teeth_from_boundary receives the image from apply_steps (no card option), and numbers only the arch."""
    instances, image, _, _ = _head()
    classes = np.where(instances > 0, INTERIOR, 0).astype(np.uint8)
    steps = [{"name": "teeth_from_boundary"}]
    with_image = apply_steps(classes, SPACING, steps, image=image)
    assert not with_image[100:].any() and len(np.unique(with_image[:50])) - 1 >= 12  # FDI-numbered teeth
    without = apply_steps(classes, SPACING, steps)
    assert without[100:].any()
    pieces = separate_instances(classes, SPACING)  # the step's own pieces: the skull's outnumber the teeth's
    assert len(np.unique(pieces[100:])) > len(np.unique(pieces[:50])) > 12
    off = apply_steps(classes, SPACING, [{"name": "teeth_from_boundary", "dentition_mm": 0}], image=image)
    assert off[100:].any()  # 0 turns it off


def test_a_card_cannot_set_the_image_and_the_radius_is_checked():
    assert any("unknown option 'image'" in p for p in step_problems([{"name": "teeth_from_boundary", "image": 1}]))
    assert any("dentition_mm must be 0 (off) or at least 30" in p
               for p in step_problems([{"name": "teeth_from_boundary", "dentition_mm": 10}]))
    assert step_problems([{"name": "teeth_from_jaws", "dentition_mm": 60}]) == []


def test_the_predictor_hands_the_scan_on_the_labels_grid_to_the_steps():
    from toothseg.core.inference import InferenceOptions, Predictor

    from .inference.helpers import IntensityToClass, loaded
    from .inference.test_predictor import teeth_as_intensity
    from ..conftest import oblique_direction

    seen = []

    @register_step("_test_record_image")
    def record(labels, spacing_zyx, image=None):
        seen.append(None if image is None else (image.shape == labels.shape, float(image.max())))
        return labels

    try:
        image, _ = teeth_as_intensity(oblique_direction())
        model = loaded(IntensityToClass(3), [0, 11, 21])
        Predictor(model, InferenceOptions(tta=False, postprocessing=[{"name": "_test_record_image"}])).predict(image)
    finally:
        for registry in (step_registry._STEPS, step_registry._MAXIMA, step_registry._OFF_OR_AT_LEAST):
            registry.pop("_test_record_image", None)
    assert seen == [(True, float(image.array.max()))]
