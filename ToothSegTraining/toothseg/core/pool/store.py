"""The case pool: a folder of cases and one JSON manifest, safe against crashes and a second writer.

Layout of a pool folder::

    pool.json                  the manifest (see :class:`CaseRecord`; ``version`` 2)
    .pool.lock                 held (``filelock``) while a process reads-modifies-writes the manifest
    images/CASE.nii.gz         images added by copy (Slicer's "Save as corrected case"); others are referenced
    predictions/CASE.nii.gz    the latest prediction (model output: replaced by the next prediction)
    labels/CASE/rev-0001.nii.gz  corrected labels, one file per revision, never replaced
    runs/vNNN/  models/vNNN/   fine-tuning runs and the model versions they produced

Why it is safe: every file is written to a temporary name and renamed (``atomic_output``), the label
file before the manifest that names it, so a ``kill -9`` at any point leaves a manifest that parses
and at worst an unnamed revision file, which later revisions skip instead of replacing. All
manifest changes happen inside :meth:`CasePool.transaction`, which holds the lock and re-reads the
manifest, so two processes accepting at once both land.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ..errors import InputError, OutputExistsError, OutputWriteError
from ..io.atomic import atomic_output, atomic_write_text
from ..io.fingerprint import Fingerprint, fingerprint, same_content
from ..io.images import read_label_map, read_volume, write_volume
from ..names import PLAIN_NAME_RULE, is_plain_name, plain_name_from
from ..volume import check_same_geometry

__all__ = ["CasePool", "CaseRecord", "ModelVersion", "PoolState", "STATUSES", "MANIFEST_NAME", "MANIFEST_VERSION",
           "now_iso", "save_corrected_case", "describe_pool", "StoppedFinetune", "stopped_finetune", "check_case_id",
           "check_new_images"]

MANIFEST_NAME = "pool.json"
MANIFEST_VERSION = 2
STATUSES = ("unlabeled", "predicted", "in_review", "corrected")
LOCK_TIMEOUT_S = 120.0
_REVISION = re.compile(r"^rev-(\d{4,})\.nii\.gz$")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER", "unknown")


@dataclass
class CaseRecord:
    """One case. Paths are relative to the pool folder unless absolute (referenced images)."""

    id: str
    image: str
    status: str = "unlabeled"
    prediction: str | None = None
    labels: list[str] = field(default_factory=list)  # corrected revisions, oldest first
    scores: dict[str, float] = field(default_factory=dict)  # acquisition strategy → case score
    tooth_scores: dict[str, dict[str, float]] = field(default_factory=dict)  # strategy → FDI → score
    model: str | None = None  # the model (version) that made ``prediction``
    holdout: bool = False  # kept out of fine-tuning to judge new model versions
    # the image's contents when the case was added or its labels accepted (core.io.fingerprint): a scan
    # replaced at a referenced path is noticed before labels drawn on the earlier one train on it
    image_fingerprint: dict[str, str] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str | None:
        """The latest corrected revision."""
        return self.labels[-1] if self.labels else None

    def log(self, event: str, **details: Any) -> None:
        self.history.append({"event": event, "who": _user(), "when": now_iso(), **details})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CaseRecord":
        known = {f for f in cls.__dataclass_fields__}
        record = cls(**{k: v for k, v in data.items() if k in known})
        if record.status not in STATUSES:
            raise InputError(f"case {record.id!r}: unknown status {record.status!r}")
        return record


@dataclass
class ModelVersion:
    """A model version fine-tuned in this pool."""

    version: str
    folder: str
    model_id: str
    parent: str | None
    promoted: bool = False
    created: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # held-out comparison (both models)
    note: str = ""


@dataclass
class PoolState:
    """The manifest's contents."""

    cases: dict[str, CaseRecord] = field(default_factory=dict)
    current_model: str | None = None  # catalogue ID or model folder (relative to the pool if inside it)
    versions: list[ModelVersion] = field(default_factory=list)
    training: dict[str, Any] | None = None  # the fine-tuning run in progress (resumed by the next call)
    created: str = ""

    def to_json(self) -> str:
        data = {"version": MANIFEST_VERSION, "created": self.created, "current_model": self.current_model,
                "training": self.training, "versions": [asdict(v) for v in self.versions],
                "cases": [asdict(c) for c in self.cases.values()]}
        return json.dumps(data, indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "PoolState":
        try:
            cases = [CaseRecord.from_dict(item) for item in data.get("cases", [])]
            versions = [ModelVersion(**item) for item in data.get("versions", [])]
        except TypeError as exc:
            raise InputError(f"{where}: malformed record ({exc})") from exc
        # Names that become paths the pool writes to (predictions/<id>.nii.gz, labels/<id>/, the run folder that
        # --restart deletes) are checked on every read: a pool on a shared drive is edited by other hands too.
        for case in cases:
            check_case_id(case.id, where)
        training = data.get("training")
        if training is not None and not (isinstance(training, dict) and is_plain_name(training.get("version"))
                                         and training.get("run") == f"runs/{training.get('version')}"):
            raise InputError(f"{where}: malformed fine-tuning record {training!r}; remove its 'training' entry "
                             "to start the next fine-tune afresh")
        return cls({c.id: c for c in cases}, data.get("current_model"), versions, training, data.get("created", ""))


def _migrate_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 is the plain training manifest (``{"cases": [{"id", "image", "label"?}]}``):
    labeled cases become corrected cases whose first revision is the given file (left where it is)."""
    cases = []
    for item in data.get("cases", []):
        if "id" not in item or "image" not in item:
            raise InputError(f"version-1 manifest: every case needs 'id' and 'image': {item!r}")
        label = item.get("label")
        status = item.get("status") or ("corrected" if label else "unlabeled")
        cases.append({"id": str(item["id"]), "image": item["image"], "status": status,
                      "labels": [label] if label else [],
                      "history": [{"event": "migrated", "who": _user(), "when": now_iso(), "from_version": 1}]})
    return {"version": MANIFEST_VERSION, "created": now_iso(), "cases": cases}


class CasePool:
    """A pool folder. Read with :meth:`read`; change only inside :meth:`transaction`."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.manifest = self.folder / MANIFEST_NAME
        if not self.manifest.is_file():
            raise InputError(f"{self.folder} is not a case pool (no {MANIFEST_NAME}); create one with "
                             f"'toothseg al init {self.folder} --images …'")
        self._lock_path = self.folder / ".pool.lock"
        self.loaded_version = MANIFEST_VERSION

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, folder: str | os.PathLike[str], current_model: str | None = None) -> "CasePool":

        folder = Path(folder)
        if (folder / MANIFEST_NAME).exists():
            raise OutputExistsError(f"{folder} already holds a case pool")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(f"cannot create {folder}: {exc.strerror}") from exc
        state = PoolState(current_model=current_model, created=now_iso())
        atomic_write_text(folder / MANIFEST_NAME, state.to_json(), overwrite=False)
        return cls(folder)

    def remove_empty(self) -> bool:
        """Remove a pool that holds no case (its manifest, lock and empty folders), e.g. one a failed
        ``al init`` just created; a pool with cases, or files of its own, stays. Returns True if removed."""
        if self.read().cases:
            return False
        self.manifest.unlink(missing_ok=True)
        self._lock_path.unlink(missing_ok=True)
        for folder in (self.folder / "images", self.folder):
            with contextlib.suppress(OSError):  # not empty: something else lives there
                folder.rmdir()
        return True

    # ------------------------------------------------------------------ manifest access
    def _load(self) -> PoolState:
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.manifest}: cannot read the pool manifest ({exc})") from exc
        if not isinstance(data, dict):
            raise InputError(f"{self.manifest}: the pool manifest must be a JSON object")
        version = data.get("version", 1)
        self.loaded_version = version
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise InputError(f"{self.manifest}: manifest version {version!r} is newer than this ToothSeg "
                             f"({MANIFEST_VERSION}); update ToothSeg")
        if version == 1:
            data = _migrate_v1(data)
        return PoolState.from_dict(data, str(self.manifest))

    def read(self) -> PoolState:
        """A snapshot of the manifest (no lock: renames make every read see a whole file)."""
        return self._load()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PoolState]:
        """Hold the lock, yield the current state, write it back atomically if the block succeeds."""

        lock = FileLock(str(self._lock_path), timeout=LOCK_TIMEOUT_S)
        try:
            lock.acquire()
        except Timeout as exc:
            raise OutputWriteError(f"{self.folder}: another ToothSeg process has held the pool lock for "
                                   f"{LOCK_TIMEOUT_S:.0f} s; try again when it has finished") from exc
        try:
            state = self._load()
            if self.loaded_version < MANIFEST_VERSION:  # keep the old file beside the migrated one
                backup = self.manifest.with_name(f"{MANIFEST_NAME}.v{self.loaded_version}")
                if not backup.exists():
                    shutil.copy2(self.manifest, backup)
            yield state
            atomic_write_text(self.manifest, state.to_json(), overwrite=True)
        finally:
            lock.release()

    # ------------------------------------------------------------------ paths
    def path(self, relative: str | None) -> Path | None:
        """Absolute path of a manifest path (relative to the pool unless absolute)."""
        if relative is None:
            return None
        path = Path(relative)
        return path if path.is_absolute() else self.folder / path

    def relative(self, path: Path) -> str:
        """How the manifest stores ``path``: relative inside the pool, absolute outside."""
        path = Path(os.path.abspath(path))
        try:
            return path.relative_to(Path(os.path.abspath(self.folder))).as_posix()
        except ValueError:
            return str(path)

    def prediction_path(self, case_id: str) -> Path:
        return self.folder / "predictions" / f"{case_id}.nii.gz"

    def _next_revision(self, record: CaseRecord) -> Path:
        """The next unused revision file: above every revision named in the manifest *or* on disk."""
        folder = self.folder / "labels" / record.id
        numbers = [0]
        on_disk = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        for name in [Path(p).name for p in record.labels] + on_disk:
            match = _REVISION.match(name)
            if match:
                numbers.append(int(match.group(1)))
        return folder / f"rev-{max(numbers) + 1:04d}.nii.gz"

    # ------------------------------------------------------------------ operations
    def add_images(self, images: Iterable[tuple[str, Path]], copy: bool = False,
                   skip_present: bool = False) -> list[str]:
        """Add ``(case id, image path)`` pairs as unlabeled cases; return the IDs added.

        ``skip_present``: an image the pool already has under its ID (the same file, or the pool's copy
        of it) is left out instead of refused, so that adding a folder again adds only its new scans.

        Raises:
            InputError: a bad or duplicate case ID, an ID the pool has for another image, or a missing
                image (checked before anything changes).
        """
        images = list(images)
        check_new_images(images)
        snapshot = self.read()
        if skip_present:
            images = [(case_id, path) for case_id, path in images
                      if not (case_id in snapshot.cases and self._holds(snapshot.cases[case_id], Path(path)))]
        seen = {case_id for case_id, _ in images}
        clashes = sorted(seen & set(snapshot.cases))
        if clashes:
            raise InputError(f"the pool already has case(s) {', '.join(clashes[:5])}"
                             + (" with another image; rename the new file(s)" if skip_present else ""))
        # copies (large scans, DICOM conversion) happen before the lock: other writers are not held up
        stored = self._copy_images(images, snapshot) if copy else {case_id: Path(path) for case_id, path in images}
        prints = {case_id: _fingerprint(path) for case_id, path in stored.items()}
        added = []
        with self.transaction() as state:
            clashes = sorted(seen & set(state.cases))
            if clashes:  # added by another process meanwhile
                raise InputError(f"the pool already has case(s) {', '.join(clashes[:5])}")
            for case_id, path in images:
                record = CaseRecord(case_id, self.relative(stored[case_id]), image_fingerprint=prints[case_id])
                record.log("added", source=str(Path(path)))
                state.cases[case_id] = record
                added.append(case_id)
        return added

    def _holds(self, record: CaseRecord, image: Path) -> bool:
        """Whether ``image`` is this case's image (a missing stored image counts as another one)."""
        stored = self.path(record.image)
        return stored is not None and stored.exists() and _same_image(image, stored)

    def _copy_images(self, images: list[tuple[str, Path]], snapshot: PoolState) -> dict[str, Path]:
        """Copy every image into ``images/`` (all or none): an image that cannot be read (truncated,
        corrupt) is reported with the others after the copies, and the copies made are removed, so a
        corrected list can be added again."""
        referenced = {record.image for record in snapshot.cases.values()}
        stored: dict[str, Path] = {}
        problems: list[str] = []
        try:
            for case_id, path in images:
                try:
                    stored[case_id] = self._copy_image(case_id, Path(path), referenced)
                except InputError as exc:
                    problems.append(str(exc))
        except BaseException:
            for target in stored.values():
                target.unlink(missing_ok=True)
            raise
        if problems:
            for target in stored.values():
                target.unlink(missing_ok=True)
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise InputError(f"{len(problems)} of {len(images)} image(s) cannot be read, so none was added: {shown}")
        return stored

    def _copy_image(self, case_id: str, source: Path, referenced: set[str]) -> Path:
        """One image as ``images/CASE.nii.gz``, checked by reading it back. A file there that no case
        names is what an interrupted earlier attempt left: it is replaced."""

        target = self.folder / "images" / f"{case_id}.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        orphan = target.exists() and self.relative(target) not in referenced
        if source.is_file() and source.name.lower().endswith(".nii.gz"):
            with atomic_output(target, overwrite=orphan) as tmp:
                shutil.copyfile(source, tmp)
                try:
                    read_volume(tmp)  # a truncated gzip stream shows only when the voxels are read
                except InputError as exc:
                    raise InputError(str(exc).replace(str(tmp), str(source))) from None
        else:  # DICOM folders, NRRD, PNG …: one NIfTI in the pool
            write_volume(read_volume(source), target, overwrite=orphan)
        return target

    def accept(self, case_id: str, labels: str | os.PathLike[str], image: str | os.PathLike[str] | None = None,
               note: str = "") -> Path:
        """Store corrected labels for a case as a new revision and mark it corrected.

        ``image`` adds a case the pool does not know yet (its image is copied into the pool).
        The label map must lie on the case image's voxel grid and hold integer values.

        Raises:
            InputError: unknown case, unreadable or mismatching label map, missing image.
        """

        check_case_id(case_id)
        snapshot = self.read()
        record = snapshot.cases.get(case_id)
        if record is None and image is None:
            raise InputError(f"no case {case_id!r} in the pool (pass --image to add it)")
        image_path = Path(image) if record is None else self.path(record.image)
        if image_path is None or not image_path.exists():
            raise InputError(f"case {case_id!r}: its image {image_path} is missing")
        if record is not None and image is not None and not _same_image(Path(image), image_path):
            # two patients under one case ID: the labels would land on the other patient's case
            raise InputError(f"case {case_id!r} is already in the pool with another image ({image_path}); "
                             f"--image {image} is not that file: give the new case another ID")
        changed = record is not None and self.image_changed(record)
        if changed and record.labels:  # type: ignore[union-attr]
            raise InputError(f"case {case_id!r}: its image {image_path} has changed since its earlier corrected "
                             f"labels were accepted, so they belong to another scan; restore that file, or add the "
                             f"new scan under a new case ID (toothseg al accept NEW_ID LABELS --image FILE)")
        label_map = read_label_map(labels)
        check_same_geometry(read_volume(image_path), label_map, f"image of case {case_id!r}", "label map")
        if record is None:
            self.add_images([(case_id, image_path)], copy=True)
        # what the labels were drawn on (a case added just now got its copy's fingerprint from add_images)
        image_print = _fingerprint(image_path) if record is not None else None
        with self.transaction() as state:
            record = state.cases[case_id]
            target = self._next_revision(record)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_volume(label_map, target, overwrite=False)  # atomic; never replaces a revision
            record.labels.append(self.relative(target))
            record.status = "corrected"
            if changed:
                record.log("image changed", previous=record.image_fingerprint)
            if image_print is not None:
                record.image_fingerprint = image_print
            record.log("accepted", revision=self.relative(target), source=str(labels), note=note)
        return target

    def set_status(self, case_ids: Iterable[str], status: str, event: str) -> None:
        if status not in STATUSES:
            raise InputError(f"unknown status {status!r}")
        with self.transaction() as state:
            for case_id in case_ids:
                record = state.cases.get(case_id)
                if record is None:
                    raise InputError(f"no case {case_id!r} in the pool")
                if record.status == "corrected" and status != "corrected":
                    continue  # a correction is never demoted
                record.status = status
                record.log(event)

    def missing_images(self, state: PoolState | None = None) -> list[str]:
        state = state or self.read()
        return [c.id for c in state.cases.values() if not self.path(c.image).exists()]  # type: ignore[union-attr]

    def image_changed(self, record: CaseRecord) -> bool:
        """Whether the case's image no longer holds what it held when the case was added or its labels
        accepted. False when there is nothing to compare (a missing image, a pool made before
        fingerprints) or the image cannot be read (reported where it is read)."""

        recorded = Fingerprint.from_dict(record.image_fingerprint)
        path = self.path(record.image)
        if recorded is None or path is None or not path.exists():
            return False
        try:
            return not same_content(path, recorded)
        except OSError:
            return False

    def changed_labeled_images(self, state: PoolState | None = None) -> list[str]:
        """Corrected cases whose image has changed since their labels were accepted (see
        :meth:`image_changed`): their labels belong to another scan and must not train a model."""
        state = state or self.read()
        return [c.id for c in state.cases.values() if c.labels and self.image_changed(c)]

    def stale_predictions(self, state: PoolState | None = None) -> list[str]:
        """Uncorrected cases whose prediction is of a scan since replaced at the image's path: not to be
        offered for review until ``al predict`` has predicted them again (it does so by itself)."""
        state = state or self.read()
        return [c.id for c in state.cases.values() if c.prediction and not c.labels and self.image_changed(c)]


