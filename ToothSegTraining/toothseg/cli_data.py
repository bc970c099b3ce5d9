"""``toothseg data manifest``: training manifests for a public dataset folder as it is distributed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["add_data_parser"]

MANIFESTS = ("labeled.json", "validation.json", "unlabeled.json", "label_table.json")


def cmd_manifest(args: argparse.Namespace) -> int:
    from .core.errors import InputError
    from .core.io.atomic import atomic_write_text, check_writable_output
    from .train.config import yaml_text
    from .train.data.cases import write_manifest
    from .train.data.layouts import class_mapping, label_table_for, scan_dataset, split_validation, with_label_values

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
    train, validation = split_validation(listing.labeled, args.val_fraction, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in MANIFESTS:
        check_writable_output(out / name, overwrite=True)
    source = f"toothseg data manifest {args.layout} {args.root} (classes: {class_set}, seed {args.seed})"
    writers = {"labeled.json": lambda path: write_manifest(path, with_label_values(train, mapping), notes=source)}
    if validation:
        writers["validation.json"] = lambda path: write_manifest(path, with_label_values(validation, mapping),
                                                                 notes=source)
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


def add_data_parser(sub, common: argparse.ArgumentParser, parser_class) -> None:
    from .train.data.layouts import CLASS_SETS, LAYOUTS

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
    manifest.set_defaults(func=cmd_manifest)
