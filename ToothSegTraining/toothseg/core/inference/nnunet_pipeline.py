"""nnU-Net's inference arithmetic, for models imported from nnU-Net (cards with an ``nnunet`` entry).

``nnUNetv2_predict`` does, in this order (nnunetv2 2.x, ``DefaultPreprocessor`` and ``nnUNetPredictor``):

1. the image array as SimpleITK stores it (no reorientation), axes transposed by ``transpose_forward``;
2. crop to the bounding box of the non-zero voxels;
3. normalise (``CTNormalization``: clip to the dataset's 0.5/99.5 percentiles, subtract its mean,
   divide by its std) *before* resampling;
4. resample to the plan's spacing with ``skimage.transform.resize`` (cubic spline, edge mode, no
   anti-aliasing, output clipped to the input range); if either spacing is anisotropic (ratio > 3) the
   thick axis is resampled apart: in-plane cubic per slice, nearest slice across;
5. sliding windows at step 0.5 with a Gaussian (σ = 1/8 of the patch, centred at ``patch // 2``,
   scaled to 10, float16), *logits* blended in float16, mirrored passes (only on the allowed axes)
   and folds averaged as logits;
6. logits resampled back linearly (nearest across the thick axis), stored as float16, arg-maxed;
   put back into the crop box (background outside), transposed back.

This module repeats that arithmetic with ToothSeg's parts: the image is resampled slice by slice and
row by row (one cubic spline zoom per axis is the same sum as a 3D one, because spline prefiltering and
evaluation act on each axis apart), and logits go back slab by slab into the label map, so no
full-resolution logit volume is ever held. scipy's ``ndimage.zoom`` does the spline work, called as
scikit-image calls it. The tests check the result against ``nnUNetv2_predict``'s own outputs
(``Testing/core/inference/test_nnunet_reference.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..errors import InputError
from ..models.nnunet_settings import NnUNetResampling, NnUNetSettings
from ..preprocessing import channel_argmax, iter_resampled_slabs
from ..progress import Progress
from ..volume import Volume
from .sliding_window import SlidingWindowConfig, sliding_window_predict
from .tta import WindowRunner

__all__ = ["separate_axis", "spline_resize", "resample_image", "nonzero_box", "normalize_like_nnunet",
           "nearest_rows", "segment_like_nnunet"]


def separate_axis(current: Sequence[float], new: Sequence[float], settings: NnUNetResampling) -> int | None:
    """The axis nnU-Net resamples apart (``determine_do_sep_z_and_axis``), or None.

    An axis is taken apart when the current spacing (else the new one) has a max/min ratio above the
    threshold, and exactly one axis holds the largest spacing; ``force_separate_z`` overrides the rule.
    """
    def lowres_axes(spacing: Sequence[float]) -> list[int]:
        largest = max(spacing)
        return [i for i, s in enumerate(spacing) if largest / s == 1]

    def anisotropic(spacing: Sequence[float]) -> bool:
        return max(spacing) / min(spacing) > settings.anisotropy_threshold

    if settings.force_separate_z is not None:
        axes = lowres_axes(current) if settings.force_separate_z else []
    elif anisotropic(current):
        axes = lowres_axes(current)
    elif anisotropic(new):
        axes = lowres_axes(new)
    else:
        axes = []
    return axes[0] if len(axes) == 1 else None


def spline_resize(image: np.ndarray, shape: Sequence[int], order: int, clip: bool = True) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order, mode="edge", anti_aliasing=False)`` in float64.

    scikit-image calls ``ndimage.zoom`` with the zoom ``1 / (in / out)`` per axis, ``grid_mode=True``
    (pixel edges aligned, as ``align_corners=False``) and edge extension, then clips to the input range.
    """
    image = np.asarray(image, dtype=np.float64)
    shape = tuple(int(n) for n in shape)
    if image.shape == shape:
        return image.copy()
    factors = np.divide(image.shape, shape)
    out = ndimage.zoom(image, [1 / f for f in factors], order=order, mode="nearest", grid_mode=True)
    if out.shape != shape:  # pragma: no cover - ndimage.zoom rounds shapes as scikit-image expects
        raise AssertionError(f"spline resize gave {out.shape}, not {shape}")
    if clip and order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def nearest_rows(n_in: int, n_out: int) -> list[int]:
    """Source index of each output index along one axis, as nnU-Net's ``map_coordinates(order=0,
    mode="nearest")`` picks it for the coordinates ``(i + 0.5) * n_in / n_out - 0.5``."""
    coords = (np.arange(n_out, dtype=np.float64) + 0.5) * (float(n_in) / n_out) - 0.5
    picked = ndimage.map_coordinates(np.arange(n_in, dtype=np.float64), coords[None], order=0, mode="nearest")
    return [int(v) for v in picked]


