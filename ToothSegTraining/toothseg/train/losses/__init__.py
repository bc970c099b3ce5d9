"""Losses: Dice + cross-entropy, deep supervision, consistency, sharpening and masked means."""

from .segmentation import (  # noqa: F401
    class_sum_mse,
    consistency_mse,
    deep_supervision_weights,
    dice_ce_loss,
    masked_mean,
    sharpen,
    soft_dice_loss,
)
