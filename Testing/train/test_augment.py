"""Augmentation: image and labels move together, a left-right flip swaps the FDI sides, and no flip may
teach a tooth the wrong number."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toothseg.core import InputError
from toothseg.core.labels import LabelTable
from toothseg.train.config import AugmentConfig
from toothseg.train.data.augment import check_extra_flips, intensity_augment, spatial_augment, strong_augment

NONE = dict(flip_lr=0.0, rotate_probability=0.0, scale_probability=0.0, elastic_probability=0.0)


def _two_teeth(shape=(12, 24, 32)) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 (tooth 11, patient's right) at low x, class 2 (tooth 21, left) at high x; 255 = ignore."""
    labels = np.zeros(shape, np.uint8)
    labels[3:9, 6:18, 4:12] = 1
    labels[3:9, 6:18, 20:28] = 2
    labels[0, 0, :3] = 255
    return labels.astype(np.float32)[None] * 10.0, labels


def test_a_left_right_flip_swaps_the_sides_and_keeps_ignore():
    image, labels = _two_teeth()
    lr_classes = np.array([0, 2, 1])  # class 1 (11) ⇄ class 2 (21)
    out_image, out_labels = spatial_augment(image, labels, AugmentConfig(**{**NONE, "flip_lr": 1.0}),
                                            np.random.default_rng(0), None, (1.0, 1.0, 1.0), lr_classes)
    np.testing.assert_array_equal(out_image, image[..., ::-1])
    # the tooth now at low x is the mirror image of 21: numbered 11 again, as a real right tooth would be
    assert (out_labels[3:9, 6:18, 4:12] == 1).all() and (out_labels[3:9, 6:18, 20:28] == 2).all()
    assert (out_labels[0, 0, -3:] == 255).all()  # ignored voxels stay ignored (moved with the image)
    _, unswapped = spatial_augment(image, labels, AugmentConfig(**{**NONE, "flip_lr": 1.0}),
                                   np.random.default_rng(0), None, (1.0, 1.0, 1.0), None)
    assert (unswapped[3:9, 6:18, 4:12] == 2).all()  # without sides (binary masks) only the voxels move


@pytest.mark.parametrize("change", [
    {"rotate_probability": 1.0, "rotate_deg": 30.0},
    {"scale_probability": 1.0, "scale": (0.6, 0.7)},
    {"elastic_probability": 1.0, "elastic_mm": 4.0},
])
def test_spatial_transforms_move_image_and_labels_together(change):
    labels = np.zeros((16, 48, 64), np.uint8)
    labels[3:13, 8:40, 6:28] = 1
    labels[3:13, 8:40, 36:58] = 2
    image = labels.astype(np.float32)[None] * 10.0
    out_image, out_labels = spatial_augment(image, labels, AugmentConfig(**{**NONE, **change}),
                                            np.random.default_rng(3), None, (1.0, 1.0, 1.0))
    assert out_image.shape == image.shape and out_labels.shape == labels.shape and out_labels.dtype == labels.dtype
    assert set(np.unique(out_labels)) <= {0, 1, 2}  # nearest-neighbour labels: no blended class values
    # the image (linear) and the labels (nearest) come from one resampling: where any tooth is, what the
    # image shows is what the labels say (edges aside), and not what the untransformed labels said
    seen = np.rint(out_image[0] / 10.0)
    teeth = (out_labels > 0) | (labels > 0) | (seen > 0)
    assert (seen == out_labels)[teeth].mean() > 0.9
    assert (seen == labels)[teeth].mean() < 0.75


def test_other_flip_axes_only_for_position_free_classes():
    binary = LabelTable.custom({1: "tooth"}, name="binary-tooth")
    config = AugmentConfig(other_flip_axes=[0, 1])
    check_extra_flips(config, binary, [0, 1], 3)  # RAIL's binary masks: any flip is harmless
    with pytest.raises(InputError, match="mislabel classes whose place is their identity.*upper right central"):
        check_extra_flips(config, LabelTable.fdi(), [0, 11, 21], 3)  # upside down, 11 would look like 41
    with pytest.raises(InputError, match="mislabel.*mandible"):
        check_extra_flips(AugmentConfig(other_flip_axes=[0]), LabelTable.fdi(jaws=True), [0, 2], 3)
    with pytest.raises(InputError, match="left-right axis 2 is flip_lr's"):
        check_extra_flips(AugmentConfig(other_flip_axes=[2]), binary, [0, 1], 3)
    with pytest.raises(InputError, match="axes are 0..0"):
        check_extra_flips(AugmentConfig(other_flip_axes=[3]), binary, [0, 1], 2)
    image, labels = _two_teeth()
    _, flipped = spatial_augment(image, labels, AugmentConfig(**NONE, other_flip_axes=[0]),
                                 np.random.default_rng(1), None, (1.0, 1.0, 1.0))
    assert np.array_equal(flipped, labels) or np.array_equal(flipped, labels[::-1])


def test_intensity_augmentation_changes_values_not_shape():
    image = np.random.default_rng(0).normal(size=(1, 16, 16, 16)).astype(np.float32)
    every = AugmentConfig(gamma_probability=1.0, noise_probability=1.0, blur_probability=1.0, contrast_probability=1.0,
                          brightness_probability=1.0, low_resolution_probability=1.0)
    out = intensity_augment(image.copy(), every, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out, image)
    again = intensity_augment(image.copy(), every, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)  # the sample's generator decides everything: resumable runs


def test_strong_view_keeps_geometry_and_follows_its_generator():
    batch = torch.randn(2, 1, 12, 16, 16)
    views = [strong_augment(batch, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert views[0].shape == batch.shape and torch.equal(views[0], views[1])
    assert not torch.equal(views[0], batch) and torch.equal(batch, batch.clone())  # the input is not modified
