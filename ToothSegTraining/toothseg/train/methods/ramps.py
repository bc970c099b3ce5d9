"""When an unlabeled term may start to count: competence-gated ramp-ups.

A semi-supervised term is only as good as the predictions it is built from. The papers ramp their
weights up over a fixed number of steps from step 0, on schedules long enough that the network has
learnt something by then; on a shortened (CPU) schedule a ramp given as a fraction of the stage
reaches full weight before any tooth is found, and the term then teaches background. Here a ramp
keeps the paper's length in steps but starts once the network is competent: when an exponential
moving average of its tooth Dice on the labeled batches (and, for methods with a teacher, the
teacher's too) passes ``gate_dice``. ``gate_dice: 0`` starts it at step 0, as the papers do.
"""

from __future__ import annotations

import math

import torch

__all__ = ["sigmoid_rampup", "tooth_dice", "CompetenceGate"]


def sigmoid_rampup(step: float, length: float) -> float:
    """``exp(−5 (1 − clip(step/length))²)`` (Laine & Aila)."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(step, 0.0), length) / length
    return float(math.exp(-5.0 * phase * phase))


@torch.no_grad()
def tooth_dice(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> float:
    """Hard Dice of the arg-max over the non-background classes present in the target or the
    prediction, on the whole batch (B, C, *spatial) against (B, *spatial); 0 when there is none."""
    classes = logits.shape[1]
    predicted = logits.argmax(1)
    valid = target != ignore_index
    scores = []
    for c in range(1, classes):
        truth = (target == c) & valid
        guess = (predicted == c) & valid
        total = int(truth.sum()) + int(guess.sum())
        if total:
            scores.append(2.0 * int((truth & guess).sum()) / total)
    return float(sum(scores) / len(scores)) if scores else 0.0


class CompetenceGate:
    """Opens once the EMA of the observed Dice values (of each watched network) passes ``threshold``;
    ``ramp(step, length)`` is then the sigmoid ramp from the opening step, else 0."""

    def __init__(self, threshold: float, networks: tuple[str, ...] = ("student",), horizon: int = 20) -> None:
        self.threshold, self.networks, self.decay = threshold, networks, 1.0 - 1.0 / max(1, horizon)
        self.values: dict[str, float] = {}
        self.opened_at: int | None = None

    def observe(self, step: int, **dice: float) -> None:
        for name, value in dice.items():
            before = self.values.get(name)
            self.values[name] = value if before is None else self.decay * before + (1 - self.decay) * value
        if self.opened_at is None and (self.threshold <= 0 or (
                all(n in self.values for n in self.networks)
                and min(self.values[n] for n in self.networks) >= self.threshold)):
            self.opened_at = step

    def ramp(self, step: int, length: float) -> float:
        if self.opened_at is None:
            return 0.0
        return sigmoid_rampup(step - self.opened_at, length)

    def logs(self) -> dict[str, float]:
        out = {f"dice_{name}": round(value, 4) for name, value in self.values.items()}
        out["gate_open"] = float(self.opened_at is not None)
        return out

    def state_dict(self) -> dict:
        return {"values": dict(self.values), "opened_at": self.opened_at}

    def load_state_dict(self, state: dict) -> None:
        self.values = {str(k): float(v) for k, v in (state.get("values") or {}).items()}
        self.opened_at = state.get("opened_at")