def resample_image(array: np.ndarray, new_shape: Sequence[int], current: Sequence[float], new: Sequence[float],
                   settings: NnUNetResampling) -> np.ndarray:
    """nnU-Net's ``resample_data_or_seg_to_shape`` of one image channel (float32 out)."""
    new_shape = tuple(int(n) for n in new_shape)
    if tuple(array.shape) == new_shape:
        return np.asarray(array, dtype=np.float32)
    out = np.empty(new_shape, dtype=np.float32)
    axis = separate_axis(current, new, settings)
    if axis is not None:
        source, target = np.moveaxis(array, axis, 0), np.moveaxis(out, axis, 0)
        plane = target.shape[1:]
        if settings.order_z == 0 or source.shape[0] == target.shape[0]:
            rows = nearest_rows(source.shape[0], target.shape[0])
            last, resized = None, None
            for k, row in enumerate(rows):  # one resized slice at a time; repeated rows reuse it
                if row != last:
                    resized, last = spline_resize(source[row], plane, settings.order), row
                target[k] = resized
            return out
        stack = np.stack([spline_resize(s, plane, settings.order) for s in source])  # rare: order_z > 0
        coords = (np.arange(target.shape[0]) + 0.5) * (stack.shape[0] / target.shape[0]) - 0.5
        grid = np.meshgrid(coords, *[np.arange(n, dtype=np.float64) for n in plane], indexing="ij")
        target[...] = ndimage.map_coordinates(stack, np.array(grid), order=settings.order_z, mode="nearest")
        return out
    # a 3D spline zoom as one zoom per axis: in-plane slice by slice, then along the first axis row by row
    order = settings.order
    partial = np.empty((array.shape[0], *new_shape[1:]), dtype=np.float32)  # half of float64's memory
    for z in range(array.shape[0]):
        partial[z] = spline_resize(array[z], new_shape[1:], order, clip=False)
    for y in range(new_shape[1]):
        out[:, y, :] = spline_resize(partial[:, y, :], (new_shape[0], new_shape[2]), order, clip=False)
    if order > 0:
        np.clip(out, array.min(), array.max(), out=out)
    return out


def nonzero_box(array: np.ndarray) -> tuple[slice, ...]:
    """nnU-Net's crop: the bounding box of the non-zero voxels (filling holes, as it does, cannot move
    a bounding box, so it is not done); the whole array when it is all zero."""
    found = np.nonzero(array != 0)
    if not found[0].size:
        return tuple(slice(0, n) for n in array.shape)
    return tuple(slice(int(f.min()), int(f.max()) + 1) for f in found)


def normalize_like_nnunet(array: np.ndarray, settings: NnUNetSettings) -> np.ndarray:
    """The plan's normalisation of a cropped float32 image, as nnU-Net computes it (float32)."""
    image = np.array(array, dtype=np.float32)
    if settings.normalization == "CTNormalization":
        props = settings.intensity_properties
        np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
        image -= props["mean"]
        image /= max(props["std"], 1e-8)
    elif settings.normalization == "ZScoreNormalization":
        if settings.use_mask_for_norm:
            mask = ndimage.binary_fill_holes(image != 0)
            values = image[mask]
            image[mask] = (values - values.mean()) / max(float(values.std()), 1e-8)
        else:
            image -= image.mean()
            image /= max(float(image.std()), 1e-8)
    return image


