"""Challenge-exact evaluation protocols (methods.md §2.8, §3.3).

* ``sts2024`` — STS-2024 CBCT track (official ``compute_metrics.py``): image-level Dice, IoU and NSD
  of the binary masks with spacing taken as 1 and tolerance 2 (voxels); instance Dice/IoU/NSD = mean
  over the labels of the ground truth; IA = #{GT labels with IoU > 0.5} / (|labels(GT) ∪ labels(pred)|
  − 1), the −1 removing background. Per case; a set of cases is averaged case by case.
* ``stsr2025`` — STSR-2025 Task 1 (official ``compute_metrics.py``): real spacing (z, y, x mm), NSD at
  2 mm; image-level DSC (both empty: NaN, dropped), IoU and NSD (both empty: 1); instance DSC/IoU/NSD
  pooled over all (case, label) pairs of the ground truth; IA per case with IoU ≥ 0.5 over
  |labels(GT) ∪ labels(pred)| (no labels: 1), averaged over cases; a missing prediction scores 0 for
  the image metrics and IA and adds nothing to the instance lists; ``all_average`` = mean of the 7.
* ``toothseg`` — per tooth Dice, IoU, NSD at 1 mm, HD95 and ASD in mm, for reports.

"Instance" in both challenges is a label value (an FDI number), not a connected component.
Each label is cropped to the bounding box of ground truth ∪ prediction before any distance work.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .surface import normalized_surface_dice, surface_metrics

__all__ = ["sts2024_case", "stsr2025_cases", "toothseg_case", "PROTOCOLS", "label_crops", "aggregate_sts2024",
           "present_labels"]

PROTOCOLS = ("sts2024", "stsr2025", "toothseg")


def _objects(array: np.ndarray) -> list:
    """``ndimage.find_objects`` for any non-negative integer label array (one pass)."""
    if array.dtype.kind not in "ui":
        array = array.astype(np.int64)
    return ndimage.find_objects(array) if array.size and int(array.max()) > 0 else []


def present_labels(array: np.ndarray, objects: list | None = None) -> set[int]:
    """Values present, background included when any voxel is 0 (from the bounding boxes: fast)."""
    objects = _objects(array) if objects is None else objects
    labels = {i + 1 for i, box in enumerate(objects) if box is not None}
    if array.size and int(array.min()) == 0:
        labels.add(0)
    return labels


def label_crops(gt: np.ndarray, pred: np.ndarray, labels: Iterable[int], objects_gt: list | None = None,
                objects_pred: list | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``label → (gt == label, pred == label)`` cut to the union of the two bounding boxes."""
    boxes_g = _objects(gt) if objects_gt is None else objects_gt
    boxes_p = _objects(pred) if objects_pred is None else objects_pred
    out = {}
    for label in labels:
        boxes = [b[label - 1] for b in (boxes_g, boxes_p) if label - 1 < len(b) and b[label - 1] is not None]
        if not boxes:
            empty = np.zeros((1,) * gt.ndim, bool)
            out[label] = (empty, empty)
            continue
        box = tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes)) for i in range(gt.ndim))
        out[label] = (gt[box] == label, pred[box] == label)
    return out


# count_nonzero on boolean masks is several times faster than sum (no widening to integers).
def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 2.0 * np.count_nonzero(np.logical_and(a, b)) / total if total else math.nan


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(np.logical_or(a, b))
    return np.count_nonzero(np.logical_and(a, b)) / union if union else math.nan


