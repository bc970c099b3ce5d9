"""Simulated clinicians: does ranking by uncertainty need fewer corrections than picking at random?

On the real panoramic X-rays of UFBA-425 (committed split): start from ``--start`` labeled training
images, then for ``--rounds`` rounds predict the remaining training images, let each strategy pick
``-k`` of them, "correct" them (reveal the ground truth through ``toothseg al accept``), fine-tune
from the previous round's model, and measure the mean per-tooth Dice on the test images. Every
strategy starts from the same labeled images and the same first model. It runs the real pool code
(``CasePool``, ``predict_pool``, ``rank_cases``, ``finetune_pool``), not a re-implementation.

    python Testing/benchmarks/bench_active_learning.py                       # UFBA-425, defaults below
    python Testing/benchmarks/bench_active_learning.py --iterations 100 --rounds 2 --test-cases 20  # quick look
    python Testing/benchmarks/bench_active_learning.py --set model.kwargs.base_channels=16 \
        --first-iterations 400 --iterations 150 --rounds 3 --out runs/al_ufba           # the committed CPU run

Writes ``OUT/active_learning.json`` (curves and settings) and ``OUT/active_learning.png`` (test Dice
against corrected cases per strategy), and prints how many corrections each strategy needed to
reach the random strategy's final Dice. A stopped run resumes where it stopped
when started again with the same arguments: the first model is kept, and so is every strategy it
finished (``OUT/partial.json``). Runs with other ``--seed`` values (other starting images,
other random picks) are averaged by

    python Testing/benchmarks/bench_active_learning.py --combine RUN0.json RUN1.json --out DIR

which writes ``DIR/active_learning_seeds.json`` and ``.png``: the mean curve per strategy, each seed's
curve, and the corrections each strategy needs on the mean curve.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))
sys.path.insert(0, str(REPO / "Testing" / "benchmarks"))

from bench_ufba import save_figure, shown, t_interval  # noqa: E402
from toothseg.core.errors import ToothSegError  # noqa: E402
from toothseg.core.io.atomic import atomic_write_text  # noqa: E402
from toothseg.core.io.images import read_label_map, read_volume  # noqa: E402
from toothseg.core.metrics.overlap import mean_dice  # noqa: E402
from toothseg.core.pool.ranking import rank_cases  # noqa: E402
from toothseg.train.active_learning.loop import finetune_pool, predict_pool  # noqa: E402
from toothseg.core.pool.store import CasePool  # noqa: E402
from toothseg.train.data.cases import Case, read_manifest, ufba_cases  # noqa: E402

DEFAULT_RECIPE = REPO / "ToothSegTraining" / "toothseg" / "train" / "recipes" / "supervised_ufba.yaml"


def test_dice(model: Path, cases: list[Case], device: str) -> float:
    from toothseg.core.inference.predictor import InferenceOptions, Predictor

    predictor = Predictor(model, InferenceOptions(device=device, tta=False, numbering_checks=False))
    scores = [mean_dice(read_label_map(c.label).array, predictor.predict(read_volume(c.image)).labels.array)
              for c in cases]
    return float(np.nanmean(scores))


def corrections_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """Corrected cases at the first round whose Dice reaches ``target`` (None: never)."""
    for count, dice in curve:
        if dice >= target - 1e-9:
            return count
    return None


def simulate(train: list[Case], test: list[Case], strategies: list[str], out: Path, start: int, k: int,
             rounds: int, recipe: Path, iterations: int, first_iterations: int, device: str, seed: int,
             extra: list[str] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    order = [train[i] for i in np.random.default_rng(seed).permutation(len(train))]
    initial = order[:start]
    extra = list(extra or [])
    overrides = [*extra, f"stages.0.iterations={iterations}", "stages.0.validate_every=0"]
    # one first model for every strategy: trained on the same starting images
    base = out / "start"
    if not (base / "pool.json").exists():
        shutil.rmtree(base, ignore_errors=True)
        pool = CasePool.create(base)
        pool.add_images([(c.id, c.image) for c in initial])
        for case in initial:
            pool.accept(case.id, case.label)
    pool = CasePool(base)
    if not pool.read().versions:
        finetune_pool(pool, recipe, None, device, [*extra, f"stages.0.iterations={first_iterations}",
                                                    "stages.0.validate_every=0"], register=False, holdout_share=0,
                      from_scratch=True)
    first_model = pool.folder / pool.read().versions[-1].folder
    first_dice = test_dice(first_model, test, device)
    results: dict = {"settings": {"start": start, "k": k, "rounds": rounds, "iterations": iterations,
                                  "first_iterations": first_iterations, "recipe": shown(recipe), "seed": seed,
                                  "train_cases": len(train), "test_cases": len(test), "device": device,
                                  "recipe_overrides": extra},
                     "curves": {}}
    by_id = {c.id: c for c in train}
    partial = out / "partial.json"  # each finished strategy's curve: a stopped run resumes at the next one
    results["curves"] = _finished_curves(partial, results["settings"], first_dice)
    for strategy in strategies:
        if strategy in results["curves"]:
            print(f"{strategy}: finished in an earlier run ({partial}), kept", flush=True)
            continue
        started = time.perf_counter()
        folder = out / strategy
        shutil.rmtree(folder, ignore_errors=True)
        pool = CasePool.create(folder)
        pool.add_images([(c.id, c.image) for c in train])
        for case in initial:
            pool.accept(case.id, case.label)
        model = first_model
        curve = [(start, first_dice)]
        for round_index in range(rounds):
            scores = [] if strategy == "random" else [strategy]
            predict_pool(pool, str(model), device, scores or ["entropy"])
            state = pool.read()
            waiting = [c.id for c in state.cases.values() if c.status == "predicted"]
            chosen = rank_cases(waiting, {c: state.cases[c].scores.get(strategy, 0.0) for c in waiting}, k, strategy,
                                seed=seed + round_index)
            for case_id in chosen:  # the simulated clinician's correction: the ground truth
                pool.accept(case_id, by_id[case_id].label)
            version = finetune_pool(pool, recipe, str(model), device, overrides, register=False, holdout_share=0)
            model = version.folder
            curve.append((start + k * (round_index + 1), test_dice(model, test, device)))
            print(f"{strategy}: {curve[-1][0]} corrected, test Dice {curve[-1][1]:.4f}", flush=True)
        results["curves"][strategy] = {"points": curve, "seconds": round(time.perf_counter() - started, 1)}
        atomic_write_text(partial, json.dumps(results, indent=1) + "\n")
    results["curves"] = {s: results["curves"][s] for s in strategies}  # the order asked for, earlier runs' too
    if "random" in results["curves"]:
        target = results["curves"]["random"]["points"][-1][1]
        results["random_final_dice"] = target
        results["corrections_to_reach_random_final"] = {
            s: corrections_to_reach(v["points"], target) for s, v in results["curves"].items()}
    atomic_write_text(out / "active_learning.json", json.dumps(results, indent=1) + "\n")
    plot(results, out / "active_learning.png")
    return results


def _finished_curves(partial: Path, settings: dict, first_dice: float) -> dict:
    """Curves of strategies an earlier run with the same settings and the same first model finished.

    A run of several hours on a CPU is stopped now and then; its finished strategies are kept, and an
    unfinished one starts over (its pool and models are remade). Anything else in ``partial`` (other
    settings, another first model, an unreadable file) is ignored, so no curve of another run slips in."""
    try:
        earlier = json.loads(partial.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(earlier, dict) or earlier.get("settings") != settings:
        return {}
    curves = earlier.get("curves")
    if not isinstance(curves, dict):
        return {}
    return {s: c for s, c in curves.items()
            if isinstance(c, dict) and c.get("points") and abs(c["points"][0][1] - first_dice) < 1e-6}


def combine(runs: list[dict]) -> dict:
    """Mean curve per strategy over runs with different seeds (same settings otherwise).

    Raises ValueError when the runs do not share strategies, rounds and settings other than the seed:
    averaging unlike curves would give a figure that means nothing."""
    if len(runs) < 2:
        raise ValueError("--combine needs at least two result files")
    if not all(isinstance(r, dict) and isinstance(r.get("settings"), dict) and isinstance(r.get("curves"), dict)
               for r in runs):
        raise ValueError("a file is not a result of this benchmark (no settings and curves)")
    settings = [{k: v for k, v in r["settings"].items() if k != "seed"} for r in runs]
    if any(s != settings[0] for s in settings[1:]):
        raise ValueError("the runs differ in more than the seed: " + json.dumps(settings))
    seeds = [r["settings"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the same seed appears twice: {seeds}")
    strategies = list(runs[0]["curves"])
    if any(set(r["curves"]) != set(strategies) for r in runs):
        raise ValueError("the runs compare different strategies: " + json.dumps([sorted(r["curves"]) for r in runs]))
    combined: dict = {"settings": {**runs[0]["settings"], "seed": seeds}, "curves": {}}
    for strategy in strategies:
        curves = [r["curves"].get(strategy, {}).get("points") for r in runs]
        if any(c is None or [p[0] for p in c] != [p[0] for p in curves[0]] for c in curves):
            raise ValueError(f"strategy {strategy!r} is missing from a run or has other rounds")
        dice = np.array([[p[1] for p in c] for c in curves], dtype=float)
        counts = [p[0] for p in curves[0]]
        combined["curves"][strategy] = {
            "points": [(n, round(float(d), 4)) for n, d in zip(counts, dice.mean(axis=0))],
            "std": [round(float(d), 4) for d in dice.std(axis=0)],
            "per_seed": {str(seed): c for seed, c in zip(seeds, curves)}}
    if "random" in combined["curves"]:
        combined["gain_over_random"] = gains_over_random(combined["curves"])
        target = combined["curves"]["random"]["points"][-1][1]
        combined["random_final_dice"] = target
        combined["corrections_to_reach_random_final"] = {
            s: corrections_to_reach(v["points"], target) for s, v in combined["curves"].items()}
    return combined


def gains_over_random(curves: dict) -> dict:
    """Per strategy and count of labeled cases: its Dice minus random's, seed by seed (both curves of a seed
    start from the same first model and images), the mean of those differences and a 95 % interval across
    seeds (Student's t, n - 1 degrees of freedom). The seeds, not the test images, are what varies between
    runs of the simulation, so a gain counts only where its interval lies above 0."""
    random = curves["random"]["per_seed"]
    out = {}
    for strategy, curve in curves.items():
        if strategy == "random":
            continue
        differences = np.array([[p[1] - q[1] for p, q in zip(curve["per_seed"][seed], random[seed])]
                                for seed in random], dtype=float)
        mean, half = t_interval(differences, axis=0)
        out[strategy] = [{"labeled": point[0], "mean": round(float(m), 4), "ci95": [round(float(m - h), 4),
                                                                                    round(float(m + h), 4)]}
                         for point, m, h in zip(curve["points"], mean, half)]
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for strategy, curve in results["curves"].items():
        points = np.array(curve["points"], dtype=float)
        label = f"{strategy} (mean of {len(curve['per_seed'])} seeds)" if "per_seed" in curve else strategy
        line, = axes.plot(points[:, 0], points[:, 1], marker="o", linestyle="--" if strategy == "random" else "-",
                          label=label)
        for seed_points in curve.get("per_seed", {}).values():  # each seed, thin, in the strategy's colour
            seed_points = np.array(seed_points, dtype=float)
            axes.plot(seed_points[:, 0], seed_points[:, 1], color=line.get_color(), alpha=0.35, linewidth=0.8,
                      linestyle=line.get_linestyle())
    s = results["settings"]
    axes.set_xlabel("corrected cases")
    axes.set_ylabel(f"mean per-tooth Dice ({s['test_cases']} test images)")
    axes.set_title(f"Active learning, k={s['k']} per round, {s['iterations']} fine-tuning steps", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-manifest", help="training pool (default: the UFBA-425 train split)")
    parser.add_argument("--test-manifest", help="test cases (default: the UFBA-425 test split)")
    parser.add_argument("--test-cases", type=int, default=0, help="use only the first N test cases (0: all)")
    parser.add_argument("--strategies", default="entropy,tta,random")
    parser.add_argument("--start", type=int, default=5)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--iterations", type=int, default=300, help="fine-tuning steps per round")
    parser.add_argument("--first-iterations", type=int, default=1000, help="steps of the first model")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every training run, e.g. model.kwargs.base_channels=16 (repeatable)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=REPO / "Testing" / "benchmarks" / "results" / "active_learning_ufba")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                        help="average the result files of runs with different --seed into OUT (no training)")
    args = parser.parse_args(argv)
    if args.combine:
        try:
            results = combine([json.loads(path.read_text(encoding="utf-8")) for path in args.combine])
        except (OSError, ValueError, KeyError) as exc:  # JSONDecodeError is a ValueError
            parser.error(f"--combine: {exc}")
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out / "active_learning_seeds.json", json.dumps(results, indent=1) + "\n")
            plot(results, args.out / "active_learning_seeds.png")
        except (OSError, ToothSegError) as exc:
            print(f"bench_active_learning: cannot write to {args.out}: {exc}", file=sys.stderr)
            return 1
        _print_summary(results)
        return 0
    train = read_manifest(args.train_manifest, require_labels=True) if args.train_manifest else ufba_cases("train")
    test = read_manifest(args.test_manifest, require_labels=True) if args.test_manifest else ufba_cases("test")
    if args.test_cases:
        test = test[: args.test_cases]
    results = simulate(train, test, args.strategies.split(","), args.out, args.start, args.k, args.rounds,
                       args.recipe, args.iterations, args.first_iterations, args.device, args.seed, args.overrides)
    _print_summary(results)
    return 0


def _print_summary(results: dict) -> None:
    for strategy, count in results.get("corrections_to_reach_random_final", {}).items():
        print(f"{strategy}: reaches random's final Dice {results['random_final_dice']:.4f} after "
              f"{count if count is not None else 'more than ' + str(results['curves'][strategy]['points'][-1][0])} "
              "corrected cases")
    for strategy, points in results.get("gain_over_random", {}).items():
        print(f"{strategy} minus random, mean over seeds [95 % interval]: " + ", ".join(
            f"{p['labeled']}: {p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]" for p in points))


if __name__ == "__main__":
    sys.exit(main())
