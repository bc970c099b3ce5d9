"""``toothseg evaluate GT PRED``: challenge-exact metrics for one pair or two folders."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError, ToothSegError

__all__ = ["add_evaluate_parser"]

log = logging.getLogger("toothseg")


def _label_maps(folder: Path) -> dict[str, Path]:
    """A folder's label maps by case id (``.seg.nrrd`` included: ``toothseg segment`` writes them; two
    files of one case are refused by ``list_cases``)."""
    from ..core.io.case_files import list_cases

    return dict(list_cases(folder, segmentations=True))


def _pairs(gt: Path, pred: Path):
    """(case id, gt path, pred path or None) — folders are matched by case id."""
    if gt.is_file():
        return [(gt.name, gt, pred)]
    predictions = _label_maps(pred) if pred.is_dir() else {}
    return [(case_id, path, predictions.get(case_id)) for case_id, path in _label_maps(gt).items()]


def _load(path: Path, reference, strict: bool):
    from ..core.errors import GeometryMismatchError
    from ..core.io.images import read_label_map
    from ..core.volume import check_same_geometry

    labels = read_label_map(path)
    if reference is not None:
        try:
            check_same_geometry(reference, labels, "ground truth", f"prediction {path.name}")
        except GeometryMismatchError:
            if strict:
                raise
            import SimpleITK as sitk

            from ..core.io.images import volume_from_sitk, volume_to_sitk

            log.warning("%s: resampled onto the ground-truth grid (nearest neighbour)", path.name)
            image = sitk.Resample(volume_to_sitk(labels), volume_to_sitk(reference), sitk.Transform(),
                                  sitk.sitkNearestNeighbor, 0)
            labels = volume_from_sitk(image, reference.kind)
    return labels


def _case_view(case_id: str, gt, pred_array, teeth: list[dict]):
    """The case's mean Dice over its ground-truth teeth and its most telling axial slice, reoriented
    (exactly: axis permutations and flips) so that it reads in radiological convention."""
    import numpy as np

    from ..core.preprocessing import to_canonical
    from ..core.volume import Volume
    from ..evaluation_report import CaseView, crop_to_content, worst_slice

    dice = [t["dice"] for t in teeth if t["in_gt"]]
    gt_lps = to_canonical(gt)[0].array
    pred_lps = to_canonical(Volume(pred_array, gt.spacing, gt.origin, gt.direction, gt.kind))[0].array
    planar = gt.is_2d  # a panoramic X-ray (stored as one slice): the image itself
    index = worst_slice(gt_lps, pred_lps)
    window = crop_to_content(gt_lps[index], pred_lps[index])
    return CaseView(case_id, float(np.mean(dice)) if dice else math.nan, gt_lps[index][window].copy(),
                    pred_lps[index][window].copy(), index, planar)


def _tooth_rows(case_id: str, gt, pred_array) -> list[dict]:
    from ..core.metrics.protocols import toothseg_case

    return [{"case": case_id, "label": label, **metrics}
            for label, metrics in toothseg_case(gt.array, pred_array, gt.spacing_zyx).items()]


def _method_name(args: argparse.Namespace) -> str:
    """PRED's name in the report: --method-name, else its folder name or file name without extensions."""
    pred = Path(args.pred)
    return args.method_name or (pred.name if pred.is_dir() else pred.name.split(".")[0])