def sts2024_case(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """STS-2024 metrics of one case (label arrays of the same shape)."""
    g, p = gt != 0, pred != 0
    unit = (1.0,) * gt.ndim
    result = {"image_dsc": _dice(g, p), "image_iou": _iou(g, p), "image_nsd": normalized_surface_dice(g, p, unit, 2.0)}
    objects_gt, objects_pred = _objects(gt), _objects(pred)
    present_gt, present_pred = present_labels(gt, objects_gt), present_labels(pred, objects_pred)
    gt_labels = sorted(present_gt - {0})
    dsc, iou, nsd = [], [], []
    true_positives = 0
    for a, b in label_crops(gt, pred, gt_labels, objects_gt, objects_pred).values():
        dsc.append(_dice(a, b))
        value = _iou(a, b)
        iou.append(value)
        nsd.append(normalized_surface_dice(a, b, unit, 2.0))
        true_positives += int(value > 0.5)
    result["instance_dsc"] = float(np.mean(dsc)) if dsc else math.nan
    result["instance_iou"] = float(np.mean(iou)) if iou else math.nan
    result["instance_nsd"] = float(np.mean(nsd)) if nsd else math.nan
    denominator = len(present_gt | present_pred) - 1
    result["ia"] = true_positives / denominator if denominator > 0 else math.nan
    return result


def aggregate_sts2024(cases: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean over cases, as the official CSV is averaged (NaN cases ignored)."""
    keys = ("image_dsc", "image_iou", "image_nsd", "instance_dsc", "instance_iou", "instance_nsd", "ia")
    return {k: float(np.nanmean([c[k] for c in cases])) if cases else math.nan for k in keys}


@dataclass
class _STSRState:
    image_dsc: list[float] = field(default_factory=list)
    image_iou: list[float] = field(default_factory=list)
    image_nsd: list[float] = field(default_factory=list)
    instance_dsc: list[float] = field(default_factory=list)
    instance_iou: list[float] = field(default_factory=list)
    instance_nsd: list[float] = field(default_factory=list)
    ia: list[float] = field(default_factory=list)


def stsr2025_cases(pairs: Iterable[tuple[np.ndarray, np.ndarray | None, Sequence[float]]]) -> dict[str, Any]:
    """STSR-2025 Task 1 over ``(gt, pred or None if missing, spacing_zyx)`` cases."""
    s = _STSRState()
    per_case = []
    for gt, pred, spacing in pairs:
        if pred is None:
            s.image_dsc.append(0.0)
            s.image_iou.append(0.0)
            s.image_nsd.append(0.0)
            s.ia.append(0.0)
            per_case.append({"missing": True})
            continue
        g, p = gt != 0, pred != 0
        dice = _dice(g, p)
        if not math.isnan(dice):
            s.image_dsc.append(dice)
        iou = _iou(g, p)
        s.image_iou.append(1.0 if math.isnan(iou) else iou)
        s.image_nsd.append(normalized_surface_dice(g, p, spacing, 2.0))
        objects_gt, objects_pred = _objects(gt), _objects(pred)
        present_gt, present_pred = present_labels(gt, objects_gt), present_labels(pred, objects_pred)
        gt_labels = sorted(present_gt - {0})
        hits = 0
        for a, b in label_crops(gt, pred, gt_labels, objects_gt, objects_pred).values():
            value = _iou(a, b)
            s.instance_dsc.append(_dice(a, b))
            s.instance_iou.append(value)
            s.instance_nsd.append(normalized_surface_dice(a, b, spacing, 2.0))
            hits += int(value >= 0.5)
        union = (present_gt | present_pred) - {0}
        s.ia.append(hits / len(union) if union else 1.0)
        per_case.append({"ia": s.ia[-1], "image_dsc": dice, "image_nsd": s.image_nsd[-1]})
    result = {k: float(np.mean(getattr(s, k))) if getattr(s, k) else math.nan for k in
              ("image_dsc", "image_iou", "image_nsd", "instance_dsc", "instance_iou", "instance_nsd", "ia")}
    result["all_average"] = float(np.mean(list(result.values())))
    result["cases"] = per_case
    return result


def toothseg_case(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0,
                  labels: Iterable[int] | None = None) -> dict[int, dict[str, float]]:
    """Per tooth (label of GT ∪ prediction): Dice, IoU, NSD at ``tolerance_mm``, HD95 and ASD (mm)."""
    labels = sorted((present_labels(gt) | present_labels(pred)) - {0}) if labels is None else list(labels)
    out = {}
    for label, (a, b) in label_crops(gt, pred, labels).items():
        metrics = {"dice": _dice(a, b), "iou": _iou(a, b)}
        metrics.update(surface_metrics(a, b, spacing, tolerance_mm))
        metrics["in_gt"] = bool(a.any())
        metrics["in_pred"] = bool(b.any())
        out[label] = metrics
    return out
