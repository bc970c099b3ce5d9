"""On-the-fly augmentation of patches (numpy, per sample) and strong views for SSL (torch, per batch).

Spatial: rotation (about the axial axis in 3D, in-plane in 2D), scaling, elastic deformation and
flips, as one resampling of a larger crop. A flip of the left-right axis always goes with the label
table's left⇄right swap, so that a mirrored image never teaches the network wrong tooth numbers.
Intensity: gamma, Gaussian noise, blur, contrast, brightness, simulated low resolution.
Unlabeled patches are augmented the same way without any label.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ...core.errors import InputError
from ...core.labels import LabelTable
from ..config.schema import AugmentConfig

__all__ = ["spatial_augment", "intensity_augment", "strong_augment", "lr_axis", "check_extra_flips"]


def lr_axis(ndim: int) -> int:
    """Array axis of the patient's left-right direction (the last one, after reorientation)."""
    return ndim - 1


def check_extra_flips(config: AugmentConfig, table: LabelTable, class_values: list[int], ndim: int) -> None:
    """Refuse ``other_flip_axes`` where a flip would teach wrong labels: a tooth's FDI number, a jaw or a
    side is its place, so an upside-down or back-to-front mirror of it is a different class (the
    left-right flip is ``flip_lr``, which swaps the sides). Only position-free classes (a binary tooth
    mask, as RAIL trains) may be flipped on the other axes."""
    axes = list(config.other_flip_axes)
    if not axes:
        return
    bad_axes = [a for a in axes if not isinstance(a, int) or not 0 <= a < ndim or a == lr_axis(ndim)]
    if bad_axes:
        raise InputError(f"augment.other_flip_axes {axes}: axes are 0..{ndim - 2} of the (z, y, x) patch (the "
                         f"left-right axis {lr_axis(ndim)} is flip_lr's, which swaps the FDI sides)")
    placed = [table[v].name for v in class_values if v in table and (
        table[v].fdi is not None or table[v].group in ("jaw", "canal") or table.swap_partner(v) != v)]
    if placed:
        raise InputError(f"augment.other_flip_axes {axes}: a flip along them would mislabel classes whose place is "
                         f"their identity ({', '.join(placed[:3])}{' …' if len(placed) > 3 else ''}); they suit only "
                         "a binary tooth mask (label_table: binary)")


