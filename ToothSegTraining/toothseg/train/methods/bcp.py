"""Bidirectional copy-paste (BCP, Bai et al.) with the extension of Hsu & Hua (seed 003):
a shrinking ("dynamic") paste region and a dual teacher (EMA + periodically refreshed static copy).
Edge guidance is an option of the architecture (``model.kwargs.edge_guided: true``).

Two stages (two recipe stages):

* ``bcp_pretrain`` — labeled only: ``x = x_a⊙M + x_b⊙(1−M)``, the same mix of labels, Dice + CE.
* ``bcp`` — self-training: pseudo-labels of the unlabeled pair from the teacher(s) (largest connected
  component per class); ``X_l = x_a⊙M + u_a⊙(1−M)`` and ``X_u = u_b⊙M + x_b⊙(1−M)``; each mixed image
  is supervised by the true labels on its labeled part (weight 1) and by pseudo-labels on its
  unlabeled part (weight ``u_weight`` = 0.5).

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

from .base import EMA_DECAY, STEPS, Method, StepOutput, ema_update, register_method

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


def largest_component_per_class(labels: torch.Tensor) -> torch.Tensor:
    """Keep, per sample and class, only the largest connected component (BCP's pseudo-label cleaning)."""
    out = torch.zeros_like(labels)
    array = labels.cpu().numpy()
    for b in range(array.shape[0]):
        for value in np.unique(array[b]):
            if value == 0:
                continue
            components, count = ndimage.label(array[b] == value)
            if count == 0:
                continue
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            keep = torch.from_numpy(components == sizes.argmax())
            out[b][keep] = int(value)
    return out.to(labels.device)


def weighted_mix_loss(logits: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``(masked Dice + masked CE) / 2`` over ``region`` (B, *spatial; 0/1), one term of BCP's ``mix_loss``.

    Both parts are normalised by the region, so scaling ``region`` changes nothing: a term's weight
    (BCP's ``u_weight``) multiplies the returned loss, as BCP's ``mix_loss`` does.
    """
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    ce = (ce * region).sum() / region.sum().clamp_min(1e-6)
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).float()
    w = region[:, None]
    dims = tuple(range(2, probs.dim()))
    dice = (2 * (probs * onehot * w).sum(dims) + 1e-5) / ((probs * w).sum(dims) + (onehot * w).sum(dims) + 1e-5)
    return (ce + (1 - dice.mean())) / 2


@dataclass
class BCPSettings:
    fraction: float = 2.0 / 3.0
    dynamic_mask: bool = True
    final_fraction: float | None = None  # default: 1/2 in 3D, 1/3 in 2D
    u_weight: float = 0.5
    ema_decay: float = field(default=0.99, metadata=EMA_DECAY)
    dual_teacher: bool = True
    static_interval: int = field(default=1000, metadata=STEPS)


class _BCPBase(Method):
    Settings = BCPSettings

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
            from ...core.errors import InputError

            raise InputError("bcp_pretrain needs at least 2 labeled images per step (batch_size >= 2)")
        m = self._mask(image, step)
        xa, xb, ya, yb = image[:half], image[half:2 * half], label[:half], label[half:2 * half]
        mixed = xa * m + xb * (1 - m)
        target = torch.where(m.bool(), ya, yb)
        loss = weighted_mix_loss(self.main_output(self.nets["student"](mixed)), target,
                                 torch.ones_like(target, dtype=torch.float))
        return StepOutput(loss, {"supervised": loss})


@register_method("bcp")
class BCP(_BCPBase):
    """BCP stage 2: bidirectional copy-paste self-training with EMA (+ static) teacher."""

    needs_unlabeled = True

    def build_networks(self):
        student = self.context.build_network()
        nets = {"student": student, "teacher": copy.deepcopy(student)}
        if self.settings.dual_teacher:
            nets["static_teacher"] = copy.deepcopy(student)
        return nets

    @torch.no_grad()
    def pseudo_labels(self, unlabeled: torch.Tensor) -> torch.Tensor:
        logits = self.main_output(self.nets["teacher"](unlabeled)).float()
        if "static_teacher" in self.nets:
            logits = (logits + self.main_output(self.nets["static_teacher"](unlabeled)).float()) / 2
        return largest_component_per_class(logits.argmax(dim=1))

    def train_step(self, batch, step):
        s = self.settings
        image, label, unlabeled = batch["image"], batch["label"], batch["unlabeled_image"]
        half = min(image.shape[0], unlabeled.shape[0]) // 2
        if half == 0:
            from ...core.errors import InputError

            raise InputError("bcp needs at least 2 labeled and 2 unlabeled images per step")
        xa, xb, ya, yb = image[:half], image[half:2 * half], label[:half], label[half:2 * half]
        ua, ub = unlabeled[:half], unlabeled[half:2 * half]
        pseudo = self.pseudo_labels(torch.cat([ua, ub]))
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
        pseudo_term = s.u_weight * (weighted_mix_loss(out_l, y_l, outside_region)
                                    + weighted_mix_loss(out_u, y_u, inside_region))
        return StepOutput(supervised + pseudo_term, {"supervised": supervised, "pseudo": pseudo_term},
                          unsupervised=("pseudo",), logs={"mask_fraction": self.mask_fraction(step)})

    def ema_teachers_at(self, step: int) -> tuple[str, ...]:
        return ("teacher",)

    def after_step(self, step):
        ema_update(self.nets["teacher"], self.nets["student"], self.settings.ema_decay)
        if "static_teacher" in self.nets and (step + 1) % max(1, self.settings.static_interval) == 0:
            self.nets["static_teacher"].load_state_dict(self.nets["student"].state_dict())
