"""Segmentation metrics (overlap now; surface distances and challenge protocols build on it)."""

from .overlap import dice_per_label, mean_dice  # noqa: F401
