"""Supervised training: Dice + cross-entropy, with deep supervision where the network has it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import deep_supervision_weights, dice_ce_loss
from ..losses.segmentation import downsample_target
from .base import Method, StepOutput, register_method


IGNORE = 255  # unconfident pseudo-labels (see toothseg.train.data.dataset)


def supervised_loss(output, target: torch.Tensor, ignore_index: int | None = IGNORE) -> torch.Tensor:
    """Dice + CE on one output, or nnU-Net's weighted sum over deep-supervision outputs."""
    if isinstance(output, (list, tuple)):
        weights = deep_supervision_weights(len(output))
        total = output[0].new_zeros(())
        for weight, logits in zip(weights, output):
            if weight > 0:
                total = total + weight * dice_ce_loss(logits, downsample_target(target, tuple(logits.shape[2:])),
                                                      ignore_index)
        return total
    return dice_ce_loss(output, target, ignore_index)


@dataclass
class SupervisedSettings:
    """No options: the loss is Dice + cross-entropy (deep supervision when the network has it)."""


@register_method("supervised")
class Supervised(Method):
    Settings = SupervisedSettings

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        loss = supervised_loss(self.nets["student"](batch["image"]), batch["label"])
        return StepOutput(loss, {"supervised": loss})
