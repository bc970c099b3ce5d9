"""Acquisition: which predicted cases a clinician should correct first.

Every strategy gives each predicted tooth a score in [0, 1] (higher = the model is less sure) and
each case the mean over its teeth:

- ``entropy``: the tooth's mean normalised voxel entropy (from :class:`Predictor` with ``uncertainty``).
- ``tta``: 1 − Dice between the prediction and the prediction of the left-right mirrored scan
  (mirrored back, FDI sides swapped): a model that labels a tooth differently when the patient is
  mirrored is unsure of it — the "TTA disagreement" of the active-learning literature.
- ``ensemble``: mean pairwise 1 − Dice between the members of an ensemble model (RAIL's students).
- ``random``: a seeded random order, the baseline every strategy must beat.

A case where the model finds no tooth at all scores 1 (most informative). ``diverse`` ranking
(k-centre greedy on per-tooth score vectors among the best 3k) avoids asking for k near-identical cases.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ...core.errors import InputError
from ...core.volume import Volume

__all__ = ["STRATEGIES", "SCORED_STRATEGIES", "case_score", "disagreement", "tta_disagreement",
           "ensemble_disagreement", "rank_cases", "choose_next"]

STRATEGIES = ("entropy", "tta", "ensemble", "random")
SCORED_STRATEGIES = ("entropy", "tta", "ensemble")


def case_score(tooth_scores: dict[int, float]) -> float:
    """Mean over teeth; 1.0 when no tooth was found."""
    return float(np.mean(list(tooth_scores.values()))) if tooth_scores else 1.0


def disagreement(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """1 − Dice per label present in either map (0 excluded)."""
    from ...core.metrics.overlap import dice_per_label

    labels = sorted((set(np.unique(a)) | set(np.unique(b))) - {0})
    return {int(v): 1.0 - d for v, d in dice_per_label(a, b, labels).items()}


def tta_disagreement(predictor, volume: Volume, labels: Volume | None = None) -> dict[int, float]:
    """Per-tooth disagreement between the scan and its left-right mirror image (see module doc).

    ``labels``: the predictor's own prediction of ``volume`` (without TTA) when the caller has it,
    so that only the mirrored scan is predicted here."""
    from ...core.inference.preprocessing import to_canonical  # torch: only where predictions run

    table = predictor.table
    canonical, _ = to_canonical(volume)
    plain = to_canonical(labels)[0].array if labels is not None else predictor.predict(canonical).labels.array
    mirrored = canonical.with_array(np.ascontiguousarray(canonical.array[..., ::-1]))
    back = predictor.predict(mirrored).labels.array[..., ::-1]
    back = table.swap_left_right(np.ascontiguousarray(back))
    return disagreement(plain, back)


def ensemble_disagreement(model, volume: Volume, options) -> dict[int, float]:
    """Mean pairwise per-tooth disagreement between the members of an ensemble model folder."""
    from ...core.inference.predictor import Predictor

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