def _fingerprint(path: Path | None) -> dict[str, str] | None:
    """The fingerprint to record for an image (None if it cannot be read: reported where it is read)."""

    try:
        return fingerprint(path).to_dict() if path is not None else None
    except OSError:
        return None


def _same_image(outside: Path, stored: Path) -> bool:
    """Whether an outside image is the pool's image of a case: the same file, or the same voxels on the
    same grid (the pool keeps a NIfTI copy, so bytes differ from the PNG or DICOM it came from)."""

    if outside.resolve() == stored.resolve():
        return True
    a, b = read_volume(outside), read_volume(stored)
    return (a.shape == b.shape and np.allclose(a.spacing, b.spacing) and np.allclose(a.origin, b.origin)
            and np.allclose(a.direction, b.direction) and np.array_equal(a.array, b.array))


def check_new_images(images: Sequence[tuple[str, str | os.PathLike[str]]]) -> None:
    """Refuse bad or repeated case IDs and missing images before anything is written.

    Raises:
        InputError: naming both images that would get the same ID.
    """
    first: dict[str, str | os.PathLike[str]] = {}
    for case_id, path in images:
        check_case_id(case_id)
        if case_id in first:
            raise InputError(f"case ID {case_id!r} would be given to two images ({first[case_id]} and {path}); "
                             "rename one (case IDs come from file and folder names)")
        first[case_id] = path
        if not Path(path).exists():
            raise InputError(f"{path}: no such image")


