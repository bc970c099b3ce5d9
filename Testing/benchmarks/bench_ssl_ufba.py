"""Semi-supervised methods against their supervised baseline on real panoramic X-rays, one command.

For each labeled fraction (10 % and 25 % of the UFBA-425 training split by default; the subsets are
nested and fixed by ``ufba_cases``) and each method, train the method's committed recipe
(``toothseg/train/recipes/<method>_ufba.yaml``; the rest of the training split is its unlabeled
data) with ``ToothSegTraining/train.py``, then score the final model on the 66 test X-rays exactly as
``bench_ufba.py`` does. Runs resume: a finished run is only scored again.

    python Testing/benchmarks/bench_ssl_ufba.py                       # full recipes (a GPU's work)
    python Testing/benchmarks/bench_ssl_ufba.py --fraction 0.1 --scale 0.15 --method-scale rail=0.075 \\
        --set model.kwargs.base_channels=16 --device cpu --out Testing/benchmarks/results/ssl_ufba_cpu.json

``--scale`` multiplies every length of every stage's schedule: iterations, warm-up, checkpoint and
validation intervals, and the methods' own step counts and EMA horizons (RAIL's group turns, BCP's
static-teacher interval, the teachers' decays), so each method keeps its own proportions.
``--method-scale rail=0.075`` gives one method its own (RAIL trains four networks per step: half the
steps is about the same CPU time); ``--set`` is applied to every recipe. The JSON holds the settings,
the exact training command of every run, each model's summary and its gain over the supervised baseline
at the same fraction with a 95 % interval (paired bootstrap over the test X-rays); the PNG beside it
shows per-tooth Dice box plots.

``--seed N`` (repeatable) trains every method once per training seed (``--set seed=N``: network
initialisation, batch order, augmentation; the labeled subset stays the fixed one) and pairs each run with
the supervised run of the same seed; the summary gives each method's mean gain over the seeds with a
95 % t-interval across seeds (``seed_gain_interval``), the figure a comparison of methods should quote,
besides the per-run interval over test X-rays. Seed 0's run folders keep their old names, so earlier
single-seed runs resume as seed 0.

``--from-supervised`` asks another question: does a method's unlabeled term help a network that already
finds teeth? The supervised baseline is trained as above, then every method's schedule (the supervised
one too) runs again from its final weights (``stages.0.init_from``; a network of another architecture
takes the tensors whose names and shapes match), and each is compared with supervised training
continued for its schedule: the same start, the same number of steps. A recipe's leading pretraining
stages (MIM's masked-image modelling, U-Mamba2-SSL's denoising) are dropped, since the start takes
their place, so count a method's steps without them (``--method-scale`` evens them out). The question
fits supervised, mean teacher, BCP and U-Mamba2-SSL; not RAIL (its four students would begin
identical) nor MIM (without its pretraining it is supervised fine-tuning of its own network), so name
the methods with ``--method``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))
sys.path.insert(0, str(REPO / "Testing" / "benchmarks"))

from bench_ufba import paired_gain_interval, plot, score_model, shown, t_interval, write_result  # noqa: E402
from plot_ssl_run import plot_training, read_rows, stage_folders, stage_summary  # noqa: E402
from toothseg.core.errors import OutputWriteError, ToothSegError  # noqa: E402
from toothseg.core.io.atomic import check_writable_output  # noqa: E402
from toothseg.train.config.loader import load_recipe, setting  # noqa: E402
from toothseg.train.data.cases import ufba_cases  # noqa: E402
from toothseg.train.methods import get_method, ramp_settings, schedule_settings  # noqa: E402

RECIPES = REPO / "ToothSegTraining" / "toothseg" / "train" / "recipes"
METHODS = {  # name in the tables → committed recipe (all: same data block, network family, split)
    "supervised": "supervised_ufba.yaml",
    "mean_teacher": "mean_teacher_ufba.yaml",
    "bcp": "bcp_ufba.yaml",
    "mim": "mim_ufba.yaml",
    "rail": "rail_ufba.yaml",
    "umamba2_ssl": "umamba2_ssl_ufba.yaml",
}


def scaled_setting(kind: str, value: float, scale: float) -> float:
    """A method's schedule-length setting on a schedule ``scale`` times as long: a step count is
    multiplied (at least 1). (EMA decays and ramp lengths are not schedule lengths: they keep the
    papers' values in steps, see ``toothseg.train.methods.base.STEPS``.)"""
    if kind != "steps":
        raise ValueError(f"unknown kind of schedule setting {kind!r}")
    return max(1, round(value * scale))


def scaled_overrides(recipe_path: Path, scale: float, ramp_share: float | None = None) -> list[str]:
    """``--set`` values that multiply every length of every stage's schedule by ``scale``: iterations
    (at least 10), warm-up, checkpoint and validation intervals, and the method's own step counts and
    EMA horizons (RAIL's group turns, BCP's static-teacher interval, teachers' decays). With
    ``ramp_share`` every ramp-up length (``RAMP``) becomes that share of its stage's iterations, so the
    unlabeled terms reach full weight inside a short schedule (a continuation from a converged start)."""
    if scale == 1.0 and ramp_share is None:
        return []
    recipe, _ = load_recipe(recipe_path)
    overrides = []
    for index, stage in enumerate(recipe.stages):
        method = get_method(stage.method)
        steps = max(10, round(stage.iterations * scale))
        if ramp_share is not None:
            overrides += [f"stages.{index}.settings.{name}={max(1, round(ramp_share * steps))}"
                          for name in ramp_settings(method.Settings)]
        if scale == 1.0:
            continue
        for name, kind in schedule_settings(method.Settings).items():
            value = stage.settings.get(name, getattr(method.Settings, name))
            overrides.append(f"stages.{index}.settings.{name}={scaled_setting(kind, value, scale)}")
        overrides.append(f"stages.{index}.iterations={steps}")
        overrides.append(f"stages.{index}.checkpoint_every={max(1, min(stage.checkpoint_every, steps // 4))}")
        if stage.optimizer.warmup_iterations:
            warmup = round(stage.optimizer.warmup_iterations * scale)
            overrides.append(f"stages.{index}.optimizer.warmup_iterations={warmup}")
        if stage.validate_every:
            overrides.append(f"stages.{index}.validate_every={max(1, min(stage.validate_every, steps // 2))}")
    return overrides


def ramp_suffix(recipe_path: Path, ramp_share: float | None) -> str:
    """The run folder's suffix for ``--ramp-share`` where the recipe has a ramp to change ('' else): a
    run with other ramps must not resume the folder of one with the papers' ramps."""
    if ramp_share is None:
        return ""
    recipe, _ = load_recipe(recipe_path)
    has_ramp = any(ramp_settings(get_method(stage.method).Settings) for stage in recipe.stages)
    return f"_ramp{ramp_share:g}" if has_ramp else ""


def ramp_share(text: str) -> float:
    """``--ramp-share``'s type: a share of a stage, in (0, 1] (argparse turns the error into a usage line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share of a stage in (0, 1]")
    return value


def add_run_arguments(parser: argparse.ArgumentParser, runs: Path,
                      runs_help: str = "run folders (resumed; a finished run is only scored)") -> None:
    """The options both SSL benchmarks share: schedule scaling, recipe overrides, run folders, device."""
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every schedule length: iterations, "
                        "warm-up, intervals, the methods' step counts and EMA horizons (CPU runs)")
    parser.add_argument("--method-scale", action="append", default=[], metavar="METHOD=SCALE",
                        help="another --scale for one method, e.g. rail=0.075 for equal CPU time (repeatable)")
    parser.add_argument("--ramp-share", type=ramp_share, metavar="SHARE",
                        help="every unlabeled term's ramp-up length becomes SHARE of its stage's steps (default: "
                             "the papers' lengths in steps); e.g. 0.2 for a short schedule from a converged start")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override applied to every run (repeatable)")
    parser.add_argument("--runs", type=Path, default=runs, help=runs_help)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def prepare_output(out: Path) -> None:
    """Create ``--out``'s folder and check that it and its PNG can be written: before hours of training,
    not after. Raises OutputWriteError."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create folder {out.parent}: {exc.strerror}") from exc
    for path in (out, out.with_suffix(".png")):
        check_writable_output(path, overwrite=True)


