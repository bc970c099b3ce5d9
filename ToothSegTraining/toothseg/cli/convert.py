"""``toothseg convert``: images and label maps between formats, and to and from Slicer's ``.seg.nrrd``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import InputError
from ._common import add_unknown_labels_options, apply_unknown_policy, label_table_from, read_labels_with_reference

__all__ = ["add_convert_parser"]


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert between image formats, or a label map to/from a Slicer ``.seg.nrrd``."""
    from ..core.io.atomic import check_writable_output
    from ..core.io.images import check_writable_suffix, file_format, read_label_map, read_volume, write_volume
    from ..core.io.segmentation import write_segmentation

    output = Path(args.output)
    check_writable_suffix(output, segmentation=True)
    check_writable_output(output, overwrite=args.overwrite)
    to_segmentation = output.name.lower().endswith(".seg.nrrd")
    from_segmentation = file_format(args.input) == "seg.nrrd"
    if to_segmentation or from_segmentation or args.labels or args.reference:
        try:
            labels, file_table = read_labels_with_reference(args.input, args.reference)
        except InputError as exc:
            if args.labels or from_segmentation or args.reference:
                raise
            # the user asked for a format, not for label reading: say why the input was read as labels
            raise InputError(f"a .seg.nrrd holds a segmentation, so the input is read as a label map: {exc}") from exc
        table = file_table or label_table_from(args.label_table)
        labels, table = apply_unknown_policy(labels, table, args.unknown_labels)
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


def add_convert_parser(sub, common: argparse.ArgumentParser) -> None:
    convert = sub.add_parser("convert", parents=[common],
                             help="convert images and label maps (incl. to/from .seg.nrrd)",
                             description="Convert NIfTI/NRRD/MHA/DICOM/HDF5/PNG images; a label map to a Slicer "
                                         ".seg.nrrd with one named, coloured segment per tooth, and back.")
    convert.add_argument("input", help="image/label file or DICOM folder")
    convert.add_argument("output", help="output file (.nii.gz, .nrrd, .mha, .png, .seg.nrrd)")
    convert.add_argument("--labels", action="store_true", help="the input is a label map (keep integer values)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_unknown_labels_options(convert)
    convert.set_defaults(func=cmd_convert)
