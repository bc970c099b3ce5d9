"""The 3D method table: every training method on synthetic CBCT built on real tooth shapes, scored
with the STS-2024 protocol on synthetic scans never seen in training. INTENSITIES ARE SYNTHETIC.

No real CBCT image is available to this project, so the 3D comparison runs on scans painted by
``toothseg.train.synth`` onto the real STS-2024 ``Validation_0002`` label maps (its ground truth
and one participant's prediction of the same patient): random tissue intensities, missing teeth,
metal streaks, rings, blur and noise. The benchmark

1. draws a fixed dataset (``--scans`` training scans, 2 validation and ``--test`` test scans, each
   cropped to the teeth with a 12 mm margin at ``--spacing``), every scan with its own seed: the
   test scans' random draws appear nowhere in training (the anatomy is the same patient's);
2. trains each method's committed UFBA-425 recipe (its method stages, settings, optimiser and loss
   weights, as ``bench_ssl_ufba.py``) with a shared 3D data block and network (V-Net; BCP's
   edge-guided V-Net, BCP once more on the plain V-Net as ``bcp_plain`` and on the edge-guided V-Net
   with residual CBAMs as ``bcp_residual``; RAIL's second pair of
   students are ResVNets) on the first ``--fraction`` of the training scans as labeled data, the
   rest unlabeled; the supervised baseline is also trained on all training scans, as the ceiling;
3. segments the test scans with each final model (the ``toothseg segment`` code path) and reports
   the ``sts2024`` metrics (``toothseg evaluate --protocol sts2024``).

    python Testing/benchmarks/bench_ssl_synth3d.py                       # full recipes, FDI labels: a GPU's work
    python Testing/benchmarks/bench_ssl_synth3d.py --labels binary --scale 0.05 --method-scale bcp=0.03 \\
        --method-scale bcp_plain=0.03 --method-scale rail=0.015 --device cpu \\
        --out Testing/benchmarks/results/ssl_synth3d_cpu.json

Runs resume (a finished run is only scored again). ``--scale`` as in ``bench_ssl_ufba.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))
sys.path.insert(0, str(REPO / "Testing" / "benchmarks"))

from bench_ssl_ufba import (  # noqa: E402
    METHODS, RECIPES, add_run_arguments, logged_training_seconds, method_scales, prepare_output, ramp_suffix,
    scaled_overrides, train)
from bench_ufba import paired_gain_interval, save_figure, shown, write_result  # noqa: E402
from toothseg.core.errors import ToothSegError  # noqa: E402
from toothseg.core.io.atomic import atomic_write_text  # noqa: E402
from toothseg.core.io.images import read_label_map, read_volume, write_volume  # noqa: E402
from toothseg.core.metrics.protocols import aggregate_sts2024, sts2024_case  # noqa: E402
from toothseg.train.data.cases import Case, read_manifest, shared_data_dir, write_manifest  # noqa: E402

LABEL_MAPS = {"gt": "Validation_0002_gt.nii.gz", "pred": "Validation_0002_pred.nii.gz"}
METRICS = ("image_dsc", "image_iou", "image_nsd", "instance_dsc", "instance_iou", "instance_nsd", "ia")
PATCH = [48, 80, 80]  # at 1 mm: the teeth's whole height and most of the arch, so FDI numbers have context
AUGMENT = {"rotate_deg": 12, "rotate_probability": 0.3, "scale": [0.85, 1.15], "scale_probability": 0.3,
           "flip_lr": 0.5}


# The 3D table's methods: the UFBA recipes, and BCP's recipe once more on the plain V-Net of Bai et
# al. (its row with the edge-guided V-Net of Hsu & Hua is "bcp"), which separates the copy-paste
# training from the edge-guided network; "bcp_residual" trains it on the edge-guided V-Net with residual
# CBAMs (``edge_cbam: residual``, the form that rescues the 2D edge-guided U-Net).
METHODS_3D = {**METHODS, "bcp_plain": METHODS["bcp"], "bcp_residual": METHODS["bcp"]}


def networks(method: str) -> dict:
    """The 3D network each method trains (the 3D counterparts of its UFBA recipe's 2D U-Net)."""
    kwargs = {"n_filters": 8, "has_dropout": method in ("mean_teacher", "rail")}
    if method == "bcp":
        kwargs = {"n_filters": 8, "edge_guided": True}
    if method == "bcp_residual":
        kwargs = {"n_filters": 8, "edge_guided": True, "edge_cbam": "residual"}
    return {"architecture": "vnet", "kwargs": kwargs}


def make_dataset(folder: Path, scans: int, test: int, spacing: float, seed: int = 3000) -> dict[str, Path]:
    """Write (or reuse) the synthetic scans and their manifests ``train.json``, ``val.json``, ``test.json``.

    Scan *i* is drawn with seed ``seed + i`` from the ground-truth map (even *i*) or the predicted map
    (odd *i*) for training; validation and test scans come from the ground truth with later seeds."""
    from toothseg.train.synth import synthesize
    from toothseg.train.synth.sample import cropped_anatomy

    stamp = {"scans": scans, "test": test, "spacing": spacing, "seed": seed, "margin_mm": 12.0}
    manifests = {name: folder / f"{name}.json" for name in ("train", "val", "test")}
    stamp_file = folder / "dataset.json"
    if stamp_file.exists() and all(p.exists() for p in manifests.values()):
        if json.loads(stamp_file.read_text(encoding="utf-8")) == stamp:
            return manifests
        raise ToothSegError(f"{folder} holds a dataset drawn with other settings; remove it or choose --runs")
    anatomies = {key: cropped_anatomy(shared_data_dir() / "sts2024" / name, spacing, 12.0)
                 for key, name in LABEL_MAPS.items()}
    plan = {"train": [("gt" if i % 2 == 0 else "pred", seed + i) for i in range(scans)],
            "val": [("gt", seed + 1000 + i) for i in range(2)],
            "test": [("gt", seed + 2000 + i) for i in range(test)]}
    (folder / "scans").mkdir(parents=True, exist_ok=True)
    for subset, draws in plan.items():
        cases = []
        for key, case_seed in draws:
            anatomy, region = anatomies[key]
            image, labels = synthesize(anatomy, np.random.default_rng(case_seed), region=region)
            case_id = f"{subset}_{case_seed}_{key}"
            image_path = folder / "scans" / f"{case_id}.nii.gz"
            label_path = folder / "scans" / f"{case_id}_labels.nii.gz"
            write_volume(image, image_path, overwrite=True)
            write_volume(labels, label_path, overwrite=True)
            cases.append(Case(case_id, image_path, label_path))
        write_manifest(manifests[subset], cases)
    atomic_write_text(stamp_file, json.dumps(stamp) + "\n")
    return manifests


def train_command(method: str, fraction: float, manifests: dict[str, Path], args: argparse.Namespace,
                  scale: float) -> tuple[list[str], Path]:
    """The ``train.py`` argument list of one run (no shell) and its run folder."""
    recipe = RECIPES / METHODS_3D[method]
    run_dir = args.runs / f"{method}_{round(fraction * 100)}{ramp_suffix(recipe, args.ramp_share)}"
    data = {"kind": "3d", "source": "files", "labeled": str(manifests["train"]), "validation": str(manifests["val"]),
            "labeled_fraction": fraction, "label_table": args.labels, "spacing": [args.spacing] * 3,
            "patch_size": PATCH,
            "intensity": {"mode": "percentile_zscore"}, "foreground_oversample": 0.8, "augment": AUGMENT}
    if args.labels == "binary":
        data["class_values"] = [0, 1]
    settings = [f"data={json.dumps(data)}", f"model={json.dumps(networks(method))}",
                "export.mirror_axes=[2]", *scaled_overrides(recipe, scale, args.ramp_share), *args.set]
    command = [sys.executable, str(REPO / "ToothSegTraining" / "train.py"), str(recipe),
               "--output", str(run_dir), "--device", args.device]
    for value in settings:
        command += ["--set", value]
    return command, run_dir


def score_model(name: str, model: Path, cases: list[Case], device: str,
                metrics: tuple[str, ...] = METRICS) -> tuple[dict, list[dict]]:
    """Segment every test scan with ``model``; the mean ``sts2024`` metrics and one row per case.

    A binary model (``--labels binary``) numbers no teeth: only the image-level metrics apply to it."""
    from toothseg.core.inference.predictor import InferenceOptions, Predictor

    predictor = Predictor(model, InferenceOptions(device=device, tta=False))
    rows, per_case, started = [], [], time.perf_counter()
    for case in cases:
        truth = read_label_map(case.label).array
        predicted = predictor.predict(read_volume(case.image)).labels.array
        values = sts2024_case(truth, predicted)
        per_case.append(values)
        rows.append({"model": name, "case": case.id, **{k: round(float(values[k]), 4) for k in metrics}})
    means = aggregate_sts2024(per_case)  # the official averaging (NaN cases ignored)
    summary = {k: round(means[k], 4) for k in metrics}
    summary["seconds_per_case"] = round((time.perf_counter() - started) / max(len(cases), 1), 2)
    summary["folder"] = shown(str(model.resolve()))
    return summary, rows


def plot(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("instance_dsc", "instance Dice"), ("image_dsc", "image Dice"), ("image_nsd", "image NSD")]
    panels = [(key, title) for key, title in panels if any(key in r for r in rows)][:2]  # binary: image only
    figure, axes = plt.subplots(1, len(panels), figsize=(2.0 + 2.2 * len(names), 4), squeeze=False)
    for axis, (key, title) in zip(axes[0], panels):
        axis.boxplot([[r[key] for r in rows if r["model"] == name] for name in names], showfliers=True)
        axis.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        axis.set_title(f"{title} (STS-2024 protocol)")
        axis.set_ylim(0, 1)
    figure.suptitle("Synthetic CBCT on real STS-2024 tooth shapes — intensities are SYNTHETIC", fontsize=10)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", action="append", choices=sorted(METHODS_3D),
                        help="a method to run (repeatable; default: all); the supervised runs are always made")
    parser.add_argument("--fraction", type=float, default=0.1, help="labeled share of the training scans (default 0.1)")
    parser.add_argument("--scans", type=int, default=20, help="training scans (default 20)")
    parser.add_argument("--test", type=int, default=6, help="test scans (default 6)")
    parser.add_argument("--labels", default="fdi", choices=("fdi", "binary"),
                        help="fdi: one class per FDI tooth (all sts2024 metrics); binary: tooth vs background, as the "
                        "RAIL and BCP papers train on CBCT (image-level metrics only); give each kind its own --runs")
    parser.add_argument("--spacing", type=float, default=1.0, help="isotropic spacing of scans and networks, mm")
    add_run_arguments(parser, REPO / "runs" / "ssl_synth3d",
                      "the drawn dataset (data/) and run folders (resumed; a finished run is only scored)")
    parser.add_argument("--out", type=Path, default=REPO / "Testing" / "benchmarks" / "results" / "ssl_synth3d.json")
    args = parser.parse_args(argv)
    if args.scale <= 0 or not 0 < args.fraction < 1 or args.scans < 2 or args.test < 1 or args.spacing <= 0:
        parser.error("need --scale > 0, 0 < --fraction < 1, --scans ≥ 2, --test ≥ 1, --spacing > 0")
    scales = method_scales(parser, args.method_scale, METHODS_3D)
    methods = [m for m in dict.fromkeys(args.method or sorted(METHODS_3D)) if m != "supervised"]
    # the ceiling (supervised on every training scan) comes last: it is the least needed row
    plan = [("supervised", args.fraction)] + [(m, args.fraction) for m in methods] + [("supervised", 1.0)]
    metrics = METRICS if args.labels == "fdi" else METRICS[:3]

    try:
        prepare_output(args.out)
        manifests = make_dataset(args.runs / "data", args.scans, args.test, args.spacing)
        test_cases = read_manifest(manifests["test"], require_labels=True)
    except ToothSegError as exc:
        print(f"bench_ssl_synth3d: {exc}", file=sys.stderr)
        return 1
    runs, summaries, all_rows, names = {}, {}, [], []
    for method, fraction in plan:
        name = f"{method} {'all' if fraction >= 1 else f'{round(fraction * 100)}%'}"
        scale = scales.get(method, args.scale)
        command, run_dir = train_command(method, fraction, manifests, args, scale)
        try:
            seconds = train(command, run_dir)
            summary, rows = score_model(name, run_dir / "model", test_cases, args.device, metrics)
        except ToothSegError as exc:
            print(f"bench_ssl_synth3d: {name}: {exc}", file=sys.stderr)
            return 1
        runs[name] = {"method": method, "labeled_fraction": fraction, "scale": scale,
                      "command": ["python", *(shown(c).replace(f"{REPO}/", "") for c in command[1:])],
                      "train_seconds_this_call": round(seconds, 1),
                      "train_seconds_logged": logged_training_seconds(run_dir)}
        baseline = summaries.get(f"supervised {round(args.fraction * 100)}%")
        headline = "instance_dsc" if args.labels == "fdi" else "image_dsc"
        if baseline is not None and method != "supervised":
            summary[f"{headline}_gain_over_supervised"] = round(summary[headline] - baseline[headline], 4)
            baseline_rows = [r for r in all_rows if r["model"] == f"supervised {round(args.fraction * 100)}%"]
            if rows and baseline_rows:  # over a few synthetic scans of one patient: the draws' noise only
                summary[f"{headline}_gain_ci95"] = paired_gain_interval(rows, baseline_rows, value=headline)
        summaries[name], names = summary, names + [name]
        all_rows += rows
        print(f"{name}: {json.dumps(summary)}", flush=True)
        write_outputs(args, scales, runs, summaries, all_rows, names)  # after every model: a stopped run keeps its rows
    headline = "instance_dsc" if args.labels == "fdi" else "image_dsc"
    print("model | " + " | ".join(metrics) + f" | {headline} gain over supervised [95 % interval]")
    for name, s in summaries.items():
        gain, interval = s.get(f"{headline}_gain_over_supervised"), s.get(f"{headline}_gain_ci95")
        shown_gain = "—" if gain is None else f"{gain:+.4f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]"
                                                                 if interval else "")
        print(f"{name} | " + " | ".join(f"{s[k]:.4f}" for k in metrics) + f" | {shown_gain}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def write_outputs(args: argparse.Namespace, scales: dict, runs: dict, summaries: dict, rows: list[dict],
                  names: list[str]) -> None:
    """The result JSON (settings, exact training commands, per-model means, one row per test case) and PNG."""
    result = {"data": f"SYNTHETIC intensities on the real STS-2024 Validation_0002 tooth shapes: {args.scans} training "
                      f"scans (labeled share as named, the rest unlabeled), {args.test} test scans with unseen random "
                      f"draws, {args.spacing} mm, {args.labels} labels",
              "protocol": "sts2024 (binary image metrics and instance metrics, spacing taken as 1, NSD tolerance 2)",
              "settings": {"scale": args.scale, "method_scales": scales, "ramp_share": args.ramp_share,
                           "overrides": args.set, "device": args.device,
                           "labels": args.labels, "patch_size": PATCH,
                           "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])},
              "runs": runs, "models": summaries, "cases": rows}
    write_result(args.out, result, rows_key="cases")
    plot(rows, names, args.out.with_suffix(".png"))


if __name__ == "__main__":
    raise SystemExit(main())
