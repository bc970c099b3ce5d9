"""Acquisition scores that run a model: TTA disagreement and ensemble disagreement per tooth.

The strategies, the case score and the ranking are :mod:`toothseg.core.pool.ranking` (NumPy only, what
the Slicer GUI uses); here are the two scores that need predictions.
"""

from __future__ import annotations

import itertools

import numpy as np

from ...core.errors import InputError
from ...core.inference.predictor import Predictor
from ...core.pool.ranking import disagreement
from ...core.preprocessing import to_canonical
from ...core.volume import Volume

__all__ = ["tta_disagreement", "ensemble_disagreement"]


def tta_disagreement(predictor, volume: Volume, labels: Volume | None = None) -> dict[int, float]:
    """Per-tooth disagreement between the scan and its left-right mirror image (see module doc).

    ``labels``: the predictor's own prediction of ``volume`` (without TTA) when the caller has it,
    so that only the mirrored scan is predicted here."""
    table = predictor.table
    canonical, _ = to_canonical(volume)
    plain = to_canonical(labels)[0].array if labels is not None else predictor.predict(canonical).labels.array
    mirrored = canonical.with_array(np.ascontiguousarray(canonical.array[..., ::-1]))
    back = predictor.predict(mirrored).labels.array[..., ::-1]
    back = table.swap_left_right(np.ascontiguousarray(back))
    return disagreement(plain, back)


def ensemble_disagreement(model, volume: Volume, options) -> dict[int, float]:
    """Mean pairwise per-tooth disagreement between the members of an ensemble model folder."""
    members = [m for role, m in getattr(model, "members", []) if role == "ensemble"]
    if len(members) < 2:
        raise InputError(f"model {model.card.id!r} is not an ensemble; the 'ensemble' strategy needs a model "
                         "with several members (e.g. RAIL's students)")
    labels = [Predictor(member, options).predict(volume).labels.array for member in members]
    totals: dict[int, list[float]] = {}
    for a, b in itertools.combinations(labels, 2):
        for value, score in disagreement(a, b).items():
            totals.setdefault(value, []).append(score)
    pairs = len(labels) * (len(labels) - 1) // 2
    # a tooth missing from both maps of a pair agrees there: average over all pairs
    return {v: float(sum(s) / pairs) for v, s in totals.items()}
