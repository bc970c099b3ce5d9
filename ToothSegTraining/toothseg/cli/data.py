"""``toothseg data manifest``: training manifests for a public dataset folder as it is distributed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["add_data_parser"]

MANIFESTS = ("labeled.json", "validation.json", "unlabeled.json", "label_table.json")


def cmd_manifest(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.io.atomic import atomic_write_text, check_writable_output
    from ..train.config.loader import yaml_text
    from ..train.data.cases import write_manifest
    from ..train.data.layouts import class_mapping, label_table_for, scan_dataset, split_validation, with_label_values

    # Options another layout would silently ignore are refused: the user expects them to act.
    if args.classes is not None and args.layout != "nnunet":
        raise InputError(f"--classes applies to the nnunet layout (its dataset.json names the classes); {args.layout} "
                         "label maps are read as ToothSeg values as they are")
    if (args.images or args.labels) and args.layout != "folders":
        raise InputError(f"--images and --labels apply to the folders layout; the {args.layout} layout has fixed "
                         "folder names")
    class_set = args.classes or "teeth"
    out = Path(args.out).resolve()  # the printed recipe block then works from any folder
    if not args.overwrite:
        existing = [name for name in MANIFESTS if (out / name).exists()]
        if existing:  # a fixed split is what makes runs comparable: never replaced by accident
            raise InputError(f"{out} already holds {', '.join(existing)}; keep that split, or add --overwrite")
    root = Path(args.root)
    listing = scan_dataset(args.layout, root, root / args.images if args.images else None,
                           root / args.labels if args.labels else None, args.unlabeled)
    mapping = class_mapping(listing.values, class_set)
    table_name, table_json = label_table_for(listing.values, class_set)
    labeled, handedness_lines = _checked_handedness(with_label_values(listing.labeled, mapping), args.mirror_labels)
    train, validation = split_validation(labeled, args.val_fraction, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in MANIFESTS:
        check_writable_output(out / name, overwrite=True)
    source = f"toothseg data manifest {args.layout} {args.root} (classes: {class_set}, seed {args.seed})"
    writers = {"labeled.json": lambda path: write_manifest(path, train, notes=source)}
    if validation:
        writers["validation.json"] = lambda path: write_manifest(path, validation, notes=source)
    if listing.unlabeled:
        writers["unlabeled.json"] = lambda path: write_manifest(path, listing.unlabeled, notes=source)
    if table_json:
        writers["label_table.json"] = lambda path: atomic_write_text(path, table_json + "\n")
    # The manifests are one split: all are written beside the old ones first, then renamed in one go, so a
    # failure (a full disk) leaves the earlier split whole, never new training cases with old validation.
    staged = {name: out / f".{name}.new" for name in writers}
    try:
        for name, write in writers.items():
            write(staged[name])
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    for name, path in staged.items():
        os.replace(path, out / name)
    for name in set(MANIFESTS) - set(writers):  # --overwrite: no stale manifest of an earlier listing stays
        (out / name).unlink(missing_ok=True)

    print(f"{out}: {len(train)} labeled, {len(validation)} validation, {len(listing.unlabeled)} unlabeled case(s)")
    for line in handedness_lines:
        print(f"  {line}")
    for note in listing.notes:
        print(f"  note: {note}")
    print("data block for a recipe:")
    print("data:\n  source: files")
    print(f"  labeled: {yaml_text(str(out / 'labeled.json'))}")
    if validation:
        print(f"  validation: {yaml_text(str(out / 'validation.json'))}")
    if listing.unlabeled:
        print(f"  unlabeled: {yaml_text(str(out / 'unlabeled.json'))}")
    print(f"  label_table: {yaml_text(str(out / table_name) if table_json else table_name)}")
    return 0


def _checked_handedness(cases: list, mirror: bool) -> tuple[list, list[str]]:
    """Each labeled case's left/right handedness (:mod:`toothseg.core.handedness`), one line per case.

    A mirrored case is marked ``mirror_labels`` with ``--mirror-labels``; without it the whole manifest is
    refused, naming the cases: a model trained on them numbers every correctly oriented scan mirror-wise."""
    from dataclasses import replace

    from ..core.errors import InputError
    from ..core.handedness import handedness_of
    from ..train.data.dataset import read_training_labels

    checked, lines, mirrored = [], [], []
    for case in cases:
        verdict = handedness_of(read_training_labels(case, handedness="off"))
        det = f" {verdict.determinant:+.2f}" if verdict.determinant is not None else ""
        if verdict.mirrored:
            mirrored.append(case.id)
            if mirror:
                case = replace(case, mirror_labels=True)
                lines.append(f"{case.id}: handedness mirrored{det}: left/right numbers swapped when read "
                             "(mirror_labels)")
            else:
                lines.append(f"{case.id}: handedness mirrored{det}")
        else:
            lines.append(f"{case.id}: handedness {verdict.verdict}{det}"
                         + (f" ({verdict.reason})" if verdict.sign == 0 else ""))
        checked.append(case)
    if mirrored and not mirror:
        raise InputError(f"{len(mirrored)} of {len(cases)} labeled case(s) have a mirrored left/right numbering "
                         f"({', '.join(mirrored[:5])}{'…' if len(mirrored) > 5 else ''}): the teeth numbered as "
                         "the patient's right lie on the patient's left in the image's LPS frame. A model trained "
                         "on them numbers every correctly oriented scan mirror-wise. Add --mirror-labels to have "
                         "their left/right numbers swapped when read (the files are not changed), or fix the "
                         "labels or the image headers; nothing was written")
    return checked, lines


def add_data_parser(sub, common: argparse.ArgumentParser, parser_class) -> None:
    from ..train.data.layouts import CLASS_SETS, LAYOUTS

    data = sub.add_parser("data", parents=[common], help="training manifests for public datasets",
                          description="Training data: manifests that list a dataset's cases where they lie.")
    data_sub = data.add_subparsers(dest="data_command", metavar="STEP", parser_class=parser_class, required=True)
    manifest = data_sub.add_parser(
        "manifest", parents=[common], help="list a dataset folder as training manifests (no copying)",
        description="Write OUT/labeled.json, OUT/validation.json and OUT/unlabeled.json for a dataset folder as "
                    "distributed, and print the recipe's data block. nnunet: an nnU-Net raw dataset such as "
                    "ToothFairy2/3 (imagesTr/, labelsTr/, dataset.json; classes renumbered by their names, e.g. "
                    "ToothFairy's lower jaw 1 becomes the mandible 2). folders: an image and a label folder "
                    "matched by case id (labels taken as FDI values). sts2024: the STS-2024 challenge folders "
                    "(Images/, Masks/, Train-Unlabeled-update/). The validation cases are chosen by a hash of "
                    "their id, so the split does not depend on file order.")
    manifest.add_argument("layout", choices=LAYOUTS)
    manifest.add_argument("root", metavar="ROOT", help="the dataset folder")
    manifest.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the manifests")
    manifest.add_argument("--images", metavar="DIR",
                          help="folders layout: the image folder, relative to ROOT (default: images, image …)")
    manifest.add_argument("--labels", metavar="DIR",
                          help="folders layout: the label folder, relative to ROOT (default: labels, masks …)")
    manifest.add_argument("--unlabeled", action="append", default=[], metavar="DIR",
                          help="a folder of unlabeled images to add (repeatable)")
    manifest.add_argument("--classes", choices=CLASS_SETS,
                          help="classes to keep (nnunet layout): teeth (pulp counted as its tooth; default), "
                               "teeth+pulp, or all (jaws and mandibular canals too); the others become background")
    manifest.add_argument("--val-fraction", type=float, default=0.1, help="share of labeled cases for validation")
    manifest.add_argument("--seed", type=int, default=0, help="another seed gives another validation split")
    manifest.add_argument("--overwrite", action="store_true", help="replace manifests already in OUT")
    manifest.add_argument("--mirror-labels", action="store_true",
                          help="cases whose left/right numbering is mirrored (each 3D label map is checked: "
                               "the patient's right teeth must lie on the patient's right in the image's LPS "
                               "frame) are marked to have their left/right numbers swapped when read; without "
                               "it such a case is refused with the reason")
    manifest.set_defaults(func=cmd_manifest)
