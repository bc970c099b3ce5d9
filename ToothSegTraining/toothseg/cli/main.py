"""The ``toothseg`` command line: thin argument parsing over the functions Slicer also calls.

Every failure the user can cause ends with one line on stderr and a non-zero exit status
(1 bad input or output, 2 bad usage, 130 interrupted); ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .core.errors import CancelledError, InputError, ToothSegError

log = logging.getLogger("toothseg")

EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 70, 130


# --------------------------------------------------------------------------- helpers
def add_progress_lines_option(parser: argparse.ArgumentParser) -> None:
    """``--progress-lines``: the machine-readable progress the Slicer module reads (one option text everywhere)."""
    parser.add_argument("--progress-lines", action="store_true",
                        help="print 'progress FRACTION STAGE' lines on stdout (for the Slicer module)")


def _progress_bar(description: str, quiet: bool):
    """A :class:`Progress` that drives a tqdm bar on stderr.

    The bar appears on the first update, only on a terminal (tqdm's ``disable=None``), so that logs
    and error output stay clean; ``--quiet`` turns it off.
    """
    from .core.progress import Progress

    if quiet:
        return Progress(), None
    from tqdm import tqdm

    holder: list = []

    def callback(fraction: float, stage: str) -> None:
        if not holder:
            holder.append(tqdm(total=100, desc=description, unit="%", leave=False, file=sys.stderr, disable=None,
                               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}"))
        bar = holder[0]
        bar.n = round(fraction * 100, 1)
        bar.set_postfix_str(stage[:60], refresh=False)
        bar.refresh()

    class _Closer:
        def close(self) -> None:
            if holder:
                holder[0].close()

    return Progress(callback), _Closer()


def _parse_label_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        values = []
    if not values:  # '--labels ""' (an empty shell variable) must not mean "all labels"
        raise InputError(f"--labels expects comma-separated integers like 11,12,21, got '{text}'")
    return values


def _label_table(path: str | None):
    from .core.labels import LabelTable

    if path is None:
        return LabelTable.fdi(deciduous=True, pulp=True, jaws=True)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read label table ({exc.strerror})") from exc
    return LabelTable.from_json(text)


def _apply_unknown_policy(labels, table, policy: str):
    """Return (labels, table) after handling values the table does not define."""
    import numpy as np

    from .core.labels import LabelTable

    unknown = table.unknown_values(np.unique(labels.array))
    if not unknown or policy == "error":
        return labels, table
    if policy == "drop":
        log.warning("removing %d unknown label value(s): %s", len(unknown), ", ".join(map(str, unknown)))
        array = labels.array.copy()
        array[np.isin(array, unknown)] = 0
        return labels.with_array(array), table
    extra = LabelTable.custom({v: f"label {v}" for v in unknown})
    merged = LabelTable({**table.entries, **extra.entries}, table.name, dict(table.swap_pairs))
    return labels, merged


def _read_labels_with_reference(path: str, reference: str | None):
    from .core.io.images import file_format, read_label_map, read_volume
    from .core.io.segmentation import read_segmentation
    from .core.volume import check_same_geometry

    ref = read_volume(reference) if reference else None
    if file_format(path) == "seg.nrrd":
        seg = read_segmentation(path, reference=ref)
        return seg.labels, seg.table
    labels = read_label_map(path)
    if ref is not None:
        check_same_geometry(ref, labels, f"image {reference}", f"label map {path}")
    return labels, None


# --------------------------------------------------------------------------- commands
def cmd_convert(args: argparse.Namespace) -> int:
    """Convert between image formats, or a label map to/from a Slicer ``.seg.nrrd``."""
    from .core.io.atomic import check_writable_output
    from .core.io.images import check_writable_suffix, file_format, read_label_map, read_volume, write_volume
    from .core.io.segmentation import write_segmentation

    output = Path(args.output)
    check_writable_suffix(output, segmentation=True)
    check_writable_output(output, overwrite=args.overwrite)
    to_segmentation = output.name.lower().endswith(".seg.nrrd")
    from_segmentation = file_format(args.input) == "seg.nrrd"
    if to_segmentation or from_segmentation or args.labels or args.reference:
        try:
            labels, file_table = _read_labels_with_reference(args.input, args.reference)
        except InputError as exc:
            if args.labels or from_segmentation or args.reference:
                raise
            # the user asked for a format, not for label reading: say why the input was read as labels
            raise InputError(f"a .seg.nrrd holds a segmentation, so the input is read as a label map: {exc}") from exc
        table = file_table or _label_table(args.label_table)
        labels, table = _apply_unknown_policy(labels, table, args.unknown_labels)
        present = table.check_array(labels.array)
        if to_segmentation:
            write_segmentation(labels, table, output, overwrite=args.overwrite)
            print(f"wrote {output}: {len(present)} segments ({labels.describe()})")
        else:
            write_volume(labels, output, overwrite=args.overwrite)
            print(f"wrote {output}: label map with {len(present)} labels ({labels.describe()})")
        return 0
    volume = read_volume(args.input) if not args.labels else read_label_map(args.input)
    write_volume(volume, output, overwrite=args.overwrite)
    print(f"wrote {output} ({volume.describe()})")
    return 0


def cmd_export_stl(args: argparse.Namespace) -> int:
    """Write one closed surface per label (STL/OBJ, millimetres, LPS or RAS)."""
    from .core.export.surfaces import SurfaceOptions, export_surfaces

    options = SurfaceOptions(smoothing=args.smoothing, decimate=args.decimate,
                             coordinate_system=args.coordinate_system, file_format=args.format)
    _parse_label_list(args.labels)  # fail on a typo before reading anything
    labels, file_table = _read_labels_with_reference(args.labels_file, args.reference)
    table = file_table or _label_table(args.label_table)
    labels, table = _apply_unknown_policy(labels, table, args.unknown_labels)
    values = _parse_label_list(args.labels)
    progress, bar = _progress_bar("export", args.quiet)
    try:
        results = export_surfaces(labels, table, args.out_dir, options, values=values,
                                  merged=args.merged, overwrite=args.overwrite, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    for item in results:
        if not args.merged:
            print(f"{item.path}  {item.triangles} triangles, {item.surface_volume_mm3:.1f} mm3")
    where = results[0].path if args.merged and results else args.out_dir
    print(f"wrote {len(results)} surface(s) to {where} (mm, {options.coordinate_system.value})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the main job on the bundled sample with the bundled model, offline."""
    from .core.progress import CancelToken, cancel_on_sigterm
    from .demo import run_demo

    print("ToothSeg demo: bundled sample CBCT (SYNTHETIC intensities on the real tooth shapes of STS-2024 "
          f"Validation_0002) with {'model ' + args.model if args.model else 'the bundled 3D model'}")
    progress, bar = _progress_bar("demo", args.quiet)
    token = CancelToken()
    progress.token = token
    try:
        with cancel_on_sigterm(token):
            result = run_demo(args.out_dir, model=args.model, device=args.device, fast=args.fast,
                              picture=not args.no_picture, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"  model: {result.model}")
    print(f"  segmentation: {result.segmentation} ({len(result.teeth_found)} labels, "
          f"{result.seconds['segment']:.0f} s)")
    print(f"  surfaces: {result.stl_files} STL files (mm, LPS) in {result.stl_dir}")
    if result.picture:
        print(f"  picture: {result.picture}")
    if result.handedness:
        hand = result.handedness
        det = f" ({hand['determinant']:+.2f})" if hand.get("determinant") is not None else ""
        print(f"  left/right numbering: {hand['verdict']}{det}")
    for warning in result.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    m = result.metrics
    if m:
        missed = sorted(set(result.teeth_expected) - set(result.teeth_found))
        extra = sorted(set(result.teeth_found) - set(result.teeth_expected))
        print(f"  against the sample's true labels (STS-2024 protocol; synthetic intensities): tooth Dice "
              f"{m['instance_dsc']:.3f}, identification accuracy {m['ia']:.3f}, whole-dentition Dice "
              f"{m['image_dsc']:.3f}" + (f"; missed {missed}" if missed else "")
              + (f"; not in the truth {extra}" if extra else ""))
    print(f"  report: {result.report}")
    print(f"done; open {result.segmentation} or the STL files in 3D Slicer")
    return 0


def _silence_library_warnings() -> None:
    """ITK/VTK print multi-line C++ warnings to stderr; our own messages say what matters."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        from vtkmodules.vtkCommonCore import vtkObject

        vtkObject.GlobalWarningDisplayOff()
    except ImportError:  # pragma: no cover - VTK is a dependency
        pass


# --------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as argparse does, without the usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _add_unknown_labels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label-table", metavar="JSON",
                        help="label table (names, colours, codes); default: FDI teeth, pulp, jaws")
    parser.add_argument("--unknown-labels", choices=("error", "keep", "drop"), default="error",
                        help="values not in the label table: refuse (default), keep as 'label N', or remove")
    parser.add_argument("--reference", metavar="IMAGE",
                        help="the image the labels belong to; refuse labels on another grid")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="toothseg", description="Tooth segmentation for dental CBCT and panoramic X-rays.",
                     epilog="Coordinates are LPS millimetres (DICOM/ITK/Slicer convention) unless stated.")
    parser.add_argument("--version", action="version", version=f"toothseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    common = argparse.ArgumentParser(add_help=False)  # the same switches after the command name
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    convert = sub.add_parser("convert", parents=[common],
                             help="convert images and label maps (incl. to/from .seg.nrrd)",
                             description="Convert NIfTI/NRRD/MHA/DICOM/HDF5/PNG images; a label map to a Slicer "
                                         ".seg.nrrd with one named, coloured segment per tooth, and back.")
    convert.add_argument("input", help="image/label file or DICOM folder")
    convert.add_argument("output", help="output file (.nii.gz, .nrrd, .mha, .png, .seg.nrrd)")
    convert.add_argument("--labels", action="store_true", help="the input is a label map (keep integer values)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_unknown_labels(convert)
    convert.set_defaults(func=cmd_convert)

    stl = sub.add_parser("export-stl", parents=[common], help="one closed surface mesh per tooth (STL/OBJ)",
                         description="Export one watertight surface per label, in millimetres; file names start "
                                     "with the label value (11_upper_right_central_incisor.stl).")
    stl.add_argument("labels_file", metavar="LABELS", help="label map or .seg.nrrd")
    stl.add_argument("-o", "--out-dir", required=True, help="folder for the surface files")
    stl.add_argument("--coordinate-system", choices=("LPS", "RAS"), default="LPS", type=str.upper,
                     help="LPS (default; DICOM, ITK, Slicer STL files) or RAS")
    stl.add_argument("--smoothing", type=float, default=0.0, help="0 (none) to 1 (strong), Slicer's scale")
    stl.add_argument("--decimate", type=float, default=0.0, help="fraction of triangles to remove, 0 to 0.95")
    stl.add_argument("--labels", metavar="LIST", help="only these labels, e.g. 11,12,21")
    stl.add_argument("--format", choices=("stl", "obj"), default="stl")
    stl.add_argument("--merged", action="store_true", help="one file with all teeth instead of one per tooth")
    stl.add_argument("--overwrite", action="store_true", help="replace existing files")
    _add_unknown_labels(stl)
    stl.set_defaults(func=cmd_export_stl)

    demo = sub.add_parser("demo", parents=[common], help="run the main job on the bundled sample (offline)",
                          description="Segment the bundled sample CBCT (synthetic intensities on real tooth shapes) "
                                      "with the bundled 3D model; write a .seg.nrrd, one STL per tooth, an overview "
                                      "picture and a JSON report that scores the result against the sample's labels.")
    demo.add_argument("-o", "--out-dir", default="toothseg-demo", help="output folder (its demo files are replaced)")
    demo.add_argument("--model", metavar="ID|DIR", help="another 3D model (default: the bundled one)")
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    demo.add_argument("--fast", action="store_true", help="no TTA and less window overlap (the CI setting)")
    demo.add_argument("--no-picture", action="store_true", help="skip the overview picture")
    demo.set_defaults(func=cmd_demo)

    from .cli_al import add_al_parser
    from .cli_data import add_data_parser
    from .cli_evaluate import add_evaluate_parser
    from .cli_models import add_models_parser
    from .cli_segment import add_segment_parser
    from .cli_train import add_train_parser

    add_segment_parser(sub, common)
    add_train_parser(sub, common)
    add_evaluate_parser(sub, common)
    add_models_parser(sub, common, _Parser)
    add_al_parser(sub, common, _Parser)
    add_data_parser(sub, common, _Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="toothseg: %(levelname)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if not args.debug:
        _silence_library_warnings()
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # output piped into 'head' meets the closed pipe here, not at interpreter exit
        return code
    except BrokenPipeError:  # the reader went away ('toothseg models list | head -1'): nothing to say to anyone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except CancelledError:
        print("toothseg: cancelled; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("toothseg: interrupted; no partial output was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ToothSegError as exc:
        if args.debug:
            raise
        print(f"toothseg: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        if args.debug:
            raise
        print("toothseg: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        print(f"toothseg: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, with a way to see more
        if args.debug:
            raise
        print(f"toothseg: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
