"""``toothseg export-stl``: one closed surface per label, in millimetres, LPS or RAS."""

from __future__ import annotations

import argparse

from ._common import (
    add_unknown_labels_options,
    apply_unknown_policy,
    label_table_from,
    parse_label_list,
    progress_bar,
    read_labels_with_reference,
)

__all__ = ["add_export_stl_parser"]


def cmd_export_stl(args: argparse.Namespace) -> int:
    """Write one closed surface per label (STL/OBJ, millimetres, LPS or RAS)."""
    from ..core.export.surfaces import SurfaceOptions, export_surfaces

    options = SurfaceOptions(smoothing=args.smoothing, decimate=args.decimate,
                             coordinate_system=args.coordinate_system, file_format=args.format)
    parse_label_list(args.labels)  # fail on a typo before reading anything
    labels, file_table = read_labels_with_reference(args.labels_file, args.reference)
    table = file_table or label_table_from(args.label_table)
    labels, table = apply_unknown_policy(labels, table, args.unknown_labels)
    values = parse_label_list(args.labels)
    progress, bar = progress_bar("export", args.quiet)
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


def add_export_stl_parser(sub, common: argparse.ArgumentParser) -> None:
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
    add_unknown_labels_options(stl)
    stl.set_defaults(func=cmd_export_stl)