def method_scales(parser: argparse.ArgumentParser, texts: list[str],
                  known: Iterable[str] = METHODS) -> dict[str, float]:
    """``--method-scale METHOD=SCALE`` values as a dict; a malformed one, or a method not in ``known``,
    ends with a usage error."""
    scales = {}
    for text in texts:
        method, _, value = text.partition("=")
        try:
            scales[method] = float(value)
        except ValueError:
            parser.error(f"--method-scale {text!r}: expected METHOD=SCALE")
        if method not in known or scales[method] <= 0:
            parser.error(f"--method-scale {text!r}: unknown method or a scale that is not positive")
    return scales


def seed_gain_interval(gains: list[float]) -> dict:
    """Mean of per-seed gains (each a method's Dice minus supervised's at the same seed) and its 95 %
    Student-t interval across seeds; no interval from a single seed."""
    mean = float(sum(gains)) / len(gains)
    result = {"seeds": len(gains), "mean_gain": round(mean, 4)}
    if len(gains) >= 2:
        _, half = t_interval(gains)
        result["ci95"] = [round(mean - float(half), 4), round(mean + float(half), 4)]
    return result


def train_command(method: str, fraction: float, args: argparse.Namespace,
                  scale: float | None = None, start: Path | None = None, seed: int = 0,
                  suffix: str = "") -> tuple[list[str], Path]:
    """The ``train.py`` argument list of one run (no shell) and its run folder. With ``start`` (a model
    folder) the run's first stage begins from those weights (``init_from``) in a folder of its own; a
    seed other than 0 trains with that seed, in a folder named for it; ``suffix`` ends the folder's name
    (a start trained to another length than the default must not resume the default's folder)."""
    recipe = RECIPES / METHODS[method]
    suffix += ramp_suffix(recipe, args.ramp_share)
    run_dir = args.runs / (f"{'from_start_' if start else ''}{method}_{round(fraction * 100)}{suffix}"
                           + (f"_seed{seed}" if seed else ""))
    scale = args.scale if scale is None else scale
    settings = [f"data.labeled_fraction={fraction}", *scaled_overrides(recipe, scale, args.ramp_share), *args.set]
    if seed:
        settings.append(f"seed={seed}")
    if start is not None:
        settings += start_overrides(recipe, start)
    command = [sys.executable, str(REPO / "ToothSegTraining" / "train.py"), str(recipe),
               "--output", str(run_dir), "--device", args.device]
    for value in settings:
        command += ["--set", value]
    return command, run_dir