def _check_outputs(args: argparse.Namespace, single: bool) -> Path | None:
    """Fail before any metric is computed if an output cannot be written or an input is missing; the
    inputs first, so that a refused call creates no report folder. Returns the report folder if this
    call created it (removed again if nothing can be scored)."""
    from ..core.io.atomic import check_outputs_apart, check_writable_output

    if args.compare and not args.report:
        raise InputError("--compare only adds methods to the report: add --report DIR")
    for name, folder in args.compare:
        other = Path(folder)
        if not other.exists():
            raise InputError(f"--compare {name}: {folder}: no such file or folder")
        # The same rule as for PRED: a ground-truth file is compared with files, a folder with folders
        # (a folder given for one case would otherwise be scored as an empty prediction).
        if single and not other.is_file():
            raise InputError(f"--compare {name}: {folder} is a folder, but the ground truth {Path(args.gt).name} "
                             "is one file: give that method's prediction file")
        if not single and not other.is_dir():
            raise InputError(f"--compare {name}: {folder} is a file, but the ground truth {args.gt} is a folder: "
                             "give that method's folder of predictions")
    names = [_method_name(args), *(name for name, _ in args.compare)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # the box plot and the method table would show two methods under one name
        raise InputError(f"two methods are named {repeated[0]!r} in the report: give each --compare (and "
                         "--method-name for PRED) its own name")
    # scores are rewritten at each call, so a --json naming an input would silently replace it
    check_outputs_apart({"GT": args.gt, "PRED": args.pred, **{f"--compare {n}": f for n, f in args.compare}},
                        {"--json": args.json, "--csv": args.csv, "--report": args.report})
    for path in (args.json, args.csv):
        if path:
            check_writable_output(path, overwrite=True)
    if args.report:
        from ..evaluation_report import prepare_report_folder

        created = not Path(args.report).exists()
        prepare_report_folder(args.report)
        return Path(args.report) if created else None
    return None


def _name_and_folder(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=PRED, got {text!r}")
    return name, folder


@dataclass
class _Scores:
    """What one pass over the cases gathers: the protocol's rows, the problems, and for ``--report``
    and ``--compare`` the per-tooth rows and case views."""

    rows: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)
    stsr_inputs: list[tuple] = field(default_factory=list)
    tooth_rows: list[dict] = field(default_factory=list)
    views: list = field(default_factory=list)
    other_rows: dict[str, list[dict]] = field(default_factory=dict)
    scored: int = 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score PRED against GT: one pair (any problem is an error, nothing is scored) or two folders (a bad
    case is reported and the others are scored: an unusable prediction scores as an empty one, as in the
    challenges; an unreadable ground truth cannot be scored and is skipped)."""
    gt_root, pred_root = Path(args.gt), Path(args.pred)
    single = _check_inputs(gt_root, pred_root)
    pairs = _pairs(gt_root, pred_root)
    if not pairs:  # scores of nothing would print as NaN with exit 0
        raise InputError(f"{gt_root}: no ground-truth label maps in this folder (.nii.gz, .nrrd, .seg.nrrd, .mha, "
                         ".png, ...)")
    new_report_folder = _check_outputs(args, single)
    # Other methods (--compare) are scored in the same pass, while each ground truth is in memory.
    compared = {name: {case_id: path for case_id, _, path in _pairs(gt_root, Path(folder))}
                for name, folder in args.compare}
    scores = _Scores(other_rows={name: [] for name in compared})
    for case_id, gt_path, pred_path in pairs:
        _score_case(args, scores, case_id, gt_path, pred_path, compared, single)
    if not scores.scored:  # every ground truth unreadable: no score to give, and no output files written
        if new_report_folder is not None:
            with contextlib.suppress(OSError):  # only if still empty
                new_report_folder.rmdir()
        for problem in scores.problems:
            print(f"  {problem['case']}: {problem['problem']}", file=sys.stderr)
        raise InputError(f"no case could be scored: all {len(scores.problems)} ground-truth file(s) in {gt_root} "
                         "are unreadable (listed above)")
    summary = _summary(args.protocol, scores)
    _write_outputs(args, summary, scores)
    for key, value in summary.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if scores.problems:
        print(f"problems ({len(scores.problems)}):")
    for problem in scores.problems:
        print(f"  {problem['case']}: {problem['problem']}")
    return 0


def _check_inputs(gt_root: Path, pred_root: Path) -> bool:
    """Whether GT and PRED are one pair of files (else two folders); an error if they are neither."""
    if not gt_root.exists():
        raise InputError(f"{gt_root}: no such file or folder")
    single = gt_root.is_file()
    if single and not pred_root.is_file():
        raise InputError(f"{pred_root}: no such file (the ground truth {gt_root.name} is one file, so PRED must be)")
    if not single and not pred_root.is_dir():
        raise InputError(f"{pred_root}: no such folder (the ground truth {gt_root} is a folder, so PRED must be)")
    return single


def _score_case(args: argparse.Namespace, scores: _Scores, case_id: str, gt_path: Path, pred_path: Path | None,
                compared: dict[str, dict[str, Path]], single: bool) -> None:
    import numpy as np

    from ..core.io.images import read_label_map
    from ..core.metrics.protocols import sts2024_case

    try:
        gt = read_label_map(gt_path)
    except ToothSegError as exc:
        if single:
            raise
        scores.problems.append({"case": case_id, "problem": f"ground truth skipped: {exc}"})
        return
    scores.scored += 1
    pred = None
    if pred_path is None or not Path(pred_path).exists():
        scores.problems.append({"case": case_id, "problem": "no prediction (counted as empty)"})
    else:
        try:
            pred = _load(Path(pred_path), gt, args.strict)
        except ToothSegError as exc:
            if single:
                raise
            scores.problems.append({"case": case_id, "problem": f"{exc} (counted as empty)"})
    pred_array = pred.array if pred is not None else np.zeros_like(gt.array)
    if args.protocol == "sts2024":
        scores.rows.append({"case": case_id, **sts2024_case(gt.array, pred_array)})
    elif args.protocol == "stsr2025":
        scores.stsr_inputs.append((gt.array, pred.array if pred is not None else None, gt.spacing_zyx))
    teeth = _tooth_rows(case_id, gt, pred_array) if args.protocol == "toothseg" or args.report else []
    if args.protocol == "toothseg":
        scores.rows.extend(teeth)
    if args.report:
        scores.tooth_rows.extend(teeth)
        scores.views.append(_case_view(case_id, gt, pred_array, teeth))
    for name, predictions in compared.items():
        other = predictions.get(case_id)
        other_array = None
        if other is None or not Path(other).exists():
            scores.problems.append({"case": case_id, "problem": f"[{name}] no prediction (counted as empty)"})
        else:
            try:
                other_array = _load(Path(other), gt, args.strict).array
            except ToothSegError as exc:
                scores.problems.append({"case": case_id, "problem": f"[{name}] {exc} (counted as empty)"})
        scores.other_rows[name] += _tooth_rows(case_id, gt, np.zeros_like(gt.array) if other_array is None
                                               else other_array)


def _summary(protocol: str, scores: _Scores) -> dict:
    """The protocol's aggregate (STSR 2025 also replaces the rows by its per-case table)."""
    import numpy as np

    from ..core.metrics.protocols import aggregate_sts2024, stsr2025_cases

    if protocol == "sts2024":
        return aggregate_sts2024([{k: v for k, v in r.items() if k != "case"} for r in scores.rows])
    if protocol == "stsr2025":
        summary = stsr2025_cases(scores.stsr_inputs)
        scores.rows = [dict(case=i, **c) for i, c in enumerate(summary.pop("cases"))]
        return summary
    values = [r["dice"] for r in scores.rows if r["in_gt"]]
    return {"mean_dice": float(np.nanmean(values)) if values else math.nan, "teeth": len(values)}


def _write_outputs(args: argparse.Namespace, summary: dict, scores: _Scores) -> None:
    """--json, --csv and --report, each written atomically."""
    from ..core.io.atomic import atomic_write_text

    output = {"protocol": args.protocol, **summary, "cases": scores.rows, "problems": scores.problems}
    if args.json:
        atomic_write_text(args.json, json.dumps(output, indent=1, default=float))
    if args.csv:  # written even when no tooth was found anywhere, so that no earlier table is left in its place
        table = io.StringIO()  # through csv: a case ID may hold a comma
        columns = list(scores.rows[0]) if scores.rows else ["case", "label"]
        writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(scores.rows)
        atomic_write_text(args.csv, table.getvalue())
    if args.report:
        from ..evaluation_report import ReportData, write_report

        page = write_report(ReportData(args.protocol, summary, scores.tooth_rows, scores.views, scores.problems,
                                       _method_name(args), scores.other_rows),
                            args.report, note=args.report_note or "")
        print(f"report: {page}")


def add_evaluate_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("evaluate", parents=[common], help="challenge-exact metrics (STS-2024, STSR-2025, per tooth)",
                       description="Compare predictions with ground truth: one pair of label maps (a missing or "
                                   "unreadable file is an error), or two folders matched by case id (a missing or "
                                   "unreadable prediction counts as empty, an unreadable ground truth is skipped; "
                                   "both are reported).")
    p.add_argument("gt", metavar="GT")
    p.add_argument("pred", metavar="PRED")
    p.add_argument("--protocol", choices=("sts2024", "stsr2025", "toothseg"), default="toothseg")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--csv", metavar="OUT")
    p.add_argument("--strict", action="store_true",
                   help="refuse predictions on another grid instead of resampling them (nearest neighbour): for "
                        "one pair an error, for folders the case counts as empty and is reported")
    p.add_argument("--report", metavar="DIR",
                   help="write DIR/index.html (self-contained: per-tooth table, dental chart, box plot by tooth "
                        "type, worst cases) and its PNG plots; needs matplotlib")
    p.add_argument("--report-note", metavar="TEXT",
                   help="a sentence shown at the top of the report (e.g. 'intensities are synthetic')")
    p.add_argument("--method-name", metavar="NAME", help="name of PRED in the report (default: its file/folder name)")
    p.add_argument("--compare", metavar="NAME=PRED", type=_name_and_folder, action="append", default=[],
                   help="another method's predictions (same GT), shown beside PRED in the report's box plot and "
                        "method table; repeatable (needs --report)")
    p.set_defaults(func=cmd_evaluate)
