"""Test-time augmentation and ensembles: one window predictor that averages mirrored passes and members.

A mirrored pass along the patient's left-right axis sees a left tooth where a right one was, so its
probabilities are flipped back *and* their FDI channels swapped (1x<->2x, 3x<->4x) before averaging;
without the swap, mirroring would blur each tooth with its contralateral twin. Mirrors are only the
axes the model card allows (a model trained without mirroring is not mirrored at inference).
"""

from __future__ import annotations

import itertools

import torch

from ..errors import InputError
from ..models.folder import LoadedModel

__all__ = ["WindowRunner", "mirror_combinations"]

LR_AXIS = 4
"""Axis of a (B, C, Z, Y, X) window that runs along the patient's left-right axis after reorientation."""


def mirror_combinations(axes: list[int]) -> list[tuple[int, ...]]:
    """Every non-empty combination of the mirror axes (nnU-Net's test-time mirroring)."""
    return [combo for r in range(1, len(axes) + 1) for combo in itertools.combinations(axes, r)]


class WindowRunner:
    """One network (or an ensemble of networks with one card) as a window predictor.

    Called with a (B, 1, Z, Y, X) batch, returns class probabilities (B, C, Z, Y, X): the mean over
    ensemble members and, with ``tta``, over the mirrored passes the card allows. With ``logits`` it
    averages logits instead (nnU-Net's arithmetic, for imported nnU-Net models); ``swap_sides=False``
    never swaps left/right FDI channels (windows not in ToothSeg's canonical orientation).
    """

    def __init__(self, models: list[LoadedModel], device: torch.device, tta: bool, logits: bool = False,
                 swap_sides: bool = True) -> None:
        self.models = models
        self.card = models[0].card
        self.device = device
        for model in models:
            model.network.to(device).eval()
            if model.card.class_values != self.card.class_values or model.card.patch_size != self.card.patch_size:
                raise InputError("ensemble members must share classes and patch size")
        dims = self.card.spatial_dims
        # card mirror axes are model-array axes; windows are always (B, C, Z, Y, X), a 2D model's
        # (Y, X) being the last two
        offset = 5 - dims
        self.mirrors = mirror_combinations([a + offset for a in self.card.mirror_axes]) if tta else []
        perm = self.card.label_table.channel_swap_permutation(self.card.class_values)
        self.swap = torch.tensor(perm) if swap_sides and perm != list(range(len(perm))) else None
        self.logits = logits
        self.is_2d = dims == 2
        self.forward_passes = 0

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        total = None
        count = 0
        for model in self.models:
            network = model.network
            if next(network.parameters()).device != batch.device:
                network.to(batch.device)
            for axes in [()] + self.mirrors:
                probs = self._pass(network, batch, axes)
                total = probs if total is None else total.add_(probs)
                count += 1
        return total if count == 1 else total.div_(count)

    def _pass(self, network: torch.nn.Module, batch: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        """Probabilities (or logits) of one (possibly mirrored) pass, in the unmirrored frame and channel order."""
        x = torch.flip(batch, list(axes)) if axes else batch
        x = x[:, :, 0] if self.is_2d else x
        with torch.autocast("cuda", dtype=torch.float16, enabled=batch.device.type == "cuda"):
            logits = network(x)
        if isinstance(logits, (list, tuple)):  # deep supervision: the full-resolution output
            logits = logits[0]
        probs = logits.float() if self.logits else torch.softmax(logits.float(), dim=1)
        del logits
        probs = probs[:, :, None] if self.is_2d else probs
        if axes:
            probs = torch.flip(probs, list(axes))
            if LR_AXIS in axes and self.swap is not None:
                probs = probs[:, self.swap.to(probs.device)]
        self.forward_passes += x.shape[0]
        return probs
