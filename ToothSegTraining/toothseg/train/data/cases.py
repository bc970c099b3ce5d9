"""Cases and manifests: which image goes with which label map, and the fixed UFBA-425 split.

A manifest is JSON ``{"cases": [{"id": "A", "image": "images/A.nii.gz", "label": "labels/A.nii.gz"}, …]}``
(paths relative to the manifest's folder unless absolute; ``label`` omitted for unlabeled cases).
An optional ``"label_values": {"1": 2, "2": 1, "5": 0}`` maps the dataset's label values to ToothSeg's
(0: background) for datasets that number classes their own way; values it does not name are kept.
A case with ``"mirror_labels": true`` has a mirrored left/right numbering (its patient's right teeth
numbered as left ones, as in both STS-2024 label maps): its left/right numbers are swapped
(1x<->2x, 3x<->4x, ...) after ``label_values``, when it is read (``toothseg data manifest --mirror-labels``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from ...core.io.atomic import atomic_write_text

__all__ = ["Case", "read_manifest", "write_manifest", "apply_label_values", "ufba_cases", "make_ufba_split",
           "shared_data_dir", "UFBA_SPLIT_FILE"]

UFBA_SPLIT_FILE = Path(__file__).resolve().parents[1] / "splits" / "ufba425.json"


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    label: Path | None = None
    label_values: tuple[tuple[int, int], ...] = ()  # (dataset value, ToothSeg value) pairs, from the manifest
    mirror_labels: bool = False  # swap left/right numbers when read (a mirrored numbering, see the module doc)
    anatomy: str = "teeth"  # a synthetic source's map: FDI "teeth", or "jaws" (jaw-level, binary teeth only)


def shared_data_dir() -> Path:
    """The project's real data (``../shared/data`` beside the checkout, or ``$TOOTHSEG_SHARED_DATA``)."""
    env = os.environ.get("TOOTHSEG_SHARED_DATA")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    raise InputError("cannot find the shared data folder; set TOOTHSEG_SHARED_DATA")


def read_manifest(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None,
                  require_labels: bool = False) -> list[Case]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read manifest ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cases", []), list):
        raise InputError(f"{path}: a manifest is a JSON object whose 'cases' is a list of "
                         '{"id": ..., "image": ..., "label": ...}')
    base = Path(root) if root else path.parent
    label_values = _label_values(path, data.get("label_values") or {})
    cases = []
    seen: set[str] = set()
    for item in data.get("cases", []):
        if not isinstance(item, dict) or "id" not in item or "image" not in item:
            raise InputError(f"{path}: every case needs 'id' and 'image': {item!r}")
        if not all(isinstance(item.get(key), (str, type(None))) for key in ("image", "label")) or not item["image"]:
            raise InputError(f"{path}: case {item['id']}: 'image' and 'label' are file paths (text)")
        if str(item["id"]) in seen:  # cases are cached, pseudo-labelled and split by ID
            raise InputError(f"{path}: case ID {item['id']!r} appears twice")
        seen.add(str(item["id"]))
        image = Path(item["image"]) if Path(item["image"]).is_absolute() else base / item["image"]
        label = item.get("label")
        label = (Path(label) if Path(label).is_absolute() else base / label) if label else None
        if require_labels and label is None:
            raise InputError(f"{path}: case {item['id']} has no label")
        mirror = item.get("mirror_labels", False)
        if not isinstance(mirror, bool):
            raise InputError(f"{path}: case {item['id']}: 'mirror_labels' is true or false, not {mirror!r}")
        if mirror and label is None:
            raise InputError(f"{path}: case {item['id']}: 'mirror_labels' needs a label")
        cases.append(Case(str(item["id"]), image, label, label_values, mirror))
    if not cases:
        raise InputError(f"{path}: the manifest lists no cases")
    return cases