def start_overrides(recipe_path: Path, start: Path) -> list[str]:
    """``--set`` values that begin a recipe from trained weights: its leading pretraining stages (those
    that train no segmentation, e.g. U-Mamba2-SSL's denoising) are dropped, since the start takes their
    place, and the first remaining stage initialises from ``start``."""
    recipe, _ = load_recipe(recipe_path)
    dropped = 0
    while dropped < len(recipe.stages) and not get_method(recipe.stages[dropped].method).produces_segmentation:
        dropped += 1
    if dropped == len(recipe.stages):
        raise ToothSegError(f"{recipe_path.name}: no stage trains a segmentation, so it cannot start from one")
    return [*(f"stages.{index}=null" for index in range(dropped)), setting(f"stages.{dropped}.init_from", str(start))]


def training_log(run_dir: Path) -> Path:
    """The bench's log of a run's trainings: beside the run folder, not in it (the trainer refuses a new
    run folder that already holds files, so a log written into it first stopped every fresh run)."""
    return run_dir.parent / f"{run_dir.name}.bench_train.log"


def train(command: list[str], run_dir: Path) -> float:
    """Run (or resume) one training; its output goes to ``training_log(run_dir)``. Returns seconds."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = training_log(run_dir)
    started = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0:
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit {completed.returncode}"
        raise ToothSegError(f"training failed: {reason} (log: {log_path})")
    return time.perf_counter() - started


def logged_training_seconds(run_dir: Path) -> float:
    """Wall seconds of every stage of a run, summed from its logs (runs resumed or only re-scored too; runs
    made before the log moved beside the folder keep theirs inside it, as ``bench_train.log``)."""
    text = "".join(log.read_text(encoding="utf-8", errors="replace")
                   for log in (run_dir / "bench_train.log", training_log(run_dir)) if log.exists())
    return round(sum(float(s) for s in re.findall(r"stage \S+: \d+ steps in ([0-9.]+) s", text)), 1)


def validation_history(run_dir: Path) -> list[dict[str, float]]:
    """Every validation of every stage of a run, in order (the stages' own ``validation.csv``): the step, the
    validation Dice and, for a semi-supervised method, how right its pseudo-labels were then (``pl_dice``,
    ``pl_used_share``, ``pl_used_dice``: ``Trainer.probe``). Whether a start had levelled off, and why a method's
    unlabeled term helped or not, is read here, not guessed."""
    history = []
    for path in sorted(run_dir.glob("*/validation.csv"), key=lambda p: p.stat().st_mtime):
        for row in read_rows(path):
            values = {key: round(float(value), 4) for key, value in row.items() if key != "step" and value}
            if row.get("step"):
                history.append({"stage": path.parent.name, "step": int(row["step"]), **values})
    return history


def result_table(args: argparse.Namespace, scales: dict[str, float], seeds: list[int], test_images: int,
                 runs: dict, summaries: dict, seed_gains: dict[str, list[float]], rows: list[dict],
                 complete: bool) -> dict:
    """The benchmark's JSON: settings, every run and its score, gains across seeds, per-tooth rows;
    ``complete`` is false while runs of the plan are still to come."""
    return {"data": f"UFBA-425 test split (real panoramic X-rays), {test_images} images; training on the "
                    "committed training split, labeled share as named, the rest unlabeled",
            "protocol": "toothseg: per ground-truth tooth, pixel spacing 1",
            "complete": complete,
            "settings": {"scale": args.scale, "method_scales": scales, "ramp_share": args.ramp_share,
                         "overrides": args.set, "tta": args.tta,
                         "from_supervised": args.from_supervised, "start_scale": args.start_scale, "seeds": seeds,
                         "device": args.device,
                         "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])},
            "runs": runs, "models": summaries,
            "across_seeds": {group: seed_gain_interval(gains) for group, gains in seed_gains.items()},
            "teeth": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", action="append", choices=sorted(METHODS),
                        help="a method to run (repeatable; default: all); the supervised baseline is always run")
    parser.add_argument("--fraction", action="append", type=float,
                        help="labeled share of the training split (repeatable; default 0.1 and 0.25)")
    add_run_arguments(parser, REPO / "runs" / "ssl_ufba")
    parser.add_argument("--from-supervised", action="store_true",
                        help="every method, the supervised one too, trains its schedule again starting from the "
                             "supervised baseline's final weights; gains are measured against supervised "
                             "training continued for its schedule (equal steps, the same start)")
    parser.add_argument("--start-scale", type=float,
                        help="with --from-supervised: the --scale of the supervised start alone (default: --scale), "
                             "e.g. 0.75 for a start whose validation has levelled off and 0.15 for the schedules "
                             "from it; its run folder is named for it")
    parser.add_argument("--seed", action="append", type=int,
                        help="training seed (repeatable; default 0): every method runs once per seed, and its gain "
                             "over supervised training of the same seed gets an interval across seeds")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation when scoring")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N test images")
    parser.add_argument("--out", type=Path, default=REPO / "Testing" / "benchmarks" / "results" / "ssl_ufba.json")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    if args.start_scale is not None and (args.start_scale <= 0 or not args.from_supervised):
        parser.error("--start-scale must be positive and goes with --from-supervised")
    fractions = list(dict.fromkeys(args.fraction or [0.1, 0.25]))
    if any(not 0 < f < 1 for f in fractions):
        parser.error("--fraction must lie strictly between 0 and 1")
    scales = method_scales(parser, args.method_scale)
    seeds = list(dict.fromkeys(args.seed or [0]))
    if any(seed < 0 for seed in seeds):
        parser.error("--seed must not be negative")
    methods = ["supervised"] + [m for m in dict.fromkeys(args.method or sorted(METHODS)) if m != "supervised"]

    try:
        prepare_output(args.out)
        cases = ufba_cases("test")
    except ToothSegError as exc:
        print(f"bench_ssl_ufba: {exc}", file=sys.stderr)
        return 1
    if args.limit:
        cases = cases[:args.limit]
    runs, summaries, all_rows, names = {}, {}, [], []
    run_dirs: list[Path] = []
    model_rows: dict[str, list[dict]] = {}
    seed_gains: dict[str, list[float]] = {}  # "method 10%" → its gain at each seed
    for fraction, seed in ((f, s) for f in fractions for s in seeds):
        start = None  # --from-supervised: the supervised baseline's model, once it is trained
        plan = [(m, False) for m in methods]
        if args.from_supervised:  # only the start and every method's schedule from it
            plan = [("supervised", False)] + [(m, True) for m in methods]
        seed_tag = f" seed {seed}" if len(seeds) > 1 else ""
        for method, continued in plan:
            group = f"{method} {round(fraction * 100)}%" + (" from supervised" if continued else "")
            name = group + seed_tag
            scale = scales.get(method, args.scale)
            suffix = ""
            if args.start_scale is not None and method == "supervised" and not continued:
                scale, suffix = args.start_scale, f"_scale{args.start_scale:g}"
            command, run_dir = train_command(method, fraction, args, scale, start if continued else None, seed,
                                             suffix)
            try:
                seconds = train(command, run_dir)
                summary, rows = score_model(name, str(run_dir / "model"), cases, args.device, args.tta)
            except ToothSegError as exc:
                print(f"bench_ssl_ufba: {name}: {exc}", file=sys.stderr)
                return 1
            runs[name] = {"method": method, "labeled_fraction": fraction, "scale": scale, "seed": seed,
                          "command": ["python", *(shown(c) for c in command[1:])],
                          "train_seconds_this_call": round(seconds, 1),
                          "train_seconds_logged": logged_training_seconds(run_dir),
                          "validation": validation_history(run_dir),
                          "terms_last_fifth": {stage.name: stage_summary(stage) for stage in stage_folders([run_dir])}}
            run_dirs.append(run_dir)
            if method == "supervised" and not continued:
                start = run_dir / "model"
            baseline_name = (f"supervised {round(fraction * 100)}%" + (" from supervised" if continued else "")
                             + seed_tag)
            baseline = summaries.get(baseline_name)
            if baseline is not None:
                summary["gain_over_supervised"] = round(summary["mean_tooth_dice"] - baseline["mean_tooth_dice"], 4)
                seed_gains.setdefault(group, []).append(summary["gain_over_supervised"])
                if rows:  # paired by X-ray: an interval that excludes 0 is a gain (or loss) beyond the test set's noise
                    summary["gain_ci95"] = paired_gain_interval(rows, model_rows[baseline_name])
            summaries[name] = summary
            model_rows[name] = rows
            all_rows += rows
            names.append(name)
            print(f"{name}: {json.dumps(summary)}", flush=True)
            # the table so far, after every run: what finished is kept (and can be committed) if a
            # multi-session run, or the machine holding its run folders, is lost before the end
            write_result(args.out, result_table(args, scales, seeds, len(cases), runs, summaries, seed_gains,
                                                all_rows, complete=False))

    result = result_table(args, scales, seeds, len(cases), runs, summaries, seed_gains, all_rows, complete=True)
    write_result(args.out, result)
    plot(all_rows, names, args.out.with_suffix(".png"))
    training_png = args.out.with_name(args.out.stem + "_training.png")
    if plot_training(stage_folders(run_dirs), training_png):  # each run's terms and pseudo-label accuracy
        print(f"wrote {training_png}")
    print("model | mean tooth Dice | gain over supervised [95 % interval] | incisors | canines | premolars | molars "
          "| IoU>0.5")
    for name, s in summaries.items():
        gain, interval = s.get("gain_over_supervised"), s.get("gain_ci95")
        shown_gain = "—" if gain is None else f"{gain:+.4f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]"
                                                                 if interval else "")
        print(f"{name} | {s['mean_tooth_dice']:.4f} | {shown_gain} | "
              f"{s['incisors']} | {s['canines']} | {s['premolars']} | {s['molars']} | {s['teeth_with_iou_over_0.5']}")
    if len(seeds) > 1:
        print(f"gain over supervised training of the same seed, mean of {len(seeds)} seeds [95 % t-interval across "
              "seeds]")
        for group, summary in result["across_seeds"].items():
            interval = summary.get("ci95")
            print(f"{group} | {summary['mean_gain']:+.4f}"
                  + (f" [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else ""))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
