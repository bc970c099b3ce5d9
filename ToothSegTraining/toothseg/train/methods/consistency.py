"""U-Mamba2-SSL's stages 2 and 3: consistency regularisation with input and feature perturbations,
then confidence-thresholded pseudo-labels (seed 004, methods.md §2.3–2.4).

Each step is *either* labeled (Dice + CE with deep supervision) *or* unlabeled, chosen with
probability ``p_u(e) = min(0.5, e/E + offset)`` (offset 0.1 for stage 2, 0.3 for stage 3). An
unlabeled step is, with probability ``pl_probability`` (0 in stage 2, 0.25 in stage 3), a
pseudo-label step — the network's own confident (≥ 0.75) foreground predictions on the weak view,
weight 0.1, background and unconfident voxels ignored — and otherwise a consistency step:

* target ``ŷ = f(x)`` on the weak view, without gradient (the same network; no EMA teacher);
* prediction ``ỹ``: encoder on the strong view, feature perturbation of the deepest skips
  (channel dropout 0.5, feature drop of voxels whose channel mean exceeds ``U(0.6, 0.9)·max``,
  multiplicative noise ``U(−0.3, 0.3)``), then bottleneck (Mamba) and decoder;
* ``L_CR = Σ_i w_i MSE(softmax(ỹ_i), softmax(ŷ_i))`` over deep-supervision outputs, weighted by
  ``ω(t) = 50·exp(−5(1 − t/R)²)``, ``R`` = ``rampup_fraction`` of the stage (0.2, then 0.05).

The strong view is :func:`~toothseg.train.data.augment.strong_augment` (blur, noise, brightness,
contrast, low resolution, gamma, blank rectangles). Its forward pass leaves batch-norm running
statistics as they were (the original's instance norm keeps none; on a batch-norm network such as
the 2D U-Net, the perturbed features would otherwise become the statistics used at inference).
The upstream gradient-accumulation bug (U1) does not exist here: the engine accumulates then steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.augment import strong_augment
from ..losses import deep_supervision_weights
from .base import Method, StepOutput, register_method, running_statistics_kept
from .mean_teacher import sigmoid_rampup
from .supervised import supervised_loss

__all__ = ["perturb_features"]


def perturb_features(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Channel dropout → feature drop → multiplicative noise, on one (B, C, *spatial) skip."""
    mean = z.mean(dim=1, keepdim=True)  # from the unperturbed features
    keep = torch.bernoulli(torch.full((z.shape[0], z.shape[1]) + (1,) * (z.dim() - 2), 0.5), generator=generator).to(z)
    out = z * keep * 2.0
    u = float(0.6 + 0.3 * torch.rand((), generator=generator))
    top = mean.flatten(1).amax(dim=1).view(-1, *([1] * (z.dim() - 1)))
    out = out * (mean < top * u).to(z.dtype)
    noise = (torch.rand(z.shape[1:], generator=generator) * 0.6 - 0.3).to(z)
    return out + out * noise


@dataclass
class ConsistencySettings:
    unlabeled_offset: float = 0.1
    max_unlabeled_probability: float = 0.5
    consistency_weight: float = 50.0
    rampup_fraction: float = 0.2
    perturbed_skips: int = 5
    pl_probability: float = 0.0
    pl_threshold: float = 0.75
    pl_weight: float = 0.1


@register_method("consistency")
class Consistency(Method):
    """U-Mamba2-SSL stage 2 (consistency regularisation); with ``pl_probability`` > 0, stage 3."""

    Settings = ConsistencySettings
    needs_unlabeled = True

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.generator = torch.Generator().manual_seed(context.seed + 41)

    def p_unlabeled(self, step: int) -> float:
        s = self.settings
        return min(s.max_unlabeled_probability, step / max(1, self.context.total_iterations) + s.unlabeled_offset)

    def weight(self, step: int) -> float:
        s = self.settings
        return s.consistency_weight * sigmoid_rampup(step, s.rampup_fraction * self.context.total_iterations)

    def _draw(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _forward_perturbed(self, x: torch.Tensor):
        network = self.nets["student"]
        module = getattr(network, "module", network)
        features = module.encode(x)
        count = min(self.settings.perturbed_skips, len(features))
        features = list(features[:-count]) + [perturb_features(f, self.generator) for f in features[-count:]]
        return module.decode(features, x)

    def train_step(self, batch, step):
        s = self.settings
        network = self.nets["student"]
        zero = batch["image"].new_zeros(())
        forced = batch.get("force")  # tests pass 'labeled', 'consistency' or 'pseudo'
        kind = forced or "labeled"
        if forced is None and self._draw() < self.p_unlabeled(step):
            kind = "pseudo" if self._draw() < s.pl_probability else "consistency"
        if kind == "labeled":
            loss = supervised_loss(network(batch["image"]), batch["label"])
            return StepOutput(loss, {"supervised": loss, "consistency": zero, "pseudo": zero},
                              unsupervised=("consistency", "pseudo"), logs={"unlabeled_step": 0.0})
        x = batch["unlabeled_image"]
        if kind == "pseudo":
            outputs = network(x)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            probs = torch.softmax(outputs[0].detach().float(), dim=1)
            confidence, target = probs.max(dim=1)
            target = torch.where(confidence >= s.pl_threshold, target, torch.zeros_like(target))
            loss = s.pl_weight * supervised_loss(outputs if len(outputs) > 1 else outputs[0], target, ignore_index=0)
            return StepOutput(loss, {"supervised": zero, "consistency": zero, "pseudo": loss},
                              unsupervised=("consistency", "pseudo"), logs={"unlabeled_step": 1.0})
        with torch.no_grad():
            target = network(x)
        target = target if isinstance(target, (list, tuple)) else [target]
        strong = strong_augment(x, self.generator)
        with running_statistics_kept(network):  # batch norm's running statistics must describe real images
            predicted = self._forward_perturbed(strong)
        predicted = predicted if isinstance(predicted, (list, tuple)) else [predicted]
        weights = deep_supervision_weights(len(predicted)) if len(predicted) > 1 else [1.0]
        cr = zero
        for w, p, t in zip(weights, predicted, target):
            if w > 0:
                cr = cr + w * F.mse_loss(torch.softmax(p.float(), 1), torch.softmax(t.float(), 1))
        loss = self.weight(step) * cr
        return StepOutput(loss, {"supervised": zero, "consistency": loss, "pseudo": zero},
                          unsupervised=("consistency", "pseudo"),
                          logs={"unlabeled_step": 1.0, "w_cr": self.weight(step)})


@dataclass
class PseudoLabelSettings(ConsistencySettings):
    unlabeled_offset: float = 0.3
    rampup_fraction: float = 0.05
    pl_probability: float = 0.25


@register_method("pseudo_label")
class PseudoLabel(Consistency):
    """U-Mamba2-SSL stage 3: consistency plus confident pseudo-labels (threshold 0.75, weight 0.1)."""

    Settings = PseudoLabelSettings
