"""Cases and manifests: which image goes with which label map, and the fixed UFBA-425 split.

A manifest is JSON ``{"cases": [{"id": "A", "image": "images/A.nii.gz", "label": "labels/A.nii.gz"}, …]}``
(paths relative to the manifest's folder unless absolute; ``label`` omitted for unlabeled cases).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import InputError

__all__ = ["Case", "read_manifest", "write_manifest", "ufba_cases", "make_ufba_split", "shared_data_dir",
           "UFBA_SPLIT_FILE"]

UFBA_SPLIT_FILE = Path(__file__).resolve().parents[1] / "splits" / "ufba425.json"


@dataclass(frozen=True)
class Case:
    id: str
    image: Path
    label: Path | None = None


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
    base = Path(root) if root else path.parent
    cases = []
    for item in data.get("cases", []):
        if "id" not in item or "image" not in item:
            raise InputError(f"{path}: every case needs 'id' and 'image': {item!r}")
        image = Path(item["image"]) if Path(item["image"]).is_absolute() else base / item["image"]
        label = item.get("label")
        label = (Path(label) if Path(label).is_absolute() else base / label) if label else None
        if require_labels and label is None:
            raise InputError(f"{path}: case {item['id']} has no label")
        cases.append(Case(str(item["id"]), image, label))
    if not cases:
        raise InputError(f"{path}: the manifest lists no cases")
    return cases


def write_manifest(path: str | os.PathLike[str], cases: list[Case]) -> None:
    from ...core.io.atomic import atomic_write_text

    path = Path(path)
    items = []
    for case in cases:
        item = {"id": case.id, "image": os.path.relpath(case.image, path.parent)}
        if case.label is not None:
            item["label"] = os.path.relpath(case.label, path.parent)
        items.append(item)
    atomic_write_text(path, json.dumps({"cases": items}, indent=1) + "\n")


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
