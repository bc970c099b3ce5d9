"""Learning-rate schedules as pure functions of the iteration (so resuming needs no scheduler state)."""

from __future__ import annotations

import math

import torch

from ...core.errors import InputError
from ..config.schema import OPTIMIZERS, SCHEDULES, OptimizerConfig

__all__ = ["learning_rate", "build_optimizer"]


def learning_rate(config: OptimizerConfig, step: int, total: int) -> float:
    """LR at ``step`` of ``total``.

    * ``poly``: ``lr (1 − step/total)^power`` (nnU-Net);
    * ``cosine``: cosine from lr to ``min_lr``;
    * ``linear``: a straight line from lr to ``min_lr``, reached at the last step (PyTorch's
      ``LinearLR``; U-Mamba2-SSL's pseudo-label stage: 1e-3 → 1e-5);
    * ``constant``;
    * ``warmup_cosine``: RAIL's — the warm-up below over ``warmup_iterations``, constant until half
      the run, then cosine to ``min_lr``.
    Any schedule is preceded by a linear warm-up when ``warmup_iterations`` > 0, from
    ``warmup_start_lr`` (default ``min_lr``); the schedule then goes on from where it stands at that
    step (timm's ``CosineLRScheduler`` without ``warmup_prefix``).
    """
    base, low = config.lr, config.min_lr
    total = max(1, total)
    if config.warmup_iterations and step < config.warmup_iterations:
        start = low if config.warmup_start_lr is None else config.warmup_start_lr
        return start + (base - start) * (step + 1) / config.warmup_iterations
    if config.schedule == "poly":
        return base * (1.0 - min(step, total - 1) / total) ** config.power
    if config.schedule == "cosine":
        return low + 0.5 * (base - low) * (1.0 + math.cos(math.pi * min(step, total) / total))
    if config.schedule == "linear":
        return base + (low - base) * min(step, total - 1) / max(1, total - 1)
    if config.schedule == "constant":
        return base
    if config.schedule == "warmup_cosine":
        half = total // 2
        if step < half:
            return base
        return low + 0.5 * (base - low) * (1.0 + math.cos(math.pi * (step - half) / max(1, total - half)))
    raise InputError(f"unknown learning-rate schedule {config.schedule!r} ({', '.join(SCHEDULES)})")


def build_optimizer(config: OptimizerConfig, parameters):
    """The optimiser over ``parameters``; with ``no_decay_norm_bias`` the 1-D ones (norm weights and
    biases) form a second group without weight decay."""
    parameters = list(parameters)
    if config.no_decay_norm_bias:
        parameters = [{"params": [p for p in parameters if p.ndim > 1]},
                      {"params": [p for p in parameters if p.ndim <= 1], "weight_decay": 0.0}]
    if config.name == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay)
    if config.name == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    raise InputError(f"unknown optimiser {config.name!r} ({', '.join(OPTIMIZERS)})")