def _rotation_matrix(ndim: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if ndim == 2:
        return np.array([[c, -s], [s, c]])
    matrix = np.eye(3)
    matrix[1:, 1:] = [[c, -s], [s, c]]  # about axis 0 (z): the axial plane
    return matrix


def spatial_augment(image: np.ndarray, labels: np.ndarray | None, config: AugmentConfig, rng: np.random.Generator,
                    table: LabelTable | None, spacing: tuple[float, ...], lr_classes: np.ndarray | None = None,
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment a (C, *spatial) image and its (*spatial) class-index labels with one transform.

    Args:
        lr_classes: lookup ``class index → class index`` for the left⇄right swap (None: no sides).
    """
    ndim = image.ndim - 1
    shape = np.array(image.shape[1:])
    matrix = np.eye(ndim)
    changed = False
    if rng.random() < config.rotate_probability and config.rotate_deg > 0:
        matrix = matrix @ _rotation_matrix(ndim, math.radians(rng.uniform(-config.rotate_deg, config.rotate_deg)))
        changed = True
    if rng.random() < config.scale_probability:
        matrix = matrix @ np.diag([1.0 / rng.uniform(*config.scale)] * ndim)
        changed = True
    displacement = None
    if config.elastic_mm > 0 and rng.random() < config.elastic_probability:
        coarse = [max(2, int(s // 16)) for s in shape]
        displacement = []
        for axis in range(ndim):
            field = rng.standard_normal(coarse) * config.elastic_mm / spacing[axis]
            smooth = ndimage.zoom(field, shape / np.array(coarse), order=3)
            displacement.append(smooth[tuple(slice(0, s) for s in shape)])
        changed = True
    if changed:
        centre = (shape - 1) / 2.0
        grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
        coords = np.stack([g - c for g, c in zip(grid, centre)])
        coords = np.tensordot(matrix, coords, axes=1) + centre.reshape(ndim, *[1] * ndim)
        if displacement is not None:
            coords = coords + np.stack(displacement)
        image = np.stack([ndimage.map_coordinates(channel, coords, order=1, mode="nearest") for channel in image])
        if labels is not None:
            labels = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0).astype(labels.dtype)
    if config.flip_lr > 0 and rng.random() < config.flip_lr:
        axis = lr_axis(ndim)
        image = np.flip(image, axis=axis + 1)
        if labels is not None:
            labels = np.flip(labels, axis=axis)
            if lr_classes is not None:  # class indices beyond the table (255 = ignore) stay as they are
                inside = labels < len(lr_classes)
                swapped = lr_classes[np.minimum(labels, len(lr_classes) - 1)]
                labels = np.where(inside, swapped, labels).astype(labels.dtype)
    for axis in config.other_flip_axes:
        if rng.random() < 0.5:
            image = np.flip(image, axis=axis + 1)
            if labels is not None:
                labels = np.flip(labels, axis=axis)
    image = np.ascontiguousarray(image, dtype=np.float32)
    return image, (np.ascontiguousarray(labels) if labels is not None else None)


def intensity_augment(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """nnU-Net-style intensity augmentation of a normalised (C, *spatial) float32 patch."""
    if rng.random() < config.noise_probability:
        image = image + rng.normal(0, rng.uniform(*config.noise_std), image.shape).astype(np.float32)
    if rng.random() < config.blur_probability:
        sigma = rng.uniform(*config.blur_sigma)
        image = np.stack([ndimage.gaussian_filter(c, sigma) for c in image])
    if rng.random() < config.brightness_probability:
        image = image * rng.uniform(*config.brightness)
    if rng.random() < config.contrast_probability:
        mean = image.mean()
        image = (image - mean) * rng.uniform(*config.contrast) + mean
    if rng.random() < config.low_resolution_probability:
        factor = rng.uniform(*config.low_resolution)
        if factor < 0.99:
            low = [ndimage.zoom(c, factor, order=0) for c in image]
            image = np.stack([ndimage.zoom(c, np.array(image.shape[1:]) / np.array(c.shape), order=3)
                              [tuple(slice(0, s) for s in image.shape[1:])] for c in low])
    if rng.random() < config.gamma_probability:
        low, high = image.min(), image.max()
        span = max(high - low, 1e-6)
        image = low + span * ((image - low) / span) ** rng.uniform(*config.gamma)
    return image.astype(np.float32, copy=False)


def strong_augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Strong intensity view of a (B, C, *spatial) batch for consistency training (U-Mamba2-SSL §2.3).

    Per sample: blur (p 0.5), noise (p 0.5), brightness (p 0.5), contrast (p 0.5), low resolution
    (p 0.7), gamma (p 0.5), blank rectangles (p 0.7; 1-5 boxes, each covering at most 1/27 of the patch
    as the original's 3D boxes do). No spatial change, so targets stay aligned.
    """
    out = batch.clone()
    dims = batch.dim() - 2

    def chance(p: float) -> bool:
        return bool(torch.rand((), generator=generator) < p)

    def uniform(a: float, b: float) -> float:
        return float(a + (b - a) * torch.rand((), generator=generator))

    for i in range(out.shape[0]):
        x = out[i:i + 1]
        if chance(0.5):
            sigma = uniform(0.3, 1.5)
            radius = max(1, int(2 * sigma))
            t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
            kernel = torch.exp(-t**2 / (2 * sigma**2))
            kernel = kernel / kernel.sum()
            for axis in range(dims):
                shape = [1, 1] + [1] * dims
                shape[2 + axis] = -1
                conv = F.conv2d if dims == 2 else F.conv3d
                pad = [0] * (2 * dims)
                pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
                x = conv(F.pad(x, pad, mode="replicate"), kernel.view(shape).repeat(x.shape[1], 1, *[1] * dims),
                         groups=x.shape[1])
        if chance(0.5):
            x = x + torch.randn(x.shape, generator=generator, device="cpu").to(x) * math.sqrt(uniform(0, 0.1))
        if chance(0.5):
            x = x * uniform(0.5, 1.5)
        if chance(0.5):
            mean = x.mean()
            x = (x - mean) * uniform(0.5, 1.5) + mean
        if chance(0.7):
            scale = uniform(0.25, 1.0)
            size = [max(1, int(s * scale)) for s in x.shape[2:]]
            mode = "bilinear" if dims == 2 else "trilinear"
            x = F.interpolate(F.interpolate(x, size=size, mode="nearest"), size=x.shape[2:], mode=mode,
                              align_corners=False)
        if chance(0.5):
            low, high = x.min(), x.max()
            span = (high - low).clamp_min(1e-6)
            x = low + span * ((x - low) / span) ** uniform(0.7, 1.5)
        if chance(0.7):
            # sides of 1/10 to 1/3 of the patch per axis in 3D (the original); in 2D the same share of
            # the patch's area as the 3D box has of its volume (a 1/3-side square would cover 11 %, not 3.7 %)
            exponent = 3.0 / dims
            for _ in range(int(uniform(1, 5.99))):
                box = []
                for s in x.shape[2:]:
                    side = int(uniform(max(1, s * 0.1 ** exponent), max(2, s * (1 / 3) ** exponent)))
                    start = int(uniform(0, max(1, s - side)))
                    box.append(slice(start, start + side))
                x[(slice(None), slice(None), *box)] = 0.0
        out[i:i + 1] = x
    return out
