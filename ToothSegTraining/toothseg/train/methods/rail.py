"""RAIL: region-aware instructive learning (seed 000; methods.md §1) — two groups of two students
(a type-A and a type-B network each) with one EMA teacher per group.

The groups take turns every ``group_steps`` steps (the PMT-style alternation; only the active group's
students are updated, the other group still votes). Per step of group g:

* **first turn** of a group: ``CE + Dice + w_T·MSE_U(p_s, sharp(p_T))`` for both its students;
* afterwards, all four students predict; the **best student** k* has the lowest Dice loss on the
  labeled part. **Disagreement-Focused Supervision**: ``CE + Dice + α·mean_M((p − y)²) +
  β·mean_{M∧err}(−mean_c log_softmax(logits))`` where M is where the student disagrees with k* (or
  with its group partner when it is k* itself, or everywhere for k*'s own MSE term) and
  ``err = prediction ≠ label``. **Confidence-Aware Learning** on unlabeled data for students other
  than k*: ``w_C·[MSE(p_s, sharp(p_k*)) + 0.1·mean_D(−mean_c log_softmax(logits_s))]`` with D the
  disagreement with k*. Plus the teacher term ``w_T·MSE_U(p_s, sharp(p_T))`` for both students.
* after the step, teacher g ← EMA of group g's type-A student (``min(1 − 1/(t+1), 0.999)``,
  parameters only, as RAIL).

Fixes of the public code (methods.md §1.10): R1 — ``err`` uses the real label (the code compares
with the arg-max index of the label along W); R2 — the KL term is the SDCL entropy term over the
class axis (the code applies softmax over a spatial axis); R3 — log-softmax of logits, not of
probabilities. Ramps: ``w_C = 20·r``, ``w_T = 10·r`` with RAIL's sigmoid ramp reaching full weight at
``rampup_fraction`` (3000/8000) of the stage. Multi-class labels generalise "foreground XOR" to
"different class". The exported model is the four-student ensemble (mean softmax).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..losses import dice_ce_loss, masked_mean, sharpen, soft_dice_loss
from .base import EMA_DECAY, STEPS, Method, StepOutput, ema_update, register_method
from .mean_teacher import sigmoid_rampup

STUDENTS = ("g1_a", "g1_b", "g2_a", "g2_b")


@dataclass
class RAILSettings:
    student_b_architecture: str = "auto"  # type-B student: auto = resvnet in 3D, the recipe's in 2D; or a name
    group_steps: int = field(default=100, metadata=STEPS)
    alpha: float = 0.5
    beta: float = 0.05
    consistency_weight: float = 20.0
    teacher_weight: float = 10.0
    rampup_fraction: float = 0.375
    temperature: float = 0.1
    ema_decay: float = field(default=0.999, metadata=EMA_DECAY)


@register_method("rail")
class RAIL(Method):
    Settings = RAILSettings
    needs_unlabeled = True
    trainable = STUDENTS
    exported = "g1_a"
    ensemble = STUDENTS

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.group_iterations = [0, 0]

    def active_trainable(self, step: int) -> tuple[str, ...]:
        group = self.active_group(step) + 1
        return (f"g{group}_a", f"g{group}_b")

    def student_b(self) -> str:
        choice = self.settings.student_b_architecture
        if choice == "auto":
            return "resvnet" if self.context.spatial_dims == 3 else "same"
        return choice

    def member_architecture(self, name: str) -> tuple[str, dict] | None:
        """The type-B students may use another architecture than the recipe's."""
        if name.endswith("_b") and self.student_b() != "same":
            return self.student_b(), {}
        return None

    def build_networks(self):
        nets = {}
        for group in ("g1", "g2"):
            a = self.context.build_network()
            if self.student_b() == "same":
                b = self.context.build_network()
            else:
                from ...core.models import build_network

                b = build_network(self.student_b(), num_classes=self.context.num_classes,
                                  spatial_dims=self.context.spatial_dims)
            nets[f"{group}_a"], nets[f"{group}_b"] = a, b
        nets["teacher_1"] = copy.deepcopy(nets["g1_a"])
        nets["teacher_2"] = copy.deepcopy(nets["g2_a"])
        return nets

    def optimizer_groups(self) -> list[list[str]]:
        return [[name] for name in STUDENTS]  # one optimiser per student, as RAIL

    def active_group(self, step: int) -> int:
        return (step // max(1, self.settings.group_steps)) % 2

    def _weights(self, group: int) -> tuple[float, float]:
        s = self.settings
        ramp = sigmoid_rampup(self.group_iterations[group], s.rampup_fraction * self.context.total_iterations / 2)
        return s.consistency_weight * ramp, s.teacher_weight * ramp

    def train_step(self, batch, step):
        s = self.settings
        group = self.active_group(step)
        names = (f"g{group + 1}_a", f"g{group + 1}_b")
        teacher = self.nets[f"teacher_{group + 1}"]
        x_l, y = batch["image"], batch["label"]
        x_u = batch["unlabeled_image"]
        n_l = x_l.shape[0]
        x = torch.cat([x_l, x_u])
        w_c, w_t = self._weights(group)
        with torch.no_grad():
            teacher_target = sharpen(torch.softmax(self.main_output(teacher(x_u)).float(), 1), s.temperature)
        logits = {}
        for name in STUDENTS:
            if name in names:
                logits[name] = self.main_output(self.nets[name](x)).float()
            else:
                with torch.no_grad():
                    logits[name] = self.main_output(self.nets[name](x)).float()
        terms = {"supervised": x.new_zeros(()), "disagreement": x.new_zeros(()), "cal": x.new_zeros(()),
                 "teacher": x.new_zeros(())}
        first_turn = step < 2 * s.group_steps
        if first_turn:
            for name in names:
                terms["supervised"] = terms["supervised"] + dice_ce_loss(logits[name][:n_l], y)
                student = torch.softmax(logits[name][n_l:], 1)
                terms["teacher"] = terms["teacher"] + w_t * F.mse_loss(student, teacher_target)
            return self._output(terms)
        dice = {n: float(soft_dice_loss(logits[n][:n_l].detach(), y)) for n in STUDENTS}
        best = min(dice, key=dice.get)
        pred = {n: logits[n].detach().argmax(1) for n in STUDENTS}
        classes = logits[names[0]].shape[1]
        onehot = F.one_hot(y, classes).movedim(-1, 1).float()
        for name in names:
            partner = names[1] if name == names[0] else names[0]
            own = logits[name]
            probs_l = torch.softmax(own[:n_l], 1)
            err = pred[name][:n_l] != y  # R1 fixed: against the real label
            if best == name:
                region = torch.ones_like(err)
                kl_region = err
            else:
                other = best if best not in names else partner
                region = pred[name][:n_l] != pred[other][:n_l]
                kl_region = region & err
            mse = masked_mean(((probs_l - onehot) ** 2).mean(1, keepdim=True), region)
            entropy = -torch.log_softmax(own[:n_l], 1).mean(1, keepdim=True)  # R2/R3: SDCL's term over classes
            terms["supervised"] = terms["supervised"] + dice_ce_loss(own[:n_l], y)
            terms["disagreement"] = terms["disagreement"] + s.alpha * mse + s.beta * masked_mean(entropy, kl_region)
            if name != best:
                target = sharpen(torch.softmax(logits[best][n_l:], 1), s.temperature)
                cons = F.mse_loss(torch.softmax(own[n_l:], 1), target)
                disagree = pred[name][n_l:] != pred[best][n_l:]
                uniform = masked_mean(-torch.log_softmax(own[n_l:], 1).mean(1, keepdim=True), disagree)
                terms["cal"] = terms["cal"] + w_c * (cons + 0.1 * uniform)
            terms["teacher"] = terms["teacher"] + w_t * F.mse_loss(torch.softmax(own[n_l:], 1), teacher_target)
        output = self._output(terms)
        output.logs["best_student"] = float(STUDENTS.index(best))
        return output

    @staticmethod
    def _output(terms: dict[str, torch.Tensor]) -> StepOutput:
        out = StepOutput(sum(terms.values()), terms, unsupervised=("cal", "teacher"))
        return out

    def ema_teachers_at(self, step: int) -> tuple[str, ...]:
        return (f"teacher_{self.active_group(step) + 1}",)

    def after_step(self, step):
        group = self.active_group(step)
        t = self.group_iterations[group]
        decay = min(1.0 - 1.0 / (t + 1), self.settings.ema_decay)
        ema_update(self.nets[f"teacher_{group + 1}"], self.nets[f"g{group + 1}_a"], decay, buffers=False)
        self.group_iterations[group] += 1

    def state_dict(self):
        return {"group_iterations": list(self.group_iterations)}

    def load_state_dict(self, state):
        self.group_iterations = list(state.get("group_iterations", [0, 0]))
