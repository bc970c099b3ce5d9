"""RAIL: region-aware instructive learning (seed 000; methods.md §1) — two groups of two students
(a type-A and a type-B network each) with one EMA teacher per group.

Both groups train on every batch, as RAIL's public code has each group train on every batch of its
buffer (methods.md §1.3): all four students update at every step, each with its own optimiser, so
each sees the same labeled images as a supervised network would. Labeled and unlabeled images go
through separate forward passes (RAIL concatenates them): a student's labeled pass is then exactly a
supervised network's, and with every unlabeled weight at 0 RAIL is supervised training of four
networks, bit for bit. Per step:

* during the **first turn** (the first ``group_steps`` steps, RAIL's first pass over the data):
  ``CE + Dice + w_T·MSE_U(p_s, sharp(p_T))`` for every student;
* afterwards the **best student** k* has the lowest Dice loss on the labeled part.
  **Disagreement-Focused Supervision**: ``CE + Dice + α·mean_M(½Σ_c (p − y)²) + β·mean_{M∧err}(H2)`` where
  M is where the student disagrees with k* (or with its group partner when it is k* itself, or
  everywhere for k*'s own MSE term), ``err = prediction ≠ label``, and H2 is SDCL's entropy term over the
  two classes in dispute there (the student's and the label's). **Confidence-Aware Learning** on
  unlabeled data for students other than k*: ``w_C·[½Σ_c MSE(p_s, sharp(p_k*)) + 0.1·Σ_D H2 / |U|]``
  with D the disagreement with k* and H2 over the student's and k*'s classes. Plus the teacher term
  ``w_T·½Σ_c MSE_U(p_s, sharp(p_T))`` for every student.
* after the step, each teacher ← EMA of its group's type-A student (``min(1 − 1/(t+1), 0.999)``,
  parameters only, as RAIL).

Multi-class arithmetic (RAIL is binary; methods.md §1.10 for the fixes R1–R3 of its code):

* the squared errors are **summed** over classes and halved (``½Σ_c``): for two classes this is exactly
  RAIL's mean over both channels; a mean over 33 FDI classes made them about 16 times weaker;
* the entropy terms ("push disputed voxels towards uncertainty") act on the **two classes in dispute**:
  ``H2 = −½(log q_a + log q_b)`` with q the softmax of those two logits. For two classes this is SDCL's
  ``−mean_c log_softmax(logits)``; over all 33 classes it would be a full entropy maximiser, whose
  floor (ln 33) and gradient dwarf the supervised loss;
* CAL's entropy term is normalised by **all unlabeled voxels**, not by the disputed ones: disputed
  voxels are then a share of the term, as their consistency MSE is, rather than each carrying the
  weight of the whole image. (RAIL's code, with a double softmax, gives this term almost no gradient.)

Ramps: ``w_C = 20·r``, ``w_T = 10·r`` with RAIL's sigmoid ramp over ``rampup_steps`` (3000, per group
as RAIL), ``w_C``'s from the step the students become competent, ``w_T``'s from the step the teachers
do too (:class:`~toothseg.train.methods.ramps.CompetenceGate`): an EMA teacher lags its student by its
horizon, and a term of weight 10 towards a sharpened teacher that finds no tooth yet teaches background.
The exported model is the four-student ensemble (mean softmax).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...core.networks import build_network
from ..losses import class_sum_mse, masked_mean, sharpen, soft_dice_loss
from .base import RAMP, STEPS, Method, StepOutput, ema_update, register_method
from .ramps import CompetenceGate, tooth_dice
from .supervised import supervised_loss

STUDENTS = ("g1_a", "g1_b", "g2_a", "g2_b")


@dataclass
class RAILSettings:
    student_b_architecture: str = "auto"  # type-B student: auto = resvnet in 3D, the recipe's in 2D; or a name
    group_steps: int = field(default=100, metadata=STEPS)  # length of the first turn (RAIL's first pass)
    alpha: float = 0.5
    beta: float = 0.05
    consistency_weight: float = 20.0
    teacher_weight: float = 10.0
    rampup_steps: int = field(default=3000, metadata=RAMP)  # RAIL's ramp: full weight 3000 steps after it starts
    # the ramps start when the students' (and, for w_T, the teachers') labeled-batch tooth Dice passes this:
    # higher than the other methods' 0.3, since RAIL's targets are sharpened (T = 0.1), hard pseudo-labels at
    # weights 20 and 10 (with 0.3 its students collapsed to Dice 0.24 on the toy problem of the tests)
    gate_dice: float = 0.5
    temperature: float = 0.1
    ema_decay: float = 0.999


def disputed_entropy(logits: torch.Tensor, class_a: torch.Tensor, class_b: torch.Tensor) -> torch.Tensor:
    """``−½(log q_a + log q_b)`` per voxel, q the softmax over the two logits of classes ``a`` and ``b``
    ((B, C, *spatial) logits, (B, *spatial) class indices). For two classes in all: SDCL's
    ``−mean_c log_softmax(logits)``."""
    pair = torch.stack([logits.gather(1, class_a[:, None])[:, 0], logits.gather(1, class_b[:, None])[:, 0]], dim=1)
    return -torch.log_softmax(pair, dim=1).mean(dim=1)


@register_method("rail")
class RAIL(Method):
    Settings = RAILSettings
    needs_unlabeled = True
    trainable = STUDENTS
    exported = "g1_a"
    ensemble = STUDENTS

    def __init__(self, settings, context):
        super().__init__(settings, context)
        self.gate = CompetenceGate(settings.gate_dice, STUDENTS)
        # the teacher term waits for the teachers too: an EMA teacher lags its student by its horizon
        self.teacher_gate = CompetenceGate(settings.gate_dice, ("teacher_1", "teacher_2"))

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
                b = build_network(self.student_b(), num_classes=self.context.num_classes,
                                  spatial_dims=self.context.spatial_dims)
            nets[f"{group}_a"], nets[f"{group}_b"] = a, b
        nets["teacher_1"] = copy.deepcopy(nets["g1_a"])
        nets["teacher_2"] = copy.deepcopy(nets["g2_a"])
        return nets

    def optimizer_groups(self) -> list[list[str]]:
        return [[name] for name in STUDENTS]  # one optimiser per student, as RAIL

    def weights(self, step: int) -> tuple[float, float]:
        """(w_C, w_T) at ``step``: RAIL's ramp from the students' gate (w_C) and the teachers' (w_T)."""
        s = self.settings
        return (s.consistency_weight * self.gate.ramp(step, s.rampup_steps),
                s.teacher_weight * self.teacher_gate.ramp(step, s.rampup_steps))

    def train_step(self, batch, step):
        s = self.settings
        x_l, y = batch["image"], batch["label"]
        x_u = batch["unlabeled_image"]
        # labeled and unlabeled images go through separate forward passes: the labeled one is then the
        # supervised network's own (batch-norm statistics of labeled images only), and with every
        # unlabeled weight at 0 the unlabeled images cost nothing
        raw = {name: self.nets[name](x_l) for name in STUDENTS}  # with deep-supervision outputs, if any
        labeled = {name: self.main_output(out).float() for name, out in raw.items()}
        self.gate.observe(step, **{n: tooth_dice(labeled[n].detach(), y) for n in STUDENTS})
        if s.teacher_weight > 0 and self.teacher_gate.opened_at is None:
            with torch.no_grad():
                self.teacher_gate.observe(step, **{
                    f"teacher_{g}": tooth_dice(self.main_output(self.nets[f"teacher_{g}"](x_l)).float(), y)
                    for g in (1, 2)})
        w_c, w_t = self.weights(step)
        unlabeled = {name: self.main_output(self.nets[name](x_u)).float() for name in STUDENTS} if (
            w_c > 0 or w_t > 0) else {}
        teacher_targets = {}
        if w_t > 0:
            with torch.no_grad():
                for group in (1, 2):
                    probs = torch.softmax(self.main_output(self.nets[f"teacher_{group}"](x_u)).float(), 1)
                    teacher_targets[group] = sharpen(probs, s.temperature)
        zero = x_l.new_zeros(())
        terms = {"supervised": zero, "disagreement": zero, "cal": zero, "teacher": zero}

        def teacher_term(name: str) -> torch.Tensor:
            if w_t <= 0:
                return zero
            target = teacher_targets[1 if name.startswith("g1") else 2]
            return w_t * class_sum_mse(torch.softmax(unlabeled[name], 1), target)

        if step < s.group_steps:  # the first turn: supervised and teacher terms only
            for name in STUDENTS:
                terms["supervised"] = terms["supervised"] + supervised_loss(raw[name], y)
                terms["teacher"] = terms["teacher"] + teacher_term(name)
            return self._output(terms, {**self.gate.logs(), **self.teacher_gate.logs()})
        dice = {n: float(soft_dice_loss(labeled[n].detach(), y)) for n in STUDENTS}
        best = min(dice, key=dice.get)
        pred = {n: labeled[n].detach().argmax(1) for n in STUDENTS}
        pred_u = {n: unlabeled[n].detach().argmax(1) for n in unlabeled}
        classes = labeled[STUDENTS[0]].shape[1]
        onehot = F.one_hot(y, classes).movedim(-1, 1).float()
        for name in STUDENTS:
            partner = name[:-1] + ("b" if name.endswith("a") else "a")
            own = labeled[name]
            err = pred[name] != y  # R1 fixed: against the real label
            if best == name:
                region = torch.ones_like(err)
                kl_region = err
            else:
                other = partner if best == partner else best
                region = pred[name] != pred[other]
                kl_region = region & err
            terms["supervised"] = terms["supervised"] + supervised_loss(raw[name], y)
            if s.alpha > 0 or s.beta > 0:
                mse = class_sum_mse(torch.softmax(own, 1), onehot, region)
                entropy = disputed_entropy(own, pred[name], y)  # R2/R3: over classes, of logits
                terms["disagreement"] = (terms["disagreement"] + s.alpha * mse
                                         + s.beta * masked_mean(entropy, kl_region))
            if name != best and w_c > 0:
                target = sharpen(torch.softmax(unlabeled[best].detach(), 1), s.temperature)
                cons = class_sum_mse(torch.softmax(unlabeled[name], 1), target)
                disagree = (pred_u[name] != pred_u[best]).float()
                uniform = (disputed_entropy(unlabeled[name], pred_u[name], pred_u[best]) * disagree).mean()
                terms["cal"] = terms["cal"] + w_c * (cons + 0.1 * uniform)
            terms["teacher"] = terms["teacher"] + teacher_term(name)
        logs = {**self.gate.logs(), **self.teacher_gate.logs(), "best_student": float(STUDENTS.index(best))}
        return self._output(terms, logs)

    @staticmethod
    def _output(terms: dict[str, torch.Tensor], logs: dict[str, float]) -> StepOutput:
        return StepOutput(sum(terms.values()), terms, unsupervised=("cal", "teacher"), logs=logs)

    def ema_teachers_at(self, step: int) -> tuple[str, ...]:
        return ("teacher_1", "teacher_2")

    def after_step(self, step):
        decay = min(1.0 - 1.0 / (step + 1), self.settings.ema_decay)
        for group in (1, 2):
            ema_update(self.nets[f"teacher_{group}"], self.nets[f"g{group}_a"], decay, buffers=False)

    def state_dict(self):
        return {"gate": self.gate.state_dict(), "teacher_gate": self.teacher_gate.state_dict()}

    def load_state_dict(self, state):
        self.gate.load_state_dict(state.get("gate") or {})
        self.teacher_gate.load_state_dict(state.get("teacher_gate") or {})