def _label_values(path: Path, mapping: object) -> tuple[tuple[int, int], ...]:
    """A manifest's ``label_values`` as sorted (dataset value, ToothSeg value) pairs; a malformed one is
    an InputError (a silently ignored mapping would train on wrongly numbered teeth)."""
    if not isinstance(mapping, dict):
        raise InputError(f"{path}: 'label_values' must map dataset values to ToothSeg values, e.g. {{\"1\": 2}}")
    pairs = []
    for key, value in mapping.items():
        try:
            source, target = int(key), int(value)
        except (TypeError, ValueError):
            raise InputError(f"{path}: label_values {key!r}: {value!r} is not a pair of integers") from None
        if not (0 <= source <= 65535 and 0 <= target <= 255):
            raise InputError(f"{path}: label_values {key!r}: {value!r} is out of range")
        pairs.append((source, target))
    return tuple(sorted(pairs))


def apply_label_values(array, label_values: tuple[tuple[int, int], ...]):
    """``array`` with a manifest's value mapping applied (values it does not name are kept)."""
    if not label_values:
        return array

    top = max(int(array.max(initial=0)), *(source for source, _ in label_values)) + 1
    lut = np.arange(top, dtype=np.int64)
    for source, target in label_values:
        lut[source] = target
    return lut[array].astype(array.dtype, copy=False)  # targets are at most 255: any label dtype holds them


def write_manifest(path: str | os.PathLike[str], cases: list[Case], notes: str | None = None) -> None:
    """Write a manifest (paths relative to its folder); the cases' ``label_values`` (all the same, or
    none) go with it, ``notes`` too (a sentence saying where it came from)."""
    path = Path(path)
    mappings = {case.label_values for case in cases}
    if len(mappings) > 1:
        raise InputError(f"{path}: the cases have different label_values; write one manifest per mapping")
    items = []
    for case in cases:
        item = {"id": case.id, "image": os.path.relpath(case.image, path.parent)}
        if case.label is not None:
            item["label"] = os.path.relpath(case.label, path.parent)
        if case.mirror_labels:
            item["mirror_labels"] = True
        items.append(item)
    data: dict = {}
    if notes:
        data["notes"] = notes
    mapping = mappings.pop() if mappings else ()
    if mapping:
        data["label_values"] = {str(source): target for source, target in mapping}
    data["cases"] = items
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _stable_key(case_id: str) -> str:
    return hashlib.sha256(f"toothseg-ufba425-{case_id}".encode()).hexdigest()


def make_ufba_split(case_ids: list[str],
                    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> dict[str, list[str]]:
    """Train/val/test split stratified by UFBA category (``cateN``), ordered by a fixed hash."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for case_id in case_ids:
        by_category[case_id.split("-")[0]].append(case_id)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for category in sorted(by_category):
        ordered = sorted(by_category[category], key=_stable_key)
        n = len(ordered)
        n_test = max(1, round(fractions[2] * n))
        n_val = max(1, round(fractions[1] * n)) if n - n_test > 2 else 0
        split["test"] += ordered[:n_test]
        split["val"] += ordered[n_test:n_test + n_val]
        split["train"] += ordered[n_test + n_val:]
    return {k: sorted(v) for k, v in split.items()}


def ufba_cases(subset: str, labeled_fraction: float = 1.0, part: str = "labeled") -> list[Case]:
    """Cases of the committed UFBA-425 split (``train``, ``val``, ``test``).

    ``labeled_fraction`` < 1 keeps a fixed, nested subset of the training cases as labeled (10 % is
    inside 25 %, which is inside 100 %); ``part="unlabeled"`` returns the rest, without labels.
    """
    split = json.loads(UFBA_SPLIT_FILE.read_text(encoding="utf-8"))
    if subset not in split:
        raise InputError(f"unknown UFBA-425 subset {subset!r} (train, val, test)")
    ids = split[subset]
    if subset == "train" and labeled_fraction < 1.0:
        ordered = sorted(ids, key=lambda c: _stable_key("labeled-" + c))
        n = max(1, round(labeled_fraction * len(ordered)))
        ids = sorted(ordered[:n]) if part == "labeled" else sorted(ordered[n:])
    elif part == "unlabeled":
        ids = []
    root = shared_data_dir() / "ufba425"
    cases = []
    for case_id in ids:
        label = root / "labels" / f"{case_id}.png" if part == "labeled" else None
        cases.append(Case(case_id, root / "images" / f"{case_id}.png", label))
    return cases
