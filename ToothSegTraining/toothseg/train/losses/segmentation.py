"""Segmentation and consistency losses (functional), with the tensor shapes they expect.

All take logits ``(B, C, *spatial)`` and integer targets ``(B, *spatial)``; ``ignore_index`` voxels
(e.g. unconfident pseudo-labels) count in neither term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_dice_loss", "dice_ce_loss", "deep_supervision_weights", "consistency_mse", "class_sum_mse", "sharpen",
           "masked_mean", "downsample_target"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False,
                   smooth: float = 1e-5, ignore_index: int | None = None, batch_dice: bool = True,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - mean_c (2 Σ w p y + s) / (Σ w p + Σ w y + s)`` over the classes present in the target or in
    the arg-max prediction (within the counted voxels).

    A class in neither gives no term: with 33 FDI classes and a patch that holds three teeth, an absent
    class's ratio is about ``s / Σp`` ≈ 0, so averaging over every class would charge a perfect
    prediction about 1 per absent class. ``weight`` (B, *spatial) restricts the sums to a region (BCP's
    paste regions); ``ignore_index`` voxels count nowhere. Nothing to count gives 0 (with a graph).
    """
    probs = torch.softmax(logits.float(), dim=1)
    classes = logits.shape[1]
    valid = (torch.ones_like(target, dtype=probs.dtype) if ignore_index is None
             else (target != ignore_index).to(probs.dtype))
    if weight is not None:
        valid = valid * weight.to(probs.dtype)
    safe_target = target.clamp(0, classes - 1) if ignore_index is not None else target
    onehot = F.one_hot(safe_target.long(), classes).movedim(-1, 1).to(probs.dtype) * valid[:, None]
    predicted = F.one_hot(probs.detach().argmax(1), classes).movedim(-1, 1).to(probs.dtype) * valid[:, None]
    probs = probs * valid[:, None]
    dims = (0, *range(2, probs.dim())) if batch_dice else tuple(range(2, probs.dim()))
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    present = (onehot.sum(dims) > 0) | (predicted.sum(dims) > 0)
    if not include_background:
        dice, present = dice[..., 1:], present[..., 1:]
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1.0 - dice[present].mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int | None = None,
                 dice_weight: float = 1.0, ce_weight: float = 1.0) -> torch.Tensor:
    ce = F.cross_entropy(logits.float(), target.long(), ignore_index=-100 if ignore_index is None else ignore_index)
    if ignore_index is not None and bool((target == ignore_index).all()):
        ce = logits.sum() * 0.0  # nothing to learn from; keep the graph
    return ce_weight * ce + dice_weight * soft_dice_loss(logits, target, ignore_index=ignore_index)


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights ``1/2^i``, the lowest resolution set to 0, normalised to sum 1."""
    weights = [1.0 / 2**i for i in range(n)]
    if n > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_target(target: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Nearest-neighbour down-sampling of integer targets for deep-supervision heads."""
    if tuple(target.shape[1:]) == tuple(size):
        return target
    return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()


def consistency_mse(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """``½ Σ_c (softmax(student) − target)²``, averaged over voxels; the target is not differentiated.

    Summed over classes (halved, so that two classes give the usual binary mean over both channels):
    a mean over 33 FDI classes would make the term about 16 times weaker than the binary methods whose
    weights the recipes take."""
    return class_sum_mse(torch.softmax(student_logits.float(), dim=1), target_probs.detach().float())


def class_sum_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``½ Σ_c (a − b)²`` per voxel of (B, C, *spatial) tensors, averaged over the voxels of ``mask``
    (B, *spatial; all voxels without one). For C = 2 this is the mean over both channels."""
    per_voxel = 0.5 * ((a - b) ** 2).sum(dim=1)
    if mask is None:
        return per_voxel.mean()
    mask = mask.to(per_voxel.dtype)
    return (per_voxel * mask).sum() / (mask.sum() + 1e-16)


def sharpen(probs: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``p^(1/T) / Σ p^(1/T)`` along the class axis (RAIL, T = 0.1), computed in log space."""
    logp = torch.log(probs.float().clamp_min(1e-12)) / temperature
    return torch.softmax(logp, dim=1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ(mask·values) / (Σ mask + 1e-16)``; broadcasts a (B, *spatial) mask over channels."""
    mask = mask.to(values.dtype)
    while mask.dim() < values.dim():
        mask = mask.unsqueeze(1)
    mask = mask.expand_as(values)
    return (values * mask).sum() / (mask.sum() + 1e-16)
