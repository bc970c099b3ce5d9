"""Overlap metrics per label, computed in one pass over the two label maps.

Empty-mask convention: a label absent from both maps is not scored; absent from one of them, its
Dice is 0.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["dice_per_label", "mean_dice", "confusion_counts", "best_instance_dice", "numbered_right_share"]


def confusion_counts(gt: np.ndarray, pred: np.ndarray, labels: Iterable[int]) -> dict[int, tuple[int, int, int]]:
    """``label → (|G ∩ P|, |G|, |P|)`` from one joint histogram (fast on 100 M-voxel maps)."""
    labels = [int(v) for v in labels]
    size = int(max(gt.max(initial=0), pred.max(initial=0), max(labels, default=0))) + 1
    joint = np.bincount(gt.astype(np.int64).ravel() * size + pred.astype(np.int64).ravel(), minlength=size * size)
    joint = joint.reshape(size, size)
    g, p = joint.sum(1), joint.sum(0)
    return {v: (int(joint[v, v]), int(g[v]), int(p[v])) for v in labels}


def dice_per_label(gt: np.ndarray, pred: np.ndarray, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice of every label present in ``gt`` or ``pred`` (or of ``labels``), background excluded."""
    if labels is None:
        labels = sorted(set(np.unique(gt).tolist()) | set(np.unique(pred).tolist()))
    counts = confusion_counts(gt, pred, [v for v in labels if v != 0])
    return {v: (2.0 * tp / (g + p) if g + p else float("nan")) for v, (tp, g, p) in counts.items() if g + p}


def mean_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean Dice over the labels of the ground truth (predicted-only labels do not count)."""
    present = [int(v) for v in np.unique(gt) if v]
    if not present:
        return float("nan")
    scores = dice_per_label(gt, pred, present)
    return float(np.mean([scores.get(v, 0.0) for v in present]))


def best_instance_dice(truth: np.ndarray, instances: np.ndarray) -> float:
    """Mean over the labels of ``truth`` of the Dice of the ``instances`` label covering most of each (0 where
    none does): how well unnumbered instances (tooth separation) reproduce the true teeth, numbers aside."""
    scores = []
    for value in (int(v) for v in np.unique(truth) if v):
        tooth = truth == value
        found, counts = np.unique(instances[tooth], return_counts=True)
        counts, found = counts[found > 0], found[found > 0]
        if not found.size:
            scores.append(0.0)
            continue
        best = instances == found[np.argmax(counts)]
        scores.append(float(2 * (tooth & best).sum() / (tooth.sum() + best.sum())))
    return float(np.mean(scores)) if scores else float("nan")


def numbered_right_share(truth: np.ndarray, numbered: np.ndarray) -> float:
    """Share of the teeth of ``truth`` whose voxels mostly carry their own number in ``numbered`` (the
    numbering's own score, outlines aside); nan without teeth."""
    values = [int(v) for v in np.unique(truth) if v]
    if not values:
        return float("nan")
    right = 0
    for value in values:
        found, counts = np.unique(numbered[truth == value], return_counts=True)
        right += int(found[np.argmax(counts)] == value)
    return right / len(values)
