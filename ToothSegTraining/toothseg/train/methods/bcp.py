"""Bidirectional copy-paste (BCP, Bai et al.) with the extension of Hsu & Hua (seed 003):
a shrinking ("dynamic") paste region and a dual teacher (EMA + periodically refreshed static copy).
Edge guidance is an option of the architecture (``model.kwargs.edge_guided: true``).

Two stages (two recipe stages):

* ``bcp_pretrain`` — labeled only: ``x = x_a⊙M + x_b⊙(1−M)``, the same mix of labels, Dice + CE.
* ``bcp`` — self-training: pseudo-labels of the unlabeled pair from the teacher(s) (largest connected
  component per class); ``X_l = x_a⊙M + u_a⊙(1−M)`` and ``X_u = u_b⊙M + x_b⊙(1−M)``; each mixed image
  is supervised by the true labels on its labeled part (weight 1) and by pseudo-labels on its
  unlabeled part (weight ``u_weight`` = 0.5).

Plain supervised training on the unmixed labeled batch (``plain_weight`` 1) is ours: every method here
gets supervised training's labeled batch at every step, with its own terms on top; BCP trains on mixes
only (``plain_weight: 0``): on 8 toy images (two seeds), without pseudo-labels, mixes alone reach 0.66
tooth Dice, mixes with the plain term 0.72, plain supervised training 0.88; over four seeds BCP makes
0.844 against 0.875 in 100 steps and overtakes it by 150 (``Testing/train/test_ssl_methods_sound.py``).

Two guards ours, not BCP's (whose binary teacher is sound after its pretraining): a pseudo-label
voxel whose teacher confidence (the averaged softmax's maximum) is below ``pseudo_threshold`` is
ignored, and the pseudo-labelled terms count only once the teacher finds teeth on the labeled
images (:class:`~toothseg.train.methods.ramps.CompetenceGate`, ``gate_dice``): after a short
pretraining on 33 FDI classes the teacher is all background, and its pseudo-labels teach
background. The Dice of each paste region averages the classes present there (in its labels or
its arg-max), so a perfect prediction of a region that holds a few teeth costs 0.

M is 1 everywhere except one zero box whose side is ``s·size`` per axis at a random corner; ``s``
is 2/3, or, with ``dynamic_mask``, shrinks linearly to ``final_fraction`` (1/2 in 3D, 1/3 in 2D) over
the stage. Deviations from the public code: the box bounds follow the patch (the code hard-codes
112/80), the pseudo-label source averages the two teachers' logits as the extension does, and the
static teacher is refreshed every ``static_interval`` steps (the extension adapts the interval to
validation Dice, which couples the method to the validation loop; a fixed interval is used here).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ...core.errors import InputError
from ..losses import soft_dice_loss
from .base import STEPS, Method, StepOutput, ema_update, register_method
from .ramps import CompetenceGate, tooth_dice
from .supervised import IGNORE, supervised_loss

__all__ = ["paste_mask", "largest_component_per_class"]


def paste_mask(shape: tuple[int, ...], fraction: float, generator: torch.Generator) -> torch.Tensor:
    """(*spatial) float mask: ones with one zero box of ``fraction`` of each side at a random place."""
    mask = torch.ones(shape)
    box = []
    for size in shape:
        side = max(1, int(fraction * size))
        start = int(torch.randint(0, size - side + 1, (1,), generator=generator))
        box.append(slice(start, start + side))
    mask[tuple(box)] = 0
    return mask


def largest_component_per_class(labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Keep, per sample and class, only the largest connected component (BCP's pseudo-label cleaning);
    the rest becomes background, ``ignore_index`` voxels stay ignored."""
    out = torch.zeros_like(labels)
    array = labels.cpu().numpy()
    for b in range(array.shape[0]):
        for value in np.unique(array[b]):
            if value == 0 or value == ignore_index:
                continue
            components, count = ndimage.label(array[b] == value)
            if count == 0:
                continue
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            keep = torch.from_numpy(components == sizes.argmax())
            out[b][keep] = int(value)
    out[labels.cpu() == ignore_index] = ignore_index
    return out.to(labels.device)


