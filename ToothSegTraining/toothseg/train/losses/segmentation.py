"""Segmentation and consistency losses (functional), with the tensor shapes they expect.

All take logits ``(B, C, *spatial)`` and integer targets ``(B, *spatial)``; ``ignore_index`` voxels
(e.g. unconfident pseudo-labels) count in neither term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_dice_loss", "dice_ce_loss", "deep_supervision_weights", "consistency_mse", "sharpen", "masked_mean",
           "downsample_target"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False,
                   smooth: float = 1e-5, ignore_index: int | None = None, batch_dice: bool = True) -> torch.Tensor:
    """``1 - mean_c (2 Σ p y + s) / (Σ p + Σ y + s)`` over the classes present in target or prediction."""
    probs = torch.softmax(logits.float(), dim=1)
    classes = logits.shape[1]
    valid = (torch.ones_like(target, dtype=probs.dtype) if ignore_index is None
             else (target != ignore_index).to(probs.dtype))
    safe_target = target.clamp(0, classes - 1) if ignore_index is not None else target
    onehot = F.one_hot(safe_target.long(), classes).movedim(-1, 1).to(probs.dtype)
    probs = probs * valid[:, None]
    onehot = onehot * valid[:, None]
    dims = (0, *range(2, probs.dim())) if batch_dice else tuple(range(2, probs.dim()))
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        dice = dice[1:] if batch_dice else dice[:, 1:]
    return 1.0 - dice.mean()


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
    """Mean over voxels and classes of ``(softmax(student) − target)²``; the target is not differentiated."""
    return ((torch.softmax(student_logits.float(), dim=1) - target_probs.detach().float()) ** 2).mean()


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
