"""``toothseg segment``: one scan, a DICOM folder, or a folder of cases (batch, resumable, shardable)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ..core.errors import CancelledError, InputError, ToothSegError
from ..core.io.case_files import is_case_folder, list_cases, without_non_scan_folders

from ._common import add_progress_lines_option, progress_bar

__all__ = ["add_segment_parser"]

log = logging.getLogger("toothseg")

OUTPUT_FORMATS = ("seg.nrrd", "nii.gz", "nrrd", "png")


def _write_result(prediction, output: Path, overwrite: bool) -> None:
    from ..core.io.images import write_volume
    from ..core.io.segmentation import write_segmentation

    name = output.name.lower()
    if name.endswith(".seg.nrrd"):
        write_segmentation(prediction.labels, prediction.table, output, overwrite=overwrite,
                           fields=prediction.header_fields())
    else:
        write_volume(prediction.labels, output, overwrite=overwrite)


def _progress(args, label: str, token):
    from ..core.progress import Progress, print_progress_line

    if args.progress_lines:
        return Progress(print_progress_line, token), None

    progress, bar = progress_bar(label, args.quiet)
    progress.token = token
    return progress, bar


def _segment_one(predictor, source: Path, output: Path, args, token, stl_dir: Path | None,
                 uncertainty_path: Path | None, overlay_path: Path | None = None) -> dict:
    from ..core.io.atomic import check_writable_output
    from ..core.io.images import read_volume, write_volume

    # every output is checked before the prediction, not after the labels are written
    for path in (output, uncertainty_path, overlay_path):
        if path is not None:
            check_writable_output(path, overwrite=args.overwrite)
    if stl_dir is not None and not args.overwrite:
        from ..core.errors import OutputExistsError
        from ..core.export.surfaces import existing_surfaces

        earlier = existing_surfaces(stl_dir, predictor.table, "stl")  # what export_surfaces writes below
        if earlier:
            raise OutputExistsError(f"--stl-dir {stl_dir} holds {len(earlier)} tooth surface(s) of an earlier export "
                                    f"(e.g. {earlier[0].name}): use --overwrite to replace them, or another folder")
    volume = read_volume(source)
    progress, bar = _progress(args, source.name, token)
    try:
        prediction = predictor.predict(volume, progress)
    finally:
        if bar is not None:
            bar.close()
    _write_result(prediction, output, args.overwrite)
    summary = {"input": str(source), "output": str(output), "model": predictor.card.id,
               "labels": prediction.report.get("labels_found", []),
               "warnings": prediction.warnings, "seconds": prediction.report.get("seconds")}
    for key in ("handedness", "jaws_in_view"):
        if key in prediction.report:
            summary[key] = prediction.report[key]
    if uncertainty_path is not None and prediction.uncertainty is not None:
        write_volume(prediction.uncertainty, uncertainty_path, overwrite=args.overwrite)
        summary["uncertainty"] = str(uncertainty_path)
        summary["tooth_uncertainty"] = {str(k): v for k, v in prediction.tooth_uncertainty.items()}
    if stl_dir is not None and prediction.labels.array.any() and not prediction.labels.is_2d:
        from ..core.export.surfaces import export_surfaces

        written = export_surfaces(prediction.labels, prediction.table, stl_dir, overwrite=args.overwrite)
        summary["stl"] = [str(item.path) for item in written]
    if overlay_path is not None:
        from ..core.export.overview import write_overview, write_panoramic_overlay

        if prediction.labels.is_2d:
            write_panoramic_overlay(volume, prediction.labels, prediction.table, overlay_path, overwrite=args.overwrite)
        else:
            write_overview(volume, prediction.labels, prediction.table, overlay_path, overwrite=args.overwrite)
        summary["overlay"] = str(overlay_path)
    return summary


def cmd_segment(args: argparse.Namespace) -> int:
    from ..core.inference import InferenceOptions, Predictor
    from ..core.io.atomic import check_outputs_apart
    from ..core.models.catalog import load_catalog
    from ..core.progress import CancelToken, cancel_on_sigterm

    source = Path(args.input)
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    check_outputs_apart({"INPUT": source}, {"OUTPUT": args.output, "--uncertainty": args.uncertainty,
                                            "--overlay": args.overlay, "--report": args.report,
                                            "--stl-dir": args.stl_dir})
    batch = is_case_folder(source)
    output = Path(args.output)
    source_kind = None if batch else _kind_of(source)  # from the headers only: picks the model, checks OUTPUT
    listing = _batch_cases(source, args) if batch else None  # once: a DICOM folder's headers are scanned to list it
    catalog = load_catalog()
    if args.model:
        model_folder = catalog.resolve(args.model)
    else:
        kinds = {_kind_of(path) for _, path in listing[0]} if listing else {source_kind}
        kind = "2d" if kinds - {None} == {"2d"} else "3d"
        model_folder = catalog.resolve(catalog.default(kind).id)
    options = InferenceOptions(device=args.device, tta=args.tta, fast=args.fast, uncertainty=bool(args.uncertainty),
                               batch_size=args.batch_size, jaws_in_view=None if args.jaws == "auto" else args.jaws)
    predictor = Predictor(model_folder, options)
    _check_output_types(args, predictor.card.input_kind, batch, source_kind)
    token = CancelToken()
    with cancel_on_sigterm(token):
        if not batch:
            summary = _segment_one(predictor, source, output, args, token,
                                   Path(args.stl_dir) if args.stl_dir else None,
                                   Path(args.uncertainty) if args.uncertainty else None,
                                   Path(args.overlay) if args.overlay else None)
            count = len(summary["labels"])
            listed = ", ".join(map(str, summary["labels"]))
            print(f"wrote {output}: {count} label{'' if count == 1 else 's'} ({listed})")
            if "overlay" in summary:
                print(f"wrote {summary['overlay']}: picture of the labels over the image")
            for warning in summary["warnings"]:
                print(f"  warning: {warning}", file=sys.stderr)
            if args.report:
                from ..core.io.atomic import atomic_write_text

                atomic_write_text(args.report, json.dumps(summary, indent=1))
            return 0
        return _segment_batch(predictor, source, listing, output, args, token)


def _batch_cases(source: Path, args: argparse.Namespace) -> tuple[list[tuple[str, Path]], list[str]]:
    """The cases of a batch and the sub-folders left out: the folder's scans, less the result folders
    the user put inside it (``segment cases -o cases/out`` must not take ``out/`` for a DICOM series on
    the next run) and sub-folders without a DICOM series (notes, empty folders), which are not cases."""
    outputs = {Path(p).resolve() for p in (args.output, args.stl_dir, args.uncertainty, args.overlay) if p}
    return without_non_scan_folders([(case_id, path) for case_id, path in list_cases(source)
                                     if path.resolve() not in outputs])


def _kind_of(path: Path) -> str | None:
    """``2d`` or ``3d`` from the image's header; None when it cannot be read (that case fails on its own
    when it is read; in a batch the others go on)."""
    from ..core.io.images import input_kind

    try:
        return input_kind(path)
    except InputError:
        return None


def _check_output_types(args: argparse.Namespace, model_kind: str, batch: bool, source_kind: str | None) -> None:
    """Refuse, before any image is read, an output type that could only fail after inference (minutes
    on a scan): a label file type that cannot hold the model's result, an uncertainty map as PNG,
    surfaces of a panoramic X-ray."""
    from ..core.io.images import WRITABLE_SUFFIXES

    label_types = (".seg.nrrd", *(s for s in WRITABLE_SUFFIXES if model_kind == "2d" or s != ".png"))
    if args.stl_dir and model_kind == "2d":  # was ignored without a word
        raise InputError("--stl-dir: surfaces need a 3D scan; a panoramic X-ray's teeth have no depth")
    if batch:
        if args.format == "png" and model_kind != "2d":
            raise InputError("--format png holds a panoramic X-ray's labels; a scan's go to seg.nrrd, nii.gz or nrrd")
        return
    if source_kind is not None and source_kind != model_kind:
        return  # the model refuses this input with its own message, which is the one to read first
    output = Path(args.output)
    if not output.name.lower().endswith(label_types):
        kind = "panoramic X-ray" if model_kind == "2d" else "3D scan"
        raise InputError(f"{output}: a {kind}'s labels are written as {', '.join(label_types)}; give OUTPUT one "
                         "of these endings")
    if args.uncertainty and not args.uncertainty.lower().endswith(tuple(s for s in WRITABLE_SUFFIXES if s != ".png")):
        raise InputError(f"{args.uncertainty}: the uncertainty map holds fractions; write it as .nii.gz, .nrrd or .mha")


def _segment_batch(predictor, source: Path, listing: tuple[list[tuple[str, Path]], list[str]], out_dir: Path,
                   args, token) -> int:
    from ..core.io.atomic import atomic_write_text

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    every_case, left_out = listing
    if not every_case:
        raise InputError(f"{source}: no images or DICOM folders found"
                         + (f" (sub-folders without a DICOM series: {', '.join(left_out)})" if left_out else ""))
    if left_out and rank == 0:
        print(f"left out {len(left_out)} sub-folder(s) without a DICOM series: {', '.join(left_out)}", flush=True)
    cases = every_case[rank::world]  # more processes than cases: the extra ones have nothing to do, no error
    out_dir.mkdir(parents=True, exist_ok=True)
    extension = args.format or ("png" if predictor.card.input_kind == "2d" else "seg.nrrd")
    done, skipped, failed = [], [], []
    started = time.perf_counter()
    for index, (case_id, path) in enumerate(cases, start=1):
        output = out_dir / f"{case_id}.{extension}"
        if output.exists() and not args.overwrite:
            skipped.append(case_id)
            continue
        stl_dir = Path(args.stl_dir) / case_id if args.stl_dir else None
        uncertainty = Path(args.uncertainty) / f"{case_id}_uncertainty.nii.gz" if args.uncertainty else None
        if uncertainty is not None:
            uncertainty.parent.mkdir(parents=True, exist_ok=True)
        overlay = Path(args.overlay) / f"{case_id}_overlay.png" if args.overlay else None
        if overlay is not None:
            overlay.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{index}/{len(cases)}] {case_id}", flush=True)
        try:
            done.append(_segment_one(predictor, path, output, args, token, stl_dir, uncertainty, overlay))
        except CancelledError:
            raise
        except (ToothSegError, OSError, MemoryError) as exc:
            failed.append({"case": case_id, "error": str(exc)})
            print(f"  failed: {exc}", file=sys.stderr, flush=True)
    summary = {"model": predictor.card.id, "rank": rank, "world_size": world, "done": done, "skipped": skipped,
               "failed": failed, "left_out": left_out, "seconds": round(time.perf_counter() - started, 1)}
    name = "summary.json" if world == 1 else f"summary.rank{rank}.json"
    atomic_write_text(out_dir / name, json.dumps(summary, indent=1))
    print(f"{len(done)} segmented, {len(skipped)} already done, {len(failed)} failed; summary in {out_dir / name}")
    return 1 if failed else 0


def add_segment_parser(sub, common: argparse.ArgumentParser) -> None:

    p = sub.add_parser("segment", parents=[common], help="segment teeth in a scan, a DICOM folder or a folder of cases",
                       description="Segment teeth. INPUT is an image file, a DICOM folder, or a folder of cases "
                                   "(batch: one output per case id, resumable; shards across processes under "
                                   "torchrun via RANK/WORLD_SIZE). OUTPUT is .seg.nrrd, .nii.gz or .nrrd for a 3D "
                                   "scan and .png for a panoramic X-ray, or a folder in batch mode.")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT")
    p.add_argument("--model", metavar="ID|DIR", help="catalogue ID or model folder (default: the catalogue's "
                                                     "default for the input kind)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="mirrored test-time augmentation on the axes the model allows (default on)")
    p.add_argument("--fast", action="store_true", help="no TTA and less window overlap")
    p.add_argument("--batch-size", type=int, default=0,
                   help="windows per forward pass (default: 2 on a GPU; on a CPU as many as make about "
                        "1 M voxels, up to 8)")
    p.add_argument("--jaws", choices=("auto", "both", "upper", "lower"), default="auto",
                   help="which jaws the scan holds, if you know: with one jaw every tooth is numbered in it (a "
                        "lower jaw alone would otherwise be cut along a bite it does not have); with both, upper "
                        "and lower teeth joined along the whole bite are still cut apart; default auto: the "
                        "model decides (3D models that number teeth from the arch)")
    p.add_argument("--stl-dir", metavar="DIR", help="also export one STL per tooth (mm, LPS; 3D scans only)")
    p.add_argument("--uncertainty", metavar="FILE", help="write the voxel-wise uncertainty (entropy) map "
                                                         "(a folder in batch mode)")
    p.add_argument("--overlay", metavar="PNG", help="also write a picture of the labels over the image: the X-ray "
                                                  "for a panoramic, three slices and a 3D view for a scan (a folder "
                                                  "in batch mode)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, help="output type in batch mode")
    p.add_argument("--report", metavar="JSON", help="write what was found (labels, warnings, timings)")
    p.add_argument("--overwrite", action="store_true")
    add_progress_lines_option(p)
    p.set_defaults(func=cmd_segment)