def weighted_mix_loss(logits: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``(masked Dice + masked CE) / 2`` over ``region`` (B, *spatial; 0/1), one term of BCP's ``mix_loss``.

    Both parts are normalised by the region, so scaling ``region`` changes nothing: a term's weight
    (BCP's ``u_weight``) multiplies the returned loss, as BCP's ``mix_loss`` does. The Dice sums over the
    batch (as BCP's ``DiceLoss``) and averages the classes present in the region (background included, as
    BCP's); ``IGNORE`` voxels count nowhere.
    """
    valid = region * (target != IGNORE).to(region.dtype)
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none", ignore_index=IGNORE)
    ce = (ce * valid).sum() / valid.sum().clamp_min(1e-6)
    dice = soft_dice_loss(logits, target, include_background=True, ignore_index=IGNORE, weight=region)
    return (ce + dice) / 2


@dataclass
class BCPSettings:
    fraction: float = 2.0 / 3.0
    dynamic_mask: bool = True
    final_fraction: float | None = None  # default: 1/2 in 3D, 1/3 in 2D
    u_weight: float = 0.5
    ema_decay: float = 0.99
    dual_teacher: bool = True
    static_interval: int = field(default=1000, metadata=STEPS)
    pseudo_threshold: float = 0.9  # pseudo-label voxels with a lower teacher confidence are ignored
    # the pseudo-labelled terms count once the teacher's labeled-batch tooth Dice passes this (0.6: at 0.3 the
    # toy's pseudo-labels cost 0.14 Dice, at 0.6 with the 0.9 threshold they cost nothing; see the tests)
    gate_dice: float = 0.6
    plain_weight: float = 1.0  # weight of plain supervised training on the unmixed labeled batch (0: BCP's own)


class _BCPBase(Method):
    Settings = BCPSettings
    # each labeled image of the batch gets a plain supervised pass (plain_weight > 0); the copy-paste mixes of
    # those images come on top (with plain_weight 0, BCP's own objective, a pair of labeled images makes one
    # fully or two half labeled mixed images: 0.5 passes per image, so twice the batch gives the same budget)
    labeled_passes_per_image = 1.0

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.generator = torch.Generator().manual_seed(context.seed + 29)

    def mask_fraction(self, step: int) -> float:
        s = self.settings
        if not s.dynamic_mask:
            return s.fraction
        final = s.final_fraction if s.final_fraction is not None else (0.5 if self.context.spatial_dims == 3 else 1 / 3)
        progress = min(1.0, step / max(1, self.context.total_iterations))
        return s.fraction - progress * (s.fraction - final)

    def _mask(self, image: torch.Tensor, step: int) -> torch.Tensor:
        return paste_mask(tuple(image.shape[2:]), self.mask_fraction(step), self.generator).to(image.device)


@register_method("bcp_pretrain")
class BCPPretrain(_BCPBase):
    """BCP stage 1: copy-paste between labeled images."""

    def train_step(self, batch, step):
        image, label = batch["image"], batch["label"]
        half = image.shape[0] // 2
        if half == 0:
            raise InputError("bcp_pretrain needs at least 2 labeled images per step (batch_size >= 2)")
        m = self._mask(image, step)
        xa, xb, ya, yb = image[:half], image[half:2 * half], label[:half], label[half:2 * half]
        mixed = xa * m + xb * (1 - m)
        target = torch.where(m.bool(), ya, yb)
        loss = weighted_mix_loss(self.main_output(self.nets["student"](mixed)), target,
                                 torch.ones_like(target, dtype=torch.float))
        terms = {"supervised": loss}
        if self.settings.plain_weight > 0:
            terms["plain"] = self.settings.plain_weight * supervised_loss(self.nets["student"](image), label)
        return StepOutput(sum(terms.values()), terms)


@register_method("bcp")
class BCP(_BCPBase):
    """BCP stage 2: bidirectional copy-paste self-training with EMA (+ static) teacher."""

    needs_unlabeled = True

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.gate = CompetenceGate(settings.gate_dice, ("teacher",))

    def build_networks(self):
        student = self.context.build_network()
        nets = {"student": student, "teacher": copy.deepcopy(student)}
        if self.settings.dual_teacher:
            nets["static_teacher"] = copy.deepcopy(student)
        return nets

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (averaged with the static teacher's, as the extension does)."""
        logits = self.main_output(self.nets["teacher"](images)).float()
        if "static_teacher" in self.nets:
            logits = (logits + self.main_output(self.nets["static_teacher"](images)).float()) / 2
        return logits

    @torch.no_grad()
    def pseudo_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Arg-max, largest component per class, voxels under ``pseudo_threshold`` confidence ignored."""
        confidence, labels = torch.softmax(logits, dim=1).max(dim=1)
        labels = torch.where(confidence >= self.settings.pseudo_threshold, labels, torch.full_like(labels, IGNORE))
        return largest_component_per_class(labels)

    def train_step(self, batch, step):
        s = self.settings
        image, label, unlabeled = batch["image"], batch["label"], batch["unlabeled_image"]
        half = min(image.shape[0], unlabeled.shape[0]) // 2
        if half == 0:
            raise InputError("bcp needs at least 2 labeled and 2 unlabeled images per step")
        xa, xb, ya, yb = image[:half], image[half:2 * half], label[:half], label[half:2 * half]
        ua, ub = unlabeled[:half], unlabeled[half:2 * half]
        logits = self.teacher_logits(torch.cat([xa, xb, ua, ub]))
        self.gate.observe(step, teacher=tooth_dice(logits[:2 * half], torch.cat([ya, yb])))
        weight = s.u_weight * float(self.gate.opened_at is not None)
        pseudo = self.pseudo_labels(logits[2 * half:])
        pa, pb = pseudo[:half], pseudo[half:]
        m = self._mask(image, step)
        inside = m.bool().expand_as(ya)
        x_l = xa * m + ua * (1 - m)
        y_l = torch.where(inside, ya, pa)
        x_u = ub * m + xb * (1 - m)
        y_u = torch.where(inside, pb, yb)
        student = self.nets["student"]
        out_l = self.main_output(student(x_l))
        out_u = self.main_output(student(x_u))
        inside_region = torch.ones_like(ya, dtype=torch.float) * m
        outside_region = 1 - inside_region
        supervised = weighted_mix_loss(out_l, y_l, inside_region) + weighted_mix_loss(out_u, y_u, outside_region)
        pseudo_term = weight * (weighted_mix_loss(out_l, y_l, outside_region)
                                + weighted_mix_loss(out_u, y_u, inside_region))
        terms = {"supervised": supervised, "pseudo": pseudo_term}
        if s.plain_weight > 0:
            terms["plain"] = s.plain_weight * supervised_loss(student(image), label)
        logs = {"mask_fraction": self.mask_fraction(step), "w_pseudo": weight,
                "pseudo_ignored": float((pseudo == IGNORE).float().mean()), **self.gate.logs()}
        return StepOutput(sum(terms.values()), terms, unsupervised=("pseudo",), logs=logs)

    def probe_pseudo_labels(self, images):
        """The teachers' labels as the copy-paste uses them: confident voxels, largest component per class."""
        labels = self.pseudo_labels(self.teacher_logits(images))
        used = labels != IGNORE
        return torch.where(used, labels, torch.zeros_like(labels)), used

    def ema_teachers_at(self, step: int) -> tuple[str, ...]:
        return ("teacher",)

    def after_step(self, step):
        ema_update(self.nets["teacher"], self.nets["student"], self.settings.ema_decay)
        if "static_teacher" in self.nets and (step + 1) % max(1, self.settings.static_interval) == 0:
            self.nets["static_teacher"].load_state_dict(self.nets["student"].state_dict())

    def state_dict(self):
        return {"gate": self.gate.state_dict()}

    def load_state_dict(self, state):
        self.gate.load_state_dict(state.get("gate") or {})
