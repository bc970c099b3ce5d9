"""Segmentation metrics: overlap, surface distances (NSD, HD95, ASD) and challenge-exact protocols."""

from .overlap import best_instance_dice, dice_per_label, mean_dice, numbered_right_share  # noqa: F401
from .protocols import PROTOCOLS, sts2024_case, stsr2025_cases, toothseg_case  # noqa: F401
from .surface import normalized_surface_dice, surface_metrics  # noqa: F401
