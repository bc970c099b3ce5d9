"""What a semi-supervised run's unlabeled term did, and how right its pseudo-labels were, over training.

Issue #38 asks that a method which does not gain over supervised training show why with evidence, not a
guess: its unlabeled term beside the supervised one, step by step (the stage's ``log.csv``), and the accuracy
of the labels it learns from on unlabeled images whose labels training never read (``pl_dice``, and on the
voxels its confidence gate passes, ``pl_used_dice`` and ``pl_used_share``: the stage's ``validation.csv``,
written by ``Trainer.probe``), beside its validation Dice.

    python Testing/benchmarks/plot_ssl_run.py runs/ssl_conv/from_start_mean_teacher_10/0_mean_teacher \\
        runs/ssl_conv/from_start_bcp_10/0_bcp --out Testing/benchmarks/results/ssl_training.png

Each argument is a stage folder, or a run folder (all its stages). ``bench_ssl_ufba.py`` draws the same
picture for the runs of its table beside its JSON (``*_training.png``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))
sys.path.insert(0, str(REPO / "Testing" / "benchmarks"))

#: The loss terms that use no labels, by the names the methods log them under (``StepOutput.unsupervised``).
UNLABELED_TERMS = ("consistency", "pseudo", "cal", "teacher", "reconstruction")
#: Steps of the moving mean that smooths the per-step terms.
SMOOTHING = 25


def stage_folders(paths: list[Path]) -> list[Path]:
    """The stage folders named, or held by the run folders named (those with a ``log.csv``)."""
    found = []
    for path in paths:
        found += [path] if (path / "log.csv").exists() else sorted(p.parent for p in path.glob("*/log.csv"))
    return found


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a run's CSV log (``log.csv``, ``validation.csv``); none where it does not exist."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _series(rows: list[dict[str, str]], column: str) -> tuple[list[int], list[float]]:
    pairs = [(int(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _smoothed(values: list[float], width: int = SMOOTHING) -> list[float]:
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= width:
            total -= values[index - width]
        out.append(total / min(index + 1, width))
    return out


def stage_summary(stage: Path) -> dict[str, float]:
    """Per stage: the mean of each logged term over the last fifth of its steps, and the last probe."""
    rows = read_rows(stage / "log.csv")
    out: dict[str, float] = {}
    tail = rows[-max(1, len(rows) // 5):]
    for column in ("supervised", *UNLABELED_TERMS):
        values = [float(r[column]) for r in tail if r.get(column) not in (None, "")]
        if values:
            out[column] = round(sum(values) / len(values), 4)
    validations = read_rows(stage / "validation.csv")
    if validations:
        out.update({k: round(float(v), 4) for k, v in validations[-1].items() if k != "step" and v})
    return out


def plot_training(stages: list[Path], path: Path, labels: list[str] | None = None) -> bool:
    """Two panels per stage (terms; validation and pseudo-label accuracy); False (nothing written) where no
    stage has a log."""
    stages = [s for s in stages if (s / "log.csv").exists()]
    if not stages:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench_ufba import save_figure

    figure, axes = plt.subplots(2, len(stages), figsize=(4.2 * len(stages), 6.4), squeeze=False)
    for column, stage in enumerate(stages):
        rows = read_rows(stage / "log.csv")
        top, bottom = axes[0][column], axes[1][column]
        for name in ("supervised", *UNLABELED_TERMS):
            steps, values = _series(rows, name)
            if steps and any(values):
                top.plot(steps, _smoothed(values), label=name, linestyle="-" if name == "supervised" else "--")
        top.set_title((labels[column] if labels else f"{stage.parent.name}/{stage.name}")[:48], fontsize=9)
        top.set_xlabel("step")
        top.set_ylabel(f"loss term (mean of {SMOOTHING} steps)")
        top.legend(fontsize=7)
        validations = read_rows(stage / "validation.csv")
        for name, style in (("val_dice", "o-"), ("pl_dice", "s--"), ("pl_used_dice", "^:"), ("pl_used_share", "x:")):
            steps, values = _series(validations, name)
            if steps:
                bottom.plot(steps, values, style, label=name)
        bottom.set_ylim(0, 1)
        bottom.set_xlabel("step")
        bottom.set_ylabel("Dice / share")
        bottom.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path, dpi=100)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="stage folders, or run folders (all their stages)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    from toothseg.core.errors import ToothSegError
    from toothseg.core.io.atomic import check_writable_output

    stages = stage_folders(args.folders)
    try:
        check_writable_output(args.out, overwrite=True)
        drawn = plot_training(stages, args.out)
        summaries = {stage: stage_summary(stage) for stage in stages}
    except (ToothSegError, OSError) as exc:
        print(f"plot_ssl_run: {exc}", file=sys.stderr)
        return 1
    except (KeyError, ValueError) as exc:  # a log cut short or edited by hand
        print(f"plot_ssl_run: a log is not a ToothSeg training log ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    if not drawn:
        print("plot_ssl_run: no stage folder with a log.csv among the folders given", file=sys.stderr)
        return 1
    for stage, summary in summaries.items():
        print(f"{stage}: {summary}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
