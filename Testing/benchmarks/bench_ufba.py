"""Panoramic accuracy on real X-rays: models compared on the committed UFBA-425 test split.

Every model segments the same test images (``toothseg.core.inference.Predictor``, the code path of
``toothseg segment``) and is scored per ground-truth tooth with the ``toothseg`` protocol of
``toothseg evaluate`` (pixel spacing taken as 1, so HD95 is in pixels). Figures are grouped as in the
OralBBNet paper (incisors / canines / premolars / molars; it reports 89.34 / 88.40 / 88.38 / 87.87).

    python Testing/benchmarks/bench_ufba.py --model bundled=toothseg-panoramic-resenc
    python Testing/benchmarks/bench_ufba.py --model sup100=runs/sup/model --model rail10=runs/rail10/model \\
        --out Testing/benchmarks/results/ufba425_methods.json

Writes the JSON (settings, per-model summary, per-tooth rows) and, beside it, a PNG with one box
plot of per-tooth Dice per model; prints a table. ``--outlines`` adds, per model, where the outlines of
the well-found teeth (Dice ≥ 0.8) go wrong (:func:`outline_errors`) and what the model's own input grid
could hold at best (:func:`grid_ceiling`).
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

from toothseg.core.errors import ToothSegError  # noqa: E402
from toothseg.core.io.atomic import atomic_output, atomic_write_text  # noqa: E402
from toothseg.core.io.images import read_label_map, read_volume  # noqa: E402
from toothseg.core.metrics.protocols import toothseg_case  # noqa: E402
from toothseg.evaluation_report import TOOTH_GROUPS, tooth_group  # noqa: E402
from toothseg.train.data.cases import Case, shared_data_dir, ufba_cases  # noqa: E402

GROUP_NAMES = {"incisor": "incisors", "canine": "canines", "premolar": "premolars", "molar": "molars"}


def shown(argument: str | Path) -> str:
    """A command argument or path as committed JSON records it, without one machine's folders:
    inside the shared data as ``shared/data/...``, inside the repository relative to it."""
    path = Path(argument)
    if not path.is_absolute():
        return str(argument)
    try:
        data = shared_data_dir().resolve()
    except ToothSegError:
        data = None
    if data is not None and path.resolve().is_relative_to(data):
        return f"shared/data/{path.resolve().relative_to(data).as_posix()}"
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(argument)


#: What went wrong with a ground-truth tooth, from the label the prediction gives most of its pixels
#: (Dice < 0.5) or from its Dice (0.5-0.8): where the gap to a better model lies.
ERROR_KINDS = ("missed", "neighbour_number", "other_quadrant", "other_number", "outline")


def error_kind(tooth: int, dice: float, majority: int) -> str:
    """``""`` for a tooth segmented well (Dice ≥ 0.8), else one of :data:`ERROR_KINDS`: ``missed`` (mostly
    background), ``neighbour_number`` (the next or previous tooth's number in its quadrant),
    ``other_quadrant`` (its position in another quadrant: a side or jaw swap), ``other_number``, or
    ``outline`` (found and numbered, Dice 0.5-0.8)."""
    if dice >= 0.8:
        return ""
    if dice >= 0.5:
        return "outline"
    if majority == 0:
        return "missed"
    if majority // 10 == tooth // 10 and abs(majority - tooth) == 1:
        return "neighbour_number"
    if majority % 10 == tooth % 10:
        return "other_quadrant"
    return "other_number"


def majority_labels(truth: np.ndarray, predicted: np.ndarray) -> dict[int, int]:
    """For each ground-truth tooth, the predicted label covering most of its pixels (0: background)."""
    out = {}
    for tooth in (int(v) for v in np.unique(truth) if v):
        values, counts = np.unique(predicted[truth == tooth], return_counts=True)
        out[tooth] = int(values[np.argmax(counts)])
    return out


#: Teeth at least this good count as found and numbered; what they still lose is their outline.
WELL_FOUND_DICE = 0.8


def outline_errors(truth: np.ndarray, predicted: np.ndarray, dice: dict[int, float]) -> dict[str, list[float]]:
    """Where the outlines of one X-ray's well-found teeth (``dice`` ≥ :data:`WELL_FOUND_DICE`) go wrong, as
    sums to add over X-rays: ``area_ratio`` (predicted / true area, one per tooth), ``wrong_pixels``
    (pixels of the tooth's symmetric difference against background, against another tooth) and
    ``by_third`` / ``area_by_third`` (the symmetric difference and the true tooth by height: apical, middle,
    coronal third; upper teeth have their apex at the top of the image, lower ones at the bottom)."""
    truth, predicted = np.squeeze(truth), np.squeeze(predicted)
    out = {"area_ratio": [], "wrong_pixels": [0.0, 0.0], "by_third": [0.0] * 3, "area_by_third": [0.0] * 3}
    for tooth, value in dice.items():
        if value < WELL_FOUND_DICE:
            continue
        true, found = truth == tooth, predicted == tooth
        out["area_ratio"].append(float(found.sum() / true.sum()))
        wrong = true ^ found
        other = np.where(true, predicted, truth)[wrong]  # what the wrong pixels are instead: 0 or another tooth
        out["wrong_pixels"][0] += float((other == 0).sum())
        out["wrong_pixels"][1] += float((other != 0).sum())
        rows = np.flatnonzero(true.any(axis=1))
        top, height = rows.min(), max(1, rows.max() - rows.min())
        for key, mask in (("by_third", wrong), ("area_by_third", true)):
            share = (np.nonzero(mask)[0] - top) / height
            if tooth // 10 in (3, 4):
                share = 1 - share  # a lower tooth's apex is at the bottom
            counts = np.bincount(np.clip((share * 3).astype(int), 0, 2), minlength=3)
            out[key] = [a + float(b) for a, b in zip(out[key], counts)]
    return out


def grid_ceiling(truth: np.ndarray, grid: tuple[int, int]) -> list[float]:
    """Per-tooth Dice of the true label map taken to ``grid`` (one-hot, area average) and back (bilinear,
    arg-max): the best a model that predicts on that grid can draw."""
    import torch  # here, not at the top: bench_ssl_ufba imports this module for its scoring alone
    import torch.nn.functional as F

    truth = np.squeeze(truth)
    values = np.unique(truth)
    onehot = torch.from_numpy(np.stack([truth == v for v in values]).astype(np.float32))[None]
    small = F.interpolate(onehot, size=grid, mode="area")
    back = values[F.interpolate(small, size=truth.shape, mode="bilinear", align_corners=False)[0].argmax(0).numpy()]
    return [float(2 * ((back == v) & (truth == v)).sum() / ((back == v).sum() + (truth == v).sum()))
            for v in values if v]


def summarize_outlines(parts: list[dict[str, list[float]]], ceiling: list[float], grid: tuple[int, int]) -> dict:
    """The sums of :func:`outline_errors` over X-rays, as shares, and the grid's ceiling."""
    wrong = np.sum([p["wrong_pixels"] for p in parts], axis=0)
    third = np.sum([p["by_third"] for p in parts], axis=0)
    area = np.sum([p["area_by_third"] for p in parts], axis=0)
    ratios = [r for p in parts for r in p["area_ratio"]]
    return {"teeth": len(ratios),
            "area_ratio_median": round(float(np.median(ratios)), 4) if ratios else None,
            "wrong_pixels_against_background": round(float(wrong[0] / max(wrong.sum(), 1)), 4),
            "wrong_pixels_by_third_apex_middle_crown": [round(float(v), 4) for v in third / max(third.sum(), 1)],
            "tooth_area_by_third_apex_middle_crown": [round(float(v), 4) for v in area / max(area.sum(), 1)],
            "grid": list(grid), "grid_ceiling_tooth_dice": round(float(np.mean(ceiling)), 4) if ceiling else None}


def model_grid(card, shape: tuple[int, ...]) -> tuple[int, int]:
    """The (rows, columns) an X-ray of ``shape`` is predicted on: the card's spacing over its whole-image extent."""
    shape = tuple(shape[-2:])
    if not card.spacing_zyx or not card.image_extent_yx:
        return shape
    return tuple(int(round(e / s)) for e, s in zip(card.image_extent_yx, card.spacing_zyx[-2:]))


def score_model(name: str, model: str, cases: list[Case], device: str, tta: bool,
                outlines: bool = False) -> tuple[dict, list[dict]]:
    """Segment every case with ``model`` and return (summary, per-tooth rows)."""
    from toothseg.core.inference.predictor import InferenceOptions, Predictor
    from toothseg.core.models.catalog import load_catalog

    folder = load_catalog().resolve(model)
    predictor = Predictor(folder, InferenceOptions(device=device, tta=tta))
    rows: list[dict] = []
    parts, ceiling, grid = [], [], None
    started = time.perf_counter()
    for case in cases:
        truth = read_label_map(case.label)
        predicted = predictor.predict(read_volume(case.image)).labels.array
        majority = majority_labels(truth.array, predicted)
        dice = {}
        for label, metrics in toothseg_case(truth.array, predicted, (1.0,) * truth.array.ndim).items():
            row = {"model": name, "case": case.id, "tooth": label,
                   **{k: round(float(v), 4) if isinstance(v, float) else v for k, v in metrics.items()}}
            if row["in_gt"]:
                row["error"] = error_kind(label, float(metrics["dice"]), majority[label])
                dice[label] = float(metrics["dice"])
            rows.append(row)
        if outlines:
            parts.append(outline_errors(truth.array, predicted, dice))
            grid = model_grid(predictor.card, truth.array.shape)
            ceiling += grid_ceiling(truth.array, grid)
    seconds = time.perf_counter() - started
    summary = summarize(rows, seconds / max(len(cases), 1), shown(str(Path(folder).resolve())))
    if outlines:
        summary["outlines"] = summarize_outlines(parts, ceiling, grid)
    return summary, rows


def summarize(rows: list[dict], seconds_per_case: float, folder: str) -> dict:
    """Mean Dice per ground-truth tooth, the mean over X-rays of each X-ray's mean tooth Dice (an X-ray with
    few teeth weighs as much as a full one, so the two differ), per tooth group, share of teeth found
    (IoU > 0.5), HD95."""
    truth = [r for r in rows if r["in_gt"]]
    dice = np.array([r["dice"] for r in truth], dtype=float)
    per_xray: dict[str, list[float]] = {}
    for r in truth:
        per_xray.setdefault(r["case"], []).append(r["dice"])
    summary = {"folder": folder, "teeth": len(truth), "mean_tooth_dice": round(float(np.mean(dice)), 4),
               "mean_xray_dice": round(float(np.mean([np.mean(v) for v in per_xray.values()])), 4)}
    for group in TOOTH_GROUPS:
        values = [r["dice"] for r in truth if tooth_group(r["tooth"]) == group]
        summary[GROUP_NAMES[group]] = round(float(np.mean(values)), 4) if values else None
    summary["teeth_with_iou_over_0.5"] = round(float(np.mean([r["iou"] > 0.5 for r in truth])), 4)
    # identification accuracy as STS-2024 defines it: teeth with IoU > 0.5 over GT ∪ prediction labels
    summary["ia"] = round(sum(r["iou"] > 0.5 for r in truth) / max(len(rows), 1), 4)
    hd95 = [r["hd95"] for r in truth if r["in_pred"] and np.isfinite(r["hd95"])]
    summary["median_hd95_px"] = round(float(np.median(hd95)), 2) if hd95 else None
    summary["false_teeth"] = sum(1 for r in rows if not r["in_gt"])
    summary["errors"] = {kind: sum(1 for r in truth if r.get("error") == kind) for kind in ERROR_KINDS}
    summary["seconds_per_case"] = round(seconds_per_case, 2)
    return summary


def paired_gain_interval(rows: list[dict], baseline: list[dict], resamples: int = 2000,
                         seed: int = 0, value: str = "dice") -> tuple[float, float]:
    """95 % interval of the gain in mean tooth Dice of ``rows`` over ``baseline`` (two models scored on
    the same X-rays), by a paired bootstrap over X-rays: one run's gain can be noise, and how much
    depends on how far the X-rays disagree. Each resample draws X-rays with replacement and takes the
    difference of the two means over their ground-truth teeth. Rows without ``in_gt`` all count, so
    one row per case (a scan's ``value="image_dsc"``) gives the interval of the mean over cases."""
    def per_case(model_rows: list[dict]) -> dict[str, tuple[float, int]]:
        sums: dict[str, list[float]] = {}
        for r in model_rows:
            if r.get("in_gt", True):
                sums.setdefault(r["case"], []).append(r[value])
        return {case: (float(np.sum(values)), len(values)) for case, values in sums.items()}

    ours, theirs = per_case(rows), per_case(baseline)
    cases = sorted(set(ours) & set(theirs))
    if not cases:
        raise ValueError("the two models share no scored case")
    ours_sum, theirs_sum = (np.array([table[c][0] for c in cases]) for table in (ours, theirs))
    ours_n, theirs_n = (np.array([table[c][1] for c in cases]) for table in (ours, theirs))
    draws = np.random.default_rng(seed).integers(0, len(cases), size=(resamples, len(cases)))
    gains = (ours_sum[draws].sum(1) / ours_n[draws].sum(1)) - (theirs_sum[draws].sum(1) / theirs_n[draws].sum(1))
    low, high = np.percentile(gains, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def t_interval(values, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` along ``axis`` and the half-width of its 95 % Student-t interval (n - 1 degrees of
    freedom): the interval across seeds that the semi-supervised and active-learning comparisons quote, where
    the seeds, not the test images, are what varies between runs. Needs at least two values."""
    from scipy import stats

    array = np.asarray(values, dtype=float)
    n = array.shape[axis]
    if n < 2:
        raise ValueError("a t-interval needs at least two values")
    return array.mean(axis=axis), stats.t.ppf(0.975, n - 1) * array.std(axis=axis, ddof=1) / np.sqrt(n)


def write_result(path: Path, result: dict, rows_key: str = "teeth") -> None:
    """The result JSON, indented, with one line per row of ``result[rows_key]`` (diffs a reader can follow)."""
    rows = result.get(rows_key, [])
    head = json.dumps({k: v for k, v in result.items() if k != rows_key}, indent=1, default=float)
    body = ",\n".join("  " + json.dumps(row, default=float) for row in rows)
    text = head[:-2] + f',\n "{rows_key}": [' + ("\n" + body + "\n ]" if rows else "]") + "\n}"
    atomic_write_text(path, text + "\n")


def save_figure(figure, path: Path, **savefig_kwargs) -> None:
    """Save a matplotlib figure as PNG atomically (an interrupted benchmark leaves no half image)."""
    with atomic_output(path, overwrite=True) as tmp:
        figure.savefig(tmp, format="png", **savefig_kwargs)


def plot(rows: list[dict], names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(names), 4))
    data = [[r["dice"] for r in rows if r["model"] == name and r["in_gt"]] for name in names]
    axis.boxplot(data, showfliers=False)
    axis.set_xticks(range(1, len(names) + 1), names, rotation=20)
    axis.set_ylabel("Dice per ground-truth tooth")
    axis.set_ylim(0, 1)
    axis.set_title("UFBA-425 test split (real panoramic X-rays)")
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=ID|DIR",
                        help="a model to score (catalogue id or model folder); repeatable")
    parser.add_argument("--subset", default="test", choices=("val", "test"))
    parser.add_argument("--limit", type=int, default=0, help="only the first N cases (a quick look)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (default off)")
    parser.add_argument("--baseline", metavar="NAME",
                        help="one of the --model names: every other model's gain over it in mean tooth Dice, with a "
                             "95 %% interval (paired bootstrap over the X-rays)")
    parser.add_argument("--outlines", action="store_true",
                        help="also say where the outlines of well-found teeth go wrong, and the model grid's ceiling")
    parser.add_argument("--out", type=Path, default=REPO / "Testing" / "benchmarks" / "results" / "ufba425_test.json")
    args = parser.parse_args(argv)

    models = []
    for text in args.model:
        name, _, model = text.partition("=")
        if not model:
            parser.error(f"--model {text!r}: expected NAME=ID|DIR")
        models.append((name, model))
    if args.baseline is not None and args.baseline not in {name for name, _ in models}:
        parser.error(f"--baseline {args.baseline!r} is not one of the --model names")
    try:
        cases = ufba_cases(args.subset)
    except ToothSegError as exc:  # no shared data folder
        print(f"bench_ufba: {exc}", file=sys.stderr)
        return 1
    if args.limit:
        cases = cases[:args.limit]
    summaries, all_rows = {}, []
    for name, model in models:
        try:
            summaries[name], rows = score_model(name, model, cases, args.device, args.tta, outlines=args.outlines)
        except ToothSegError as exc:  # an unknown model or unreadable case: one line, nothing written
            print(f"bench_ufba: {name}: {exc}", file=sys.stderr)
            return 1
        all_rows += rows
        print(f"{name}: {json.dumps(summaries[name])}", flush=True)
    if args.baseline is not None:
        baseline_rows = [r for r in all_rows if r["model"] == args.baseline]
        for name, summary in summaries.items():
            if name != args.baseline:
                summary[f"gain_over_{args.baseline}"] = round(
                    summary["mean_tooth_dice"] - summaries[args.baseline]["mean_tooth_dice"], 4)
                summary["gain_ci95"] = paired_gain_interval([r for r in all_rows if r["model"] == name], baseline_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"data": f"UFBA-425 {args.subset} split (real panoramic X-rays), {len(cases)} images",
              "protocol": "toothseg: per ground-truth tooth, pixel spacing 1",
              "settings": {"tta": args.tta, "device": args.device, "command": " ".join(sys.argv)},
              "models": summaries, "teeth": all_rows}
    write_result(args.out, result)
    plot(all_rows, [name for name, _ in models], args.out.with_suffix(".png"))
    header = ["model", "mean/tooth", "mean/X-ray", "incisors", "canines", "premolars", "molars", "IoU>0.5",
              "HD95 px", "false"]
    print(" | ".join(header))
    for name, s in summaries.items():
        print(" | ".join([name] + [f"{s[k]:.4f}" if isinstance(s[k], float) else str(s[k]) for k in
                                   ("mean_tooth_dice", "mean_xray_dice", "incisors", "canines", "premolars", "molars",
                                    "teeth_with_iou_over_0.5", "median_hd95_px", "false_teeth")])
              + (f" | gain {s[f'gain_over_{args.baseline}']:+.4f} [{s['gain_ci95'][0]:+.3f}, {s['gain_ci95'][1]:+.3f}]"
                 if "gain_ci95" in s else ""))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
