"""Training manifests from public datasets as they are distributed: no copying, no converting.

A dataset that numbers its classes its own way gets a ``label_values`` mapping in its manifests,
worked out from its class *names* (ToothFairy2/3 number the lower jaw 1 and the upper jaw 2; ToothSeg's
maxilla is 1), so that a tooth, a pulp or a jaw is never trained under another class's number.

Layouts:

* ``nnunet``: an nnU-Net raw dataset (``imagesTr/<case>_0000<ext>``, ``labelsTr/<case><ext>``,
  ``dataset.json`` with the class names), as ToothFairy2 and ToothFairy3 are distributed.
* ``folders``: an image folder and a label folder matched by case id (``A.nii.gz`` ↔ ``A.nii.gz``,
  ``A_Mask.nii.gz``, ``A_label…``, ``A_seg…``, ``A_gt…``); label values are taken as ToothSeg's
  (FDI teeth). Images without a label are unlabeled cases.
* ``sts2024``: ``folders`` with the STS-2024 challenge's folder names (``Images/``, ``Masks/``,
  ``Train-Unlabeled-update/``); its masks hold FDI numbers, plus values 1 and 71 of unknown meaning
  that are read as background.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...core.errors import InputError
from ...core.io.case_files import case_id_for, list_cases
from ...core.labels import PULP_OFFSET, LabelTable, is_fdi_tooth, standard_value_of_class_name
from .cases import Case

__all__ = ["LAYOUTS", "CLASS_SETS", "DatasetListing", "scan_dataset", "split_validation", "class_mapping",
           "label_table_for", "with_label_values"]

LAYOUTS = ("nnunet", "folders", "sts2024")
#: Which standard classes a manifest keeps; the others become background, and a pulp becomes its
#: tooth when pulp is not kept (a tooth's label then covers its pulp, as in ToothSeg's FDI models).
CLASS_SETS = ("teeth", "teeth+pulp", "all")

_IMAGE_FOLDERS = ("images", "image", "imagestr", "imgs", "img")
_LABEL_FOLDERS = ("labels", "label", "labelstr", "masks", "mask", "gt", "segmentations")
_LABEL_SUFFIX = re.compile(r"[_-](mask|masks|label|labels|seg|segmentation|gt)$", re.IGNORECASE)
_STS2024_UNKNOWN_VALUES = (1, 71)  # seen in STS-2024 training masks; meaning not published


@dataclass
class DatasetListing:
    """What a dataset folder holds: labeled and unlabeled cases, the value mapping (dataset value →
    ToothSeg value, before the class set is applied) and sentences for the user."""

    labeled: list[Case]
    unlabeled: list[Case]
    values: dict[int, int] = field(default_factory=dict)  # every class value the dataset names
    notes: list[str] = field(default_factory=list)


def _files(folder: Path) -> list[Path]:
    return [path for _, path in list_cases(folder, segmentations=True) if path.is_file()]


def _subfolder(root: Path, names: tuple[str, ...], what: str, hint: str = "") -> Path:
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in names:
            return child
    raise InputError(f"{root}: no {what} folder (looked for {', '.join(names)}; "
                     f"{hint or f'name it with --{what}'})")


def _unlabeled(folder: Path) -> list[Case]:
    return [Case(case_id_for(path), path) for path in _files(folder)]


def scan_folders(images: Path, labels: Path) -> DatasetListing:
    """Images matched to label maps by case id (label suffixes such as ``_Mask`` ignored)."""
    for folder in (images, labels):
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
    by_id: dict[str, Path] = {}
    for path in _files(labels):
        case_id = _LABEL_SUFFIX.sub("", case_id_for(path))
        if case_id in by_id:
            raise InputError(f"{labels}: two label maps for case {case_id!r}: {by_id[case_id].name}, {path.name}")
        by_id[case_id] = path
    labeled, unlabeled, seen = [], [], set()
    for path in _files(images):
        case_id = re.sub(r"_0000$", "", case_id_for(path))
        label = by_id.get(case_id)
        if label is None:
            unlabeled.append(Case(case_id, path))
        else:
            labeled.append(Case(case_id, path, label))
            seen.add(case_id)
    notes = []
    orphans = sorted(set(by_id) - seen)
    if orphans:
        notes.append(f"{len(orphans)} label map(s) without an image, left out: {', '.join(orphans[:5])}")
    if unlabeled:
        notes.append(f"{len(unlabeled)} image(s) without a label map: listed as unlabeled")
    if not labeled:
        raise InputError(f"no image in {images} has a label map in {labels} (matched by case id)")
    return DatasetListing(labeled, unlabeled, notes=notes)


def _nnunet_values(dataset_json: Path) -> tuple[dict[int, int], list[str]]:
    """The dataset's class values → ToothSeg values, from ``dataset.json``'s class names."""
    try:
        data = json.loads(dataset_json.read_text(encoding="utf-8"))
        labels = data["labels"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{dataset_json}: cannot read the class names ({exc})") from exc
    if all(str(k).isdigit() for k in labels):  # nnU-Net v1: {"0": "background", "1": "…"}
        labels = {name: int(value) for value, name in labels.items()}
    values, dropped = {}, []
    for name, value in labels.items():
        if isinstance(value, list):
            raise InputError(f"{dataset_json}: class {name!r} is a region ({value}); regions are not supported")
        value = int(value)
        if value == 0:
            continue
        standard = standard_value_of_class_name(str(name))
        values[value] = 0 if standard is None else standard
        if standard is None:
            dropped.append(str(name))
    notes = [f"classes without a ToothSeg counterpart, read as background: {', '.join(dropped)}"] if dropped else []
    moved = [f"{v}→{s}" for v, s in sorted(values.items()) if s not in (0, v)]
    if moved:
        notes.append(f"renumbered by class name: {', '.join(moved[:8])}{' …' if len(moved) > 8 else ''}")
    return values, notes


def scan_nnunet(root: Path) -> DatasetListing:
    """An nnU-Net raw dataset folder; only single-channel images (CBCT) are accepted."""
    dataset_json = root / "dataset.json"
    if not dataset_json.is_file():
        raise InputError(f"{root}: no dataset.json (an nnU-Net raw dataset has one; it names the classes)")
    values, notes = _nnunet_values(dataset_json)
    images, labels = root / "imagesTr", root / "labelsTr"
    for folder in (images, labels):
        if not folder.is_dir():
            raise InputError(f"{root}: no {folder.name} folder")
    if any(re.search(r"_0001$", case_id_for(p)) for p in _files(images)):
        raise InputError(f"{images}: images with a second channel (_0001); ToothSeg trains on one channel")
    listing = scan_folders(images, labels)
    listing.values, listing.notes = values, notes + listing.notes
    return listing


def scan_sts2024(root: Path) -> DatasetListing:
    # --images/--labels belong to the folders layout; a differently named copy is listed with it.
    hint = "for other folder names use the folders layout with --images and --labels"
    listing = scan_folders(_subfolder(root, ("images",), "images", hint), _subfolder(root, ("masks",), "labels", hint))
    unlabeled_folder = next((c for c in sorted(root.iterdir()) if c.is_dir() and c.name.lower().startswith(
        "train-unlabeled")), None)
    if unlabeled_folder is not None:
        listing.unlabeled += _unlabeled(unlabeled_folder)
    listing.values = {v: 0 for v in _STS2024_UNKNOWN_VALUES}
    listing.notes.append("mask values 1 and 71 (seen in STS-2024 training masks, meaning not published) are "
                         "read as background")
    return listing


def scan_dataset(layout: str, root: Path, images: Path | None = None, labels: Path | None = None,
                 unlabeled: list[Path] | None = None) -> DatasetListing:
    """List a dataset in one of :data:`LAYOUTS`; ``unlabeled`` folders add unlabeled cases."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    if layout == "nnunet":
        listing = scan_nnunet(root)
    elif layout == "sts2024":
        listing = scan_sts2024(root)
    elif layout == "folders":
        listing = scan_folders(images or _subfolder(root, _IMAGE_FOLDERS, "images"),
                               labels or _subfolder(root, _LABEL_FOLDERS, "labels"))
    else:
        raise InputError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    for folder in unlabeled or []:
        if not Path(folder).is_dir():
            raise InputError(f"--unlabeled {folder}: no such folder")
        listing.unlabeled += _unlabeled(Path(folder))
    repeated = sorted(i for i, n in Counter(c.id for c in listing.labeled + listing.unlabeled).items() if n > 1)
    if repeated:
        raise InputError(f"case id(s) listed twice: {', '.join(repeated[:5])}; rename them or leave a folder out")
    return listing


