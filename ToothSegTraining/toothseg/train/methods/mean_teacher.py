"""Mean teacher: an EMA teacher's prediction on the clean view supervises the student's prediction
on a perturbed view of unlabeled data (Tarvainen & Valpola).

* The consistency is ``½ Σ_c (p_student − p_teacher)²`` per voxel (summed over classes; a mean over 33
  FDI classes made it about 16 times weaker than the binary settings its weight comes from).
* The student's view is perturbed strongly enough to disagree with the teacher's: the intensity
  transforms of :func:`~toothseg.train.data.augment.strong_augment` (blur, noise, brightness, contrast,
  low resolution, gamma, blank rectangles; no spatial change, so the two views stay aligned), plus
  Gaussian input noise.
* The teacher keeps the paper's EMA decay (0.99; 0.999 later in long runs) in steps, whatever the
  schedule's length.
* The weight ramps up (sigmoid, ``rampup_steps``) once the student and the teacher find teeth on the
  labeled batches (:class:`~toothseg.train.methods.ramps.CompetenceGate`, ``gate_dice``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from ..data.augment import strong_augment
from ..losses import consistency_mse
from .base import RAMP, Method, StepOutput, ema_update, register_method, unwrap
from .ramps import CompetenceGate, sigmoid_rampup, tooth_dice
from .supervised import supervised_loss

__all__ = ["MeanTeacher", "sigmoid_rampup"]


@dataclass
class MeanTeacherSettings:
    consistency_weight: float = 1.0
    rampup_steps: int = field(default=800, metadata=RAMP)  # sigmoid ramp length in steps, from the gate's opening
    gate_dice: float = 0.3  # the ramp starts when student and teacher reach this labeled-batch tooth Dice
    ema_decay: float = 0.99
    noise_std: float = 0.1  # input noise of the student's view (on top of the strong view)
    strong_view: bool = True  # the student sees strong_augment's intensity transforms


@register_method("mean_teacher")
class MeanTeacher(Method):
    Settings = MeanTeacherSettings
    needs_unlabeled = True
    trainable = ("student",)
    exported = "student"

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.gate = CompetenceGate(settings.gate_dice, ("student", "teacher"))
        self.generator = torch.Generator().manual_seed(context.seed + 53)

    def build_networks(self):
        student = self.context.build_network()
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad_(False)
        return {"student": student, "teacher": teacher}

    def consistency_weight(self, step: int) -> float:
        return self.settings.consistency_weight * self.gate.ramp(step, self.settings.rampup_steps)

    def student_view(self, unlabeled: torch.Tensor) -> torch.Tensor:
        view = strong_augment(unlabeled, self.generator) if self.settings.strong_view else unlabeled
        noise = torch.randn(view.shape, generator=self.generator).to(view) * self.settings.noise_std
        return view + noise

    def train_step(self, batch, step):
        student, teacher = self.nets["student"], self.nets["teacher"]
        labeled, label = batch["image"], batch["label"]
        output = student(labeled)
        supervised = supervised_loss(output, label)
        consistency = supervised.new_zeros(())
        logs: dict[str, float] = {}
        if self.settings.consistency_weight > 0:  # weight 0: supervised training, bit for bit
            unlabeled = batch["unlabeled_image"]
            n_l = labeled.shape[0]
            with torch.no_grad():
                teacher_logits = self.main_output(teacher(torch.cat([labeled, unlabeled]))).float()
            self.gate.observe(step, student=tooth_dice(self.main_output(output).detach(), label),
                              teacher=tooth_dice(teacher_logits[:n_l], label))
            weight = self.consistency_weight(step)
            if weight > 0:  # before the gate opens the unlabeled images cost nothing
                target = torch.softmax(teacher_logits[n_l:], dim=1)
                student_logits = self.main_output(student(self.student_view(unlabeled)))
                consistency = weight * consistency_mse(student_logits, target)
            logs = {"w_cons": weight, **self.gate.logs()}
        return StepOutput(supervised + consistency, {"supervised": supervised, "consistency": consistency},
                          unsupervised=("consistency",), logs=logs)

    def probe_pseudo_labels(self, images):
        """The teacher's arg-max; its soft targets weigh every voxel."""
        return self.main_output(unwrap(self.nets["teacher"])(images)).argmax(1), None

    def ema_teachers_at(self, step):
        return ("teacher",)

    def after_step(self, step):
        decay = min(1.0 - 1.0 / (step + 2), self.settings.ema_decay)
        ema_update(self.nets["teacher"], self.nets["student"], decay)

    def state_dict(self):
        return {"gate": self.gate.state_dict()}

    def load_state_dict(self, state):
        self.gate.load_state_dict(state.get("gate") or {})
