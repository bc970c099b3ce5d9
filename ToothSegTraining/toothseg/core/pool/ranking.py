"""Which predicted cases a clinician should correct first: the numbers, without running a model.

Every strategy gives each predicted tooth a score in [0, 1] (higher = the model is less sure) and
each case the mean over its teeth:

- ``entropy``: the tooth's mean normalised voxel entropy (from the predictor's uncertainty map).
- ``tta``: 1 − Dice between the prediction and the prediction of the left-right mirrored scan
  (mirrored back, FDI sides swapped): a model that labels a tooth differently when the patient is
  mirrored is unsure of it — the "TTA disagreement" of the active-learning literature.
- ``ensemble``: mean pairwise 1 − Dice between the members of an ensemble model (RAIL's students).
- ``random``: a seeded random order, the baseline every strategy must beat.

A case where the model finds no tooth at all scores 1 (most informative). ``diverse`` ranking
(k-centre greedy on per-tooth score vectors among the best 3k) avoids asking for k near-identical cases.
The scores that run a model are :mod:`toothseg.train.active_learning.acquisition`'s; this module is
what the Slicer GUI may use (NumPy only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..metrics.overlap import dice_per_label

__all__ = ["STRATEGIES", "SCORED_STRATEGIES", "case_score", "disagreement", "rank_cases", "choose_next"]

STRATEGIES = ("entropy", "tta", "ensemble", "random")
SCORED_STRATEGIES = ("entropy", "tta", "ensemble")


def case_score(tooth_scores: dict[int, float]) -> float:
    """Mean over teeth; 1.0 when no tooth was found."""
    return float(np.mean(list(tooth_scores.values()))) if tooth_scores else 1.0


def disagreement(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """1 − Dice per label present in either map (0 excluded)."""
    labels = sorted((set(np.unique(a)) | set(np.unique(b))) - {0})
    return {int(v): 1.0 - d for v, d in dice_per_label(a, b, labels).items()}


def choose_next(state, k: int, strategy: str, seed: int = 0, diverse: bool = False,
                include_review: bool = False, exclude: Sequence[str] = ()) -> list[str]:
    """The ``k`` predicted cases of a pool state to correct next (what ``al next`` and Slicer's
    "Load next case" show); ``exclude``: cases not to offer (predictions of a scan since replaced).
    Raises :class:`InputError` when no predicted case waits."""
    wanted = ("predicted", "in_review") if include_review else ("predicted",)
    candidates = [c.id for c in state.cases.values() if c.status in wanted and c.prediction and c.id not in exclude]
    if not candidates:
        raise InputError("no predicted case waits for review; run 'toothseg al predict POOL' first"
                         + (f" ({len(exclude)} prediction(s) are of scans replaced since)" if exclude else ""))
    scores = {c.id: c.scores[strategy] for c in state.cases.values() if strategy in c.scores}
    features = {c.id: c.tooth_scores.get(strategy, {}) for c in state.cases.values()}
    return rank_cases(candidates, scores, k, strategy, seed, diverse, features)


def rank_cases(candidates: Sequence[str], scores: dict[str, float], k: int, strategy: str,
               seed: int = 0, diverse: bool = False,
               features: dict[str, dict[str, float]] | None = None) -> list[str]:
    """The ``k`` case IDs to correct next, best first.

    Raises:
        InputError: unknown strategy, candidates without a score for it, or ``diverse`` with ``random``.
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    if k < 1:
        raise InputError("-k must be at least 1")
    if diverse and strategy == "random":  # diversity needs per-tooth doubts, which a random draw has none of
        raise InputError("--diverse spreads the choice over the teeth each case doubts; it needs a scoring "
                         "strategy (entropy, tta or ensemble), not random")
    candidates = list(candidates)
    if strategy == "random":
        order = list(np.random.default_rng(seed).permutation(len(candidates)))
        return [candidates[i] for i in order[:k]]
    missing = [c for c in candidates if c not in scores]
    if missing:
        raise InputError(f"{len(missing)} case(s) have no {strategy!r} score (e.g. {missing[0]}); run "
                         f"'toothseg al predict POOL --scores {strategy}' first")
    ranked = sorted(candidates, key=lambda c: (-scores[c], c))
    if not diverse or k >= len(ranked):
        return ranked[:k]
    pool = ranked[: max(3 * k, k)]
    keys = sorted({t for c in pool for t in (features or {}).get(c, {})})
    vectors = {c: np.array([(features or {}).get(c, {}).get(t, 0.0) for t in keys]) for c in pool}
    chosen = [pool[0]]
    while len(chosen) < k:
        def spread(c: str) -> tuple[float, float]:
            return (min(float(np.linalg.norm(vectors[c] - vectors[s])) for s in chosen), scores[c])

        chosen.append(max((c for c in pool if c not in chosen), key=spread))
    return chosen