def _target(standard: int, class_set: str) -> int:
    """Where one standard class goes in ``class_set``."""
    if standard == 0 or is_fdi_tooth(standard):
        return standard
    if standard > PULP_OFFSET:  # pulp of tooth (standard - 100)
        return standard if class_set != "teeth" else standard - PULP_OFFSET  # a tooth includes its pulp
    return standard if class_set == "all" else 0  # jaws and canals


def class_mapping(values: dict[int, int], class_set: str) -> dict[int, int]:
    """The manifest's ``label_values``: dataset values → ToothSeg values of ``class_set`` (the others
    become background); values that stay as they are are left out."""
    if class_set not in CLASS_SETS:
        raise InputError(f"unknown class set {class_set!r} (one of {', '.join(CLASS_SETS)})")
    mapping = {source: _target(standard, class_set) for source, standard in values.items()}
    return {source: target for source, target in mapping.items() if source != target}


def label_table_for(values: dict[int, int], class_set: str) -> tuple[str, str | None]:
    """(the recipe's ``label_table`` value, the JSON to write for it or None): the built-in ``fdi``
    table when only permanent teeth are kept, else a table of exactly the kept classes."""
    kept = {_target(standard, class_set) for standard in values.values()} - {0}
    if all(is_fdi_tooth(v) and v < 50 for v in kept):
        return "fdi", None
    table = LabelTable.fdi(deciduous=any(is_fdi_tooth(v) and v > 50 for v in kept),
                           pulp=class_set != "teeth", jaws=class_set == "all")
    return "label_table.json", table.subset(kept | {v for v in table.values if is_fdi_tooth(v)}).to_json()


def _stable_rank(case_id: str, seed: int) -> str:
    return hashlib.sha256(f"toothseg-split-{seed}-{case_id}".encode()).hexdigest()


def split_validation(cases: list[Case], fraction: float, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """(training, validation): the validation cases are chosen by a hash of their id and ``seed``, so
    the split does not depend on file order or on cases added later."""
    if not 0 <= fraction < 1:
        raise InputError("the validation fraction must lie in [0, 1)")
    count = round(len(cases) * fraction)
    if fraction > 0 and len(cases) >= 2:
        count = max(1, count)
    chosen = {c.id for c in sorted(cases, key=lambda c: _stable_rank(c.id, seed))[:count]}
    return [c for c in cases if c.id not in chosen], [c for c in cases if c.id in chosen]


def with_label_values(cases: list[Case], mapping: dict[int, int]) -> list[Case]:
    pairs = tuple(sorted(mapping.items()))
    return [replace(case, label_values=pairs) for case in cases]
