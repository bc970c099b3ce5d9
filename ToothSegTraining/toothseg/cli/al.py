"""``toothseg al …``: the active-learning case pool from the command line (files only, no server)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ._common import add_progress_lines_option, progress_bar

__all__ = ["add_al_parser"]


def _pool(folder: str):
    from ..core.pool.store import CasePool

    return CasePool(folder)


def cmd_init(args: argparse.Namespace) -> int:
    from ..core.io.case_files import case_id_for, is_case_folder, list_cases, without_non_scan_folders
    from ..core.errors import InputError
    from ..core.pool.store import MANIFEST_NAME, CasePool, check_new_images

    images: list[tuple[str, Path]] = []
    for item in args.images:
        path = Path(item)
        if not path.exists():
            raise InputError(f"{item}: no such file or folder")
        images.extend(list_cases(path) if is_case_folder(path) else [(case_id_for(path), path)])
    # a pool made inside the folder of scans it was made from (or another pool there) is a subfolder of
    # that folder, not a DICOM case
    own = Path(args.pool).resolve()
    pools = [path for _, path in images if Path(path, MANIFEST_NAME).is_file() or Path(path).resolve() == own]
    others = [str(path) for path in pools if Path(path).resolve() != own]
    if others:
        print("left out (case pools, not scans): " + ", ".join(others), file=sys.stderr)
    images, left_out = without_non_scan_folders([(case_id, path) for case_id, path in images if path not in pools])
    if left_out:
        print("left out (folders without a DICOM series): " + ", ".join(left_out), file=sys.stderr)
    if not images:
        raise InputError("no images found in " + ", ".join(args.images))
    check_new_images(images)  # before a new pool is created
    model = args.model
    if model and (Path(model) / "model.json").is_file():
        model = str(Path(model).resolve())  # a folder: independent of the directory later commands run in
    created = not Path(args.pool, MANIFEST_NAME).exists()
    pool = CasePool.create(args.pool, current_model=model) if created else CasePool(args.pool)
    if args.model and pool.read().current_model != model:
        print(f"note: the pool keeps its current model ({pool.read().current_model or 'catalogue default'}); "
              "--model applies when a pool is created", file=sys.stderr)
    try:
        added = pool.add_images(images, copy=args.copy, skip_present=True)
    except BaseException:
        if created:  # no empty pool is left behind by a failed init
            pool.remove_empty()
        raise
    present = len(images) - len(added)
    print(f"{pool.folder}: {len(added)} case(s) added"
          + (f", {present} already there" if present else "") + f", {len(pool.read().cases)} in the pool")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..core.progress import CancelToken, Progress, cancel_on_sigterm, print_progress_line
    from ..train.active_learning.loop import predict_pool

    pool = _pool(args.pool)
    token = CancelToken()
    if args.progress_lines:
        progress, closer = Progress(print_progress_line, token), None
    else:
        progress, closer = progress_bar("predict", args.quiet)
        progress.token = token
    try:
        with cancel_on_sigterm(token):
            summary = predict_pool(pool, args.model, args.device, args.scores.split(","), args.redo, progress)
    finally:
        if closer:
            closer.close()
    print(f"predicted {len(summary.predicted)}, skipped {len(summary.skipped)} (done or under review/corrected), "
          f"failed {len(summary.failed)}")
    for failure in summary.failed:
        print(f"  {failure['case']}: {failure['error']}", file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_next(args: argparse.Namespace) -> int:
    from ..core.pool.ranking import choose_next

    pool = _pool(args.pool)
    state = pool.read()
    stale = pool.stale_predictions(state)
    if stale:
        print(f"not offered ({len(stale)}; their scans were replaced since they were predicted; 'toothseg al predict' "
              f"predicts them again): {', '.join(stale[:10])}", file=sys.stderr)
    chosen = choose_next(state, args.k, args.strategy, args.seed, args.diverse, args.include_review, exclude=stale)
    if not args.dry_run:
        pool.set_status(chosen, "in_review", f"selected ({args.strategy})")
    for case_id in chosen:
        record = state.cases[case_id]
        score = f"{record.scores[args.strategy]:.4f}" if args.strategy in record.scores else "-"
        worst = sorted(record.tooth_scores.get(args.strategy, {}).items(), key=lambda kv: -kv[1])[:3]
        teeth = ", ".join(f"{t} ({v:.2f})" for t, v in worst)
        print(f"{case_id}\t{score}\t{pool.path(record.image)}" + (f"\treview teeth {teeth}" if teeth else ""))
    return 0


def cmd_accept(args: argparse.Namespace) -> int:
    pool = _pool(args.pool)
    target = pool.accept(args.case, args.labels, image=args.image, note=args.note or "")
    print(f"{args.case}: corrected labels stored as {target}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..core.io.atomic import leftover_temporaries
    from ..core.pool.store import STATUSES

    pool = _pool(args.pool)
    state = pool.read()
    missing = pool.missing_images(state)
    changed = pool.changed_labeled_images(state)
    leftovers = leftover_temporaries(pool.folder)
    if args.clean and leftovers:
        for folder in leftovers:
            shutil.rmtree(folder, ignore_errors=True)
        kept = [f for f in leftovers if f.exists()]
        print(f"removed {len(leftovers) - len(kept)} temporary folder(s) left by interrupted writes", file=sys.stderr)
        leftovers = kept
    counts = Counter(c.status for c in state.cases.values())
    if args.json:
        print(json.dumps({"cases": len(state.cases), "status": {s: counts.get(s, 0) for s in STATUSES},
                          "held_out": sorted(c.id for c in state.cases.values() if c.holdout),
                          "missing_images": missing, "changed_images": changed,
                          "leftover_temporaries": [pool.relative(f) for f in leftovers],
                          "current_model": state.current_model,
                          "training_in_progress": state.training,
                          "versions": [v.__dict__ for v in state.versions]}, indent=1))
        return 0
    print(f"{pool.folder}: {len(state.cases)} case(s); " + ", ".join(f"{s} {counts.get(s, 0)}" for s in STATUSES))
    print(f"current model: {state.current_model or '(catalogue default)'}")
    for version in state.versions:
        print(f"  {version.version} {version.model_id}: {'PROMOTED' if version.promoted else 'kept'} — {version.note}")
    if state.training:
        print(f"fine-tuning {state.training['version']} was interrupted; 'toothseg al finetune' resumes it "
              "(--restart discards it)")
    if missing:
        print(f"images missing on disk ({len(missing)}): {', '.join(missing[:10])}", file=sys.stderr)
    if changed:
        print(f"images changed since their corrected labels were accepted ({len(changed)}; left out of fine-tuning, "
              f"restore the scans or add the new ones under new case IDs): {', '.join(changed[:10])}", file=sys.stderr)
    if leftovers:
        print(f"{len(leftovers)} temporary folder(s) left by interrupted writes (no case data in use; "
              f"'toothseg al status --clean' removes them)", file=sys.stderr)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..core.progress import CancelToken, Progress, cancel_on_sigterm, print_progress_line
    from ..train.active_learning.loop import finetune_pool

    pool = _pool(args.pool)
    token = CancelToken()
    progress = None
    if args.progress_lines:  # the GUI's progress; Cancel (SIGTERM) checkpoints and exits, resumable
        progress = Progress(print_progress_line)
    with cancel_on_sigterm(token):
        result = finetune_pool(pool, args.recipe, args.start_from, args.device, args.set or [],
                               register=not args.no_register, quiet=args.quiet or args.progress_lines,
                               progress=progress, token=token, restart=args.restart,
                               from_scratch=args.from_scratch)
    version = result.version
    print(f"{version.version}: model {version.model_id} at {result.folder}")
    print(f"  {version.note}")
    return 0


def add_al_parser(sub, common: argparse.ArgumentParser, parser_class) -> None:

    al = sub.add_parser("al", parents=[common], help="active learning: case pool, review order, fine-tuning",
                        description="Active-learning loop on a pool folder: predict the cases, review the most "
                                    "uncertain first, accept corrections, fine-tune and promote a new model "
                                    "version only if it is not worse on held-out corrected cases.")
    al_sub = al.add_subparsers(dest="al_command", metavar="STEP", parser_class=parser_class, required=True)

    init = al_sub.add_parser("init", parents=[common], help="create a pool (or add images to one)",
                            description="Create a pool, or add images to one: images it already has (same file, "
                                        "or its copy) are left out, so a folder can be given again as scans "
                                        "arrive; an ID it has for another image is refused.")
    init.add_argument("pool", metavar="POOL")
    init.add_argument("--images", nargs="+", required=True, metavar="DIR|FILE",
                      help="image files, DICOM folders or folders of cases")
    init.add_argument("--copy", action="store_true",
                      help="copy the images into the pool, each read back as it is copied; none is added if one "
                           "cannot be read (default: reference them)")
    init.add_argument("--model", help="the pool's starting model (catalogue ID or folder; default: catalogue default)")
    init.set_defaults(func=cmd_init)

    predict = al_sub.add_parser("predict", parents=[common], help="predict and score the pool's open cases")
    predict.add_argument("pool", metavar="POOL")
    predict.add_argument("--model", help="catalogue ID or folder (default: the pool's current model)")
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    predict.add_argument("--scores", default="entropy", metavar="LIST",
                         help="acquisition scores to compute: entropy,tta,ensemble (default: entropy)")
    predict.add_argument("--redo", action="store_true", help="predict again cases this model already predicted")
    add_progress_lines_option(predict)
    predict.set_defaults(func=cmd_predict)

    nxt = al_sub.add_parser("next", parents=[common], help="the cases to correct next (marked in_review)")
    nxt.add_argument("pool", metavar="POOL")
    nxt.add_argument("-k", type=int, default=5, help="how many cases (default 5)")
    nxt.add_argument("--strategy", choices=("entropy", "tta", "ensemble", "random"), default="entropy")
    nxt.add_argument("--diverse", action="store_true", help="spread the choice over different kinds of doubt")
    nxt.add_argument("--seed", type=int, default=0, help="seed of the random strategy")
    nxt.add_argument("--include-review", action="store_true", help="also rank cases already in review")
    nxt.add_argument("--dry-run", action="store_true", help="only list; do not mark the cases in_review")
    nxt.set_defaults(func=cmd_next)

    accept = al_sub.add_parser("accept", parents=[common], help="store a corrected label map (a new revision)")
    accept.add_argument("pool", metavar="POOL")
    accept.add_argument("case", metavar="CASE")
    accept.add_argument("labels", metavar="LABELS", help="label map on the case image's grid (NIfTI, NRRD, PNG)")
    accept.add_argument("--image", help="the image, for a case the pool does not have yet (copied in); for a known "
                        "case it must be that case's image (another image under a known ID is refused)")
    accept.add_argument("--note", help="free text kept in the case history")
    accept.set_defaults(func=cmd_accept)

    status = al_sub.add_parser("status", parents=[common], help="counts per status, model versions, problems")
    status.add_argument("pool", metavar="POOL")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--clean", action="store_true",
                        help="remove temporary folders that interrupted writes left behind (untouched for an hour)")
    status.set_defaults(func=cmd_status)

    finetune = al_sub.add_parser("finetune", parents=[common],
                                 help="fine-tune on corrected cases; promote if not worse",
                                 description="Train RECIPE with the corrected cases as labeled data and the other "
                                             "images as unlabeled data, starting from the current model. The new "
                                             "version is promoted only if its mean tooth Dice on held-out corrected "
                                             "cases is not below the current model's. An interrupted run resumes "
                                             "with the recipe and settings it started with.")
    finetune.add_argument("pool", metavar="POOL")
    finetune.add_argument("--recipe", help="training recipe (YAML) saying how to train (default: the bundled "
                                           "finetune_pool.yaml); the pool supplies the data, the model being "
                                           "fine-tuned its network")
    start = finetune.add_mutually_exclusive_group()
    start.add_argument("--from", dest="start_from", metavar="MODEL",
                       help="start from this model (default: the pool's current model, else the catalogue default "
                            "that predicted the pool)")
    start.add_argument("--from-scratch", action="store_true",
                       help="train the recipe's own network from random weights instead")
    finetune.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    finetune.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipe override (repeatable)")
    finetune.add_argument("--no-register", action="store_true", help="do not add the version to the model catalogue")
    finetune.add_argument("--restart", action="store_true",
                          help="discard an interrupted fine-tuning run instead of resuming it")
    add_progress_lines_option(finetune)
    finetune.set_defaults(func=cmd_finetune)
