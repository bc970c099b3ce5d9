"""U-Mamba2-SSL's stages 2 and 3: consistency regularisation with input and feature perturbations,
then confidence-thresholded pseudo-labels (seed 004, methods.md §2.3–2.4).

Every step trains on the labeled batch (Dice + CE with deep supervision), as supervised training
does; with probability ``p_u(e) = min(0.5, e/E + offset)`` (offset 0.1 for stage 2, 0.3 for stage 3)
an unlabeled term is added on top. (The original makes a step *either* labeled or unlabeled, which
gives its network fewer labeled images than supervised training at the same number of steps.) The
unlabeled term is, with probability ``pl_probability`` (0 in stage 2, 0.25 in stage 3), a pseudo-label
term — the network's own confident (≥ 0.75) foreground predictions on the weak view, weight 0.1,
background and unconfident voxels ignored — and otherwise a consistency term:

* target ``ŷ = f(x)`` on the weak view, without gradient (the same network; no EMA teacher);
* prediction ``ỹ``: encoder on the strong view, feature perturbation of every skip but the
  ``unperturbed_finest`` (2) highest-resolution ones (channel dropout 0.5, feature drop of voxels whose
  channel mean exceeds ``U(0.6, 0.9)·max``, multiplicative noise ``U(−0.3, 0.3)``), then bottleneck
  (Mamba) and decoder — the original perturbs the last 5 of its 7 skips, leaving the 2 finest alone;
* ``L_CR = Σ_i w_i MSE(softmax(ỹ_i), softmax(ŷ_i))`` over deep-supervision outputs (the mean over
  classes, as the original on its own multi-class STSR labels), weighted by
  ``ω(t) = 50·exp(−5(1 − t/R)²)`` with ``R = rampup_steps``, counted from the step the network finds
  teeth on its labeled batches (``gate_dice``; :class:`~toothseg.train.methods.ramps.CompetenceGate`).

The strong view is :func:`~toothseg.train.data.augment.strong_augment` (blur, noise, brightness,
contrast, low resolution, gamma, blank rectangles). Its forward pass leaves batch-norm running
statistics as they were (the original's instance norm keeps none; on a batch-norm network such as
the 2D U-Net, the perturbed features would otherwise become the statistics used at inference).
The upstream gradient-accumulation bug (U1) does not exist here: the engine accumulates then steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.augment import strong_augment
from ..losses import deep_supervision_weights
from .base import RAMP, Method, StepOutput, register_method, running_statistics_kept, unwrap
from .ramps import CompetenceGate, tooth_dice
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
    rampup_steps: int = field(default=800, metadata=RAMP)  # U-Mamba2-SSL: 0.2 of its stage; in steps from the gate
    gate_dice: float = 0.3  # the ramp starts when the labeled-batch tooth Dice passes this
    unperturbed_finest: int = 2  # the highest-resolution skips left unperturbed (the original: 2 of 7)
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
        self.gate = CompetenceGate(settings.gate_dice)

    def p_unlabeled(self, step: int) -> float:
        s = self.settings
        return min(s.max_unlabeled_probability, step / max(1, self.context.total_iterations) + s.unlabeled_offset)

    def weight(self, step: int) -> float:
        return self.settings.consistency_weight * self.gate.ramp(step, self.settings.rampup_steps)

    def _draw(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _forward_perturbed(self, x: torch.Tensor):
        network = self.nets["student"]
        module = getattr(network, "module", network)
        features = module.encode(x)
        keep = min(self.settings.unperturbed_finest, len(features) - 1)  # the bottleneck is always perturbed
        features = list(features[:keep]) + [perturb_features(f, self.generator) for f in features[keep:]]
        return module.decode(features, x)

    def train_step(self, batch, step):
        s = self.settings
        network = self.nets["student"]
        output = network(batch["image"])
        supervised = supervised_loss(output, batch["label"])
        zero = supervised.new_zeros(())
        self.gate.observe(step, student=tooth_dice(self.main_output(output).detach(), batch["label"]))
        forced = batch.get("force")  # tests pass 'labeled', 'consistency' or 'pseudo'
        kind = forced or "labeled"
        if forced is None and self._draw() < self.p_unlabeled(step):
            kind = "pseudo" if self._draw() < s.pl_probability else "consistency"
        terms = {"supervised": supervised, "consistency": zero, "pseudo": zero}
        logs = {"unlabeled_step": float(kind != "labeled"), "w_cr": self.weight(step), **self.gate.logs()}
        if kind == "pseudo" and s.pl_weight > 0 and self.gate.opened_at is not None:
            terms["pseudo"] = self._pseudo_label_term(batch["unlabeled_image"])
        elif kind == "consistency" and self.weight(step) > 0:
            terms["consistency"] = self.weight(step) * self._consistency_term(batch["unlabeled_image"])
        return StepOutput(sum(terms.values()), terms, unsupervised=("consistency", "pseudo"), logs=logs)

    def probe_pseudo_labels(self, images):
        """The student's unperturbed arg-max, the target of its consistency term (every voxel); with
        pseudo-labels on (stage 3), also the voxels they use: confident teeth (background is ignored)."""
        probs = torch.softmax(self.main_output(unwrap(self.nets["student"])(images)).float(), dim=1)
        labels, used = self._confident_teeth(probs)
        if self.settings.pl_probability <= 0 or self.settings.pl_weight <= 0:
            return labels, None
        return labels, used

    def _confident_teeth(self, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Arg-max of class probabilities, and the voxels stage 3's pseudo-labels use: confident (at least
        ``pl_threshold``) and not background (the loss ignores class 0, as the original does)."""
        confidence, labels = probs.max(dim=1)
        return labels, (confidence >= self.settings.pl_threshold) & (labels != 0)

    def _pseudo_label_term(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        outputs = self.nets["student"](x)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        labels, used = self._confident_teeth(torch.softmax(outputs[0].detach().float(), dim=1))
        target = torch.where(used, labels, torch.zeros_like(labels))
        return s.pl_weight * supervised_loss(outputs if len(outputs) > 1 else outputs[0], target, ignore_index=0)

    def _consistency_term(self, x: torch.Tensor) -> torch.Tensor:
        network = self.nets["student"]
        with torch.no_grad():
            target = network(x)
        target = target if isinstance(target, (list, tuple)) else [target]
        strong = strong_augment(x, self.generator)
        with running_statistics_kept(network):  # batch norm's running statistics must describe real images
            predicted = self._forward_perturbed(strong)
        predicted = predicted if isinstance(predicted, (list, tuple)) else [predicted]
        weights = deep_supervision_weights(len(predicted)) if len(predicted) > 1 else [1.0]
        cr = predicted[0].new_zeros(())
        for w, p, t in zip(weights, predicted, target):
            if w > 0:
                cr = cr + w * F.mse_loss(torch.softmax(p.float(), 1), torch.softmax(t.float(), 1))
        return cr

    def state_dict(self):
        return {"gate": self.gate.state_dict()}

    def load_state_dict(self, state):
        self.gate.load_state_dict(state.get("gate") or {})


@dataclass
class PseudoLabelSettings(ConsistencySettings):
    unlabeled_offset: float = 0.3
    rampup_steps: int = field(default=200, metadata=RAMP)  # 0.05 of the 4000-step stage
    pl_probability: float = 0.25


@register_method("pseudo_label")
class PseudoLabel(Consistency):
    """U-Mamba2-SSL stage 3: consistency plus confident pseudo-labels (threshold 0.75, weight 0.1)."""

    Settings = PseudoLabelSettings
