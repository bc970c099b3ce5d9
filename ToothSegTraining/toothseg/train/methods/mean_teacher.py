"""Mean teacher: an EMA teacher's prediction on a perturbed view supervises the student on
unlabeled data, with a sigmoid ramp-up of the consistency weight (Tarvainen & Valpola).

The base other methods reuse: ``ModelEMA``-style teacher update (parameters and buffers, in place),
ramp-up, consistency loss. The teacher sees the clean batch, the student a noisy one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from ..losses import consistency_mse
from .base import EMA_DECAY, Method, StepOutput, ema_update, register_method
from .supervised import supervised_loss


def sigmoid_rampup(step: float, length: float) -> float:
    """``exp(−5 (1 − clip(step/length))²)`` (Laine & Aila)."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(step, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


@dataclass
class MeanTeacherSettings:
    consistency_weight: float = 1.0
    rampup_fraction: float = 0.2  # of the stage's iterations
    ema_decay: float = field(default=0.99, metadata=EMA_DECAY)
    noise_std: float = 0.1  # input noise of the student's view


@register_method("mean_teacher")
class MeanTeacher(Method):
    Settings = MeanTeacherSettings
    needs_unlabeled = True
    trainable = ("student",)
    exported = "student"

    def build_networks(self):
        student = self.context.build_network()
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad_(False)
        return {"student": student, "teacher": teacher}

    def consistency_weight(self, step: int) -> float:
        s = self.settings
        return s.consistency_weight * sigmoid_rampup(step, s.rampup_fraction * self.context.total_iterations)

    def train_step(self, batch, step):
        s = self.settings
        student, teacher = self.nets["student"], self.nets["teacher"]
        labeled = batch["image"]
        supervised = supervised_loss(student(labeled), batch["label"])
        unlabeled = batch["unlabeled_image"]
        with torch.no_grad():
            target = torch.softmax(self.main_output(teacher(unlabeled)).float(), dim=1)
        noisy = unlabeled + torch.randn_like(unlabeled) * s.noise_std
        consistency = self.consistency_weight(step) * consistency_mse(self.main_output(student(noisy)), target)
        return StepOutput(supervised + consistency, {"supervised": supervised, "consistency": consistency},
                          unsupervised=("consistency",), logs={"w_cons": self.consistency_weight(step)})

    def ema_teachers_at(self, step):
        return ("teacher",)

    def after_step(self, step):
        decay = min(1.0 - 1.0 / (step + 2), self.settings.ema_decay)
        ema_update(self.nets["teacher"], self.nets["student"], decay)