def _shape_at(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``."""
    return tuple(int(round(s / t * n)) for s, t, n in zip(spacing, target, shape))


def _logits_to_labels(logits: torch.Tensor, out_shape: tuple[int, ...], current: Sequence[float],
                      new: Sequence[float], settings: NnUNetResampling, lut: torch.Tensor, labels: np.ndarray,
                      entropy: np.ndarray | None, progress: Progress) -> None:
    """Resample logits (C, *model grid) to ``out_shape`` as nnU-Net does, slab by slab, into ``labels``
    (and the normalised entropy of their softmax), never holding the full-resolution logits."""
    if settings.order != 1 or settings.order_z not in (0, 1):
        raise InputError(f"nnU-Net probability resampling of order {settings.order} (across: {settings.order_z}) "
                         "is not supported; its default is 1 (0 across thick slices)")
    axis = separate_axis(current, new, settings) if tuple(logits.shape[1:]) != out_shape else None
    rows = None
    if axis is not None:
        logits = logits.movedim(1 + axis, 1)
        out_shape = (out_shape[axis], *[n for a, n in enumerate(out_shape) if a != axis])
        labels = np.moveaxis(labels, axis, 0)
        entropy = np.moveaxis(entropy, axis, 0) if entropy is not None else None
        if settings.order_z == 0:
            rows = nearest_rows(logits.shape[1], out_shape[0])
    log_c = math.log(max(2, logits.shape[0]))
    slab = max(1, int(2**23 // max(1, logits.shape[0] * out_shape[1] * out_shape[2])))
    for z0, z1, block in iter_resampled_slabs(logits, out_shape, slab=slab, first_axis_rows=rows):
        progress.update(z0 / out_shape[0], "mapping back")
        block = block.to(torch.float16)  # nnU-Net keeps the resampled logits in the logits' float16
        labels[z0:z1] = lut[channel_argmax(block)].numpy().astype(labels.dtype)
        if entropy is not None:
            p = torch.softmax(block.float(), dim=0).clamp_min(1e-8)
            entropy[z0:z1] = (-(p * p.log()).sum(dim=0) / log_c).numpy()


def segment_like_nnunet(runner: WindowRunner, volume: Volume, settings: NnUNetSettings, device: torch.device,
                        batch_size: int, uncertainty: bool, report: dict[str, Any],
                        progress: Progress) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels (FDI/label values) and, on request, normalised entropy of ``volume``, in its own array order.

    ``runner`` must average logits (``WindowRunner(..., logits=True, swap_sides=False)``), as nnU-Net does.
    """
    card = runner.card
    forward = settings.transpose_forward
    image = np.transpose(volume.array, forward)
    spacing = [volume.spacing_zyx[a] for a in forward]
    box = nonzero_box(image)
    cropped = normalize_like_nnunet(image[box], settings)
    target = list(card.spacing_zyx) if card.spacing_zyx else list(spacing)
    if len(target) < 3:  # a 2D plan keeps the slice spacing
        target = [spacing[0], *target]
    grid = _shape_at(cropped.shape, spacing, target)
    progress.update(0.0, "resampling")
    resampled = resample_image(cropped, grid, spacing, target, settings.resampling_data)
    del cropped
    patch = list(card.patch_size or [128] * card.spatial_dims)
    if card.spatial_dims == 2:
        patch = [1, *patch]
    config = SlidingWindowConfig(patch, overlap=1.0 - settings.tile_step_size, batch_size=batch_size,
                                 placement="even", importance="nnunet", exact=False)
    logits = sliding_window_predict(torch.from_numpy(resampled)[None], runner, card.num_classes, config, device,
                                    progress.sub(0.05, 0.9, progress.prefix))
    report["forward_passes"] = runner.forward_passes
    report["nnunet"] = {"transposed_shape": list(image.shape), "crop": [[s.start, s.stop] for s in box],
                        "model_grid": list(grid),
                        "separate_axis": separate_axis(spacing, target, settings.resampling_data)}
    class_values = np.asarray(card.class_values)
    labels = np.zeros(volume.array.shape, dtype=np.uint8 if class_values.max() < 256 else np.uint16)
    entropy = np.zeros(volume.array.shape, dtype=np.float32) if uncertainty else None
    # views in the transposed frame: writing the crop box of these writes the result in the input's order
    labels_t = np.transpose(labels, forward)[box]
    entropy_t = np.transpose(entropy, forward)[box] if entropy is not None else None
    lut = torch.from_numpy(class_values.astype(np.int64))
    _logits_to_labels(logits, tuple(labels_t.shape), target, spacing, settings.resampling_probabilities, lut,
                      labels_t, entropy_t, progress.sub(0.9, 1.0, "mapping back"))
    return labels, entropy