def save_corrected_case(pool_folder: str | os.PathLike[str], case_name: str, image: str | os.PathLike[str],
                        labels: str | os.PathLike[str]) -> Path:
    """Slicer's "Save as corrected case": open (or create) the pool, add the case if it is new
    (its image copied in), and store the labels as a new revision. Returns the revision file."""
    folder = Path(pool_folder)
    pool = CasePool(folder) if (folder / MANIFEST_NAME).is_file() else CasePool.create(folder)
    base = plain_name_from(case_name)
    cases = pool.read().cases
    for number in range(1, 10_000):
        case_id = base if number == 1 else f"{base}_{number}"
        record = cases.get(case_id)
        if record is None:
            return pool.accept(case_id, labels, image=image, note="saved from 3D Slicer")
        # a known name: the same case only if it is the same image (two scans can share a node name) and
        # that image still holds what its earlier labels were drawn on
        stored = pool.path(record.image)
        if (stored is not None and stored.exists() and _same_image(Path(image), stored)
                and not (record.labels and pool.image_changed(record))):
            return pool.accept(case_id, labels, note="saved from 3D Slicer")
    raise InputError(f"too many different images named {base!r} in the pool")


def describe_pool(pool_folder: str | os.PathLike[str]) -> str:
    """One line on a pool for Slicer's Active learning section: cases per status, the current model,
    the latest version, an interrupted fine-tune, and images missing or replaced."""
    folder = Path(pool_folder)
    if not str(pool_folder) or not (folder / MANIFEST_NAME).is_file():
        return "No pool here yet: Save as corrected case creates one."
    pool = CasePool(folder)
    state = pool.read()
    counts = {s: sum(1 for c in state.cases.values() if c.status == s) for s in STATUSES}
    text = ", ".join(f"{counts[s]} {s.replace('_', ' ')}" for s in STATUSES)
    text += f". Model: {state.current_model or 'catalogue default'}."
    if state.versions:
        latest = state.versions[-1]
        text += f" Latest {latest.version}: {latest.note}"
    if state.training:
        text += f" Fine-tuning {state.training['version']} was stopped; Fine-tune asks to resume it or start afresh."
    missing, changed = pool.missing_images(state), pool.changed_labeled_images(state)
    if missing:
        text += f" Images missing: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}."
    if changed:
        text += (f" Scans replaced since their labels were saved (left out of fine-tuning): {', '.join(changed[:5])}"
                 f"{' …' if len(changed) > 5 else ''}.")
    return text


@dataclass(frozen=True)
class StoppedFinetune:
    """A fine-tuning run that was stopped: the next ``al finetune`` resumes it (with the recipe and settings
    it started with) unless told to restart; one whose recipe is gone can only restart."""

    version: str
    recipe: str
    started: str
    recipe_missing: bool


def stopped_finetune(pool_folder: str | os.PathLike[str]) -> StoppedFinetune | None:
    """The pool's stopped fine-tuning run, or None (no pool, or no run stopped): what Slicer asks about
    before Fine-tune, resume or start afresh."""
    folder = Path(pool_folder)
    if not str(pool_folder) or not (folder / MANIFEST_NAME).is_file():
        return None
    run = CasePool(folder).read().training
    if not run:
        return None
    recipe = str(run.get("recipe") or "")
    return StoppedFinetune(run["version"], recipe, str(run.get("started") or ""),
                           recipe_missing=not (recipe and Path(recipe).is_file()))


def check_case_id(case_id: str, where: str = "") -> None:
    if not is_plain_name(case_id):
        raise InputError(f"{where + ': ' if where else ''}case ID {case_id!r}: {PLAIN_NAME_RULE} (it names files)")
