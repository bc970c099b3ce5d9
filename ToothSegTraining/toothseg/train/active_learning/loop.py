"""The loop's two long jobs: predict (and score) the pool, and fine-tune on its corrected cases.

Both are resumable: ``predict`` commits each case to the manifest as soon as its prediction file is
in place, so a second call continues where a killed one stopped; ``finetune`` records the run it
started in the manifest and a second call resumes that run from its last checkpoint.

A pool without a model of its own uses the catalogue default (the model its predictions came
from), for fine-tuning as for prediction; training the recipe's network from scratch must be asked
for (``from_scratch``).

Promotion rule: a fine-tuned version becomes the pool's current model only if its mean per-tooth
Dice on the held-out corrected cases is not below the current model's on the same cases (both
figures are stored with the version). Without held-out cases nothing can be judged, so the version
is kept but not promoted.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ...core.errors import CancelledError, InputError, LabelError, ToothSegError
from ...core.inference.predictor import InferenceOptions, Predictor
from ...core.io.atomic import atomic_folder, atomic_write_text
from ...core.io.fingerprint import fingerprint
from ...core.io.images import file_format, read_label_map, read_volume, write_volume
from ...core.labels import TOOTH_BOUNDARY, TOOTH_CONTACT, TOOTH_TYPE_BOUNDARY, label_table_named
from ...core.postprocessing.instances import tooth_type_class
from ...core.metrics.overlap import mean_dice
from ...core.models.catalog import load_catalog
from ...core.models.card import ModelCard
from ...core.models.folder import read_card, save_model_folder, verify_model_folder
from ...core.pool.ranking import SCORED_STRATEGIES, case_score
from ...core.pool.store import CasePool, ModelVersion, now_iso
from ...core.progress import CancelToken, Progress
from ..config import stage_data
from ..config.loader import load_recipe, setting
from ..data.cases import Case, write_manifest
from ..data.dataset import IGNORE, class_values_for
from ..engine.pipeline import run_recipe
from .acquisition import ensemble_disagreement, tta_disagreement

__all__ = ["PredictSummary", "FinetuneResult", "predict_pool", "finetune_pool", "resolve_model",
           "holdout_cases", "HOLDOUT_SHARE"]

log = logging.getLogger(__name__)

HOLDOUT_SHARE = 0.2  # of the corrected cases, kept out of fine-tuning to judge new versions


@dataclass
class PredictSummary:
    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already predicted by this model, or under review
    failed: list[dict[str, str]] = field(default_factory=list)


@dataclass
class FinetuneResult:
    version: ModelVersion
    folder: Path
    report: dict[str, Any]


def resolve_model(pool: CasePool, model: str | None, input_kind: str) -> tuple[Path, str]:
    """(model folder, name recorded in the manifest): ``model``, else the pool's current model, else
    the catalogue default for the pool's kind of image."""
    catalog = load_catalog()
    chosen = model or pool.read().current_model
    if chosen:
        inside = pool.path(chosen)
        if inside is not None and (inside / "model.json").is_file():
            return inside.resolve(), chosen
        folder = catalog.resolve(chosen).resolve()
        is_path = (Path(chosen) / "model.json").is_file()  # a folder given on the command line: record it absolutely
        return folder, (pool.relative(folder) if is_path else chosen)
    entry = catalog.default(input_kind)
    return entry.folder, entry.id  # type: ignore[return-value]


def _kind_of(pool: CasePool) -> str:
    """``2d`` or ``3d``, from the first image's file type (PNG/JPEG are panoramic X-rays), or — for a
    NIfTI/NRRD that may hold a one-slice X-ray — from its header alone."""
    for record in pool.read().cases.values():
        path = pool.path(record.image)
        if path is None or not path.exists():
            continue
        kind = file_format(path)
        if kind == "itk":
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            size = reader.GetSize()
            return "2d" if len(size) == 2 or size[2] == 1 else "3d"
        return "2d" if kind == "2d" else "3d"
    raise InputError(f"{pool.folder}: the pool has no readable image")


def predict_pool(pool: CasePool, model: str | None = None, device: str = "auto",
                 scores: Sequence[str] = ("entropy",), redo: bool = False,
                 progress: Progress | None = None) -> PredictSummary:
    """Predict every case not corrected or under review, store the prediction and its scores.

    A case already predicted by the same model with every requested score is skipped (unless
    ``redo``); a case whose image is missing or unreadable is reported and the others go on.
    """
    unknown = [s for s in scores if s not in SCORED_STRATEGIES]
    if unknown:
        raise InputError(f"unknown score {unknown[0]!r} (choose from {', '.join(SCORED_STRATEGIES)})")
    progress = progress or Progress()
    kind = _kind_of(pool)
    folder, model_name = resolve_model(pool, model, kind)
    options = InferenceOptions(device=device, tta=False, uncertainty=True, numbering_checks=False)
    predictor = Predictor(folder, options)
    if predictor.card.input_kind != kind:  # said once, not once per case after reading each image
        what = {"2d": "2D panoramic X-rays", "3d": "3D scans"}
        raise InputError(f"model {predictor.card.id!r} segments {what[predictor.card.input_kind]}; "
                         f"the pool holds {what[kind]}")
    if "ensemble" in scores and len([r for r, _ in predictor.model.members if r == "ensemble"]) < 2:
        raise InputError(f"model {predictor.card.id!r} is not an ensemble; the 'ensemble' score needs a model "
                         "with several members (e.g. RAIL's students)")
    summary = PredictSummary()
    state = pool.read()
    todo = []
    changed: set[str] = set()
    for record in state.cases.values():
        if record.status in ("corrected", "in_review"):
            summary.skipped.append(record.id)
            continue
        if pool.image_changed(record):  # another scan at the same path: its old prediction is not of it
            changed.add(record.id)
        done = record.model == model_name and record.prediction and all(s in record.scores for s in scores)
        if done and not redo and record.id not in changed:
            summary.skipped.append(record.id)
        else:
            todo.append(record.id)
    for index, case_id in enumerate(todo):
        progress.check()
        step = progress.sub(index / len(todo), (index + 1) / len(todo), f"case {case_id} ({index + 1}/{len(todo)})")
        record = state.cases[case_id]
        try:
            # the scan this prediction is of: recorded again only if it changed (or was never recorded)
            image_print = record.image_fingerprint if record.image_fingerprint and case_id not in changed \
                else fingerprint(pool.path(record.image)).to_dict()  # type: ignore[arg-type]
            volume = read_volume(pool.path(record.image))  # type: ignore[arg-type]
            prediction = predictor.predict(volume, step)
            tooth: dict[str, dict[int, float]] = {}
            if "entropy" in scores:
                tooth["entropy"] = prediction.tooth_uncertainty
            if "tta" in scores:
                tooth["tta"] = tta_disagreement(predictor, volume, prediction.labels)
            if "ensemble" in scores:
                tooth["ensemble"] = ensemble_disagreement(predictor.model, volume, options)
            target = pool.prediction_path(case_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_volume(prediction.labels, target, overwrite=True)
        except CancelledError:
            raise
        except (ToothSegError, OSError) as exc:
            log.warning("case %s: %s", case_id, exc)
            summary.failed.append({"case": case_id, "error": str(exc)})
            continue
        with pool.transaction() as fresh:
            current = fresh.cases.get(case_id)
            if current is None or current.status in ("corrected", "in_review"):
                continue  # removed, accepted or taken for review meanwhile: keep the clinician's state
            current.prediction = pool.relative(target)
            current.model = model_name
            current.status = "predicted"
            current.scores = {s: case_score(v) for s, v in tooth.items()}
            current.tooth_scores = {s: {str(t): round(float(u), 6) for t, u in v.items()} for s, v in tooth.items()}
            if case_id in changed:
                current.log("image changed", previous=current.image_fingerprint)
            current.image_fingerprint = image_print
            current.log("predicted", model=model_name, scores=current.scores)
        summary.predicted.append(case_id)
    progress.update(1.0, "done")
    return summary


def holdout_cases(corrected: Sequence[str], already: Sequence[str], share: float = HOLDOUT_SHARE) -> list[str]:
    """Held-out corrected cases: those held out before stay; more join (by a stable hash order) until
    ``share`` of the corrected cases are held out. Needs at least 2 corrected cases."""
    held = [c for c in corrected if c in already]
    if len(corrected) < 2:
        return held
    wanted = max(1, int(round(share * len(corrected))))
    order = sorted((c for c in corrected if c not in held),
                   key=lambda c: hashlib.sha256(f"toothseg-holdout-{c}".encode()).hexdigest())
    return held + order[: max(0, wanted - len(held))]


def _mean_tooth_dice(folder: Path, cases: list[tuple[str, Path, Path]], device: str) -> dict[str, Any]:
    predictor = Predictor(folder, InferenceOptions(device=device, tta=False, numbering_checks=False))
    per_case = {}
    for case_id, image, label in cases:
        prediction = predictor.predict(read_volume(image))
        per_case[case_id] = round(float(mean_dice(read_label_map(label).array, prediction.labels.array)), 6)
    values = [v for v in per_case.values() if not np.isnan(v)]
    return {"mean_tooth_dice": round(float(np.mean(values)), 6) if values else None, "per_case": per_case}


DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "finetune_pool.yaml"


def _parent_settings(parent: Path, run_dir: Path) -> tuple[list[str], Path]:
    """Recipe overrides that rebuild the parent's network exactly (architecture, classes, label table,
    spacing, patch, intensities, mirror axes), and the folder whose weights start the run — for a
    coarse-to-fine cascade its fine member (the coarse one is kept as it is)."""
    card = read_card(parent)
    roles = {m["role"]: m["path"] for m in card.members}
    if card.members and set(roles) != {"coarse", "fine"}:
        raise InputError(f"model {card.id!r}: fine-tuning an ensemble is not supported; pass --from one member")
    trained = parent / roles["fine"] if roles else parent
    card = read_card(trained)
    (run_dir / "labels.json").write_text(card.output_table.to_json(), encoding="utf-8")
    settings = [setting("data.kind", "2d" if card.spatial_dims == 2 else "3d"),
                setting("model.architecture", card.architecture), setting("model.kwargs", card.kwargs),
                setting("data.class_values", card.class_values),
                setting("data.label_table", str(run_dir / "labels.json")),
                setting("data.intensity", {k: v for k, v in card.intensity.__dict__.items() if v is not None}),
                setting("export.mirror_axes", card.mirror_axes), setting("export.cascade", None)]
    for key, value in (("data.spacing", card.spacing_zyx), ("data.image_extent", card.image_extent_yx),
                       ("data.patch_size", card.patch_size)):
        if value:
            settings.append(setting(key, value))
    return settings, trained


def _assemble_version(trained: Path, parent: Path | None, staging: Path) -> None:
    """The new version folder: the trained model, or — for a cascade parent — the parent's coarse
    member with the newly trained fine member under the parent's top-level card."""
    top = read_card(parent) if parent is not None else None
    if top is None or not top.members:
        shutil.copytree(trained, staging, dirs_exist_ok=True)
        return
    roles = {m["role"]: m["path"] for m in top.members}
    shutil.copytree(parent / roles["coarse"], staging / "coarse")  # type: ignore[operator]
    shutil.copytree(trained, staging / "fine")
    top.members = [{"role": "coarse", "path": "coarse"}, {"role": "fine", "path": "fine"}]
    fine = read_card(staging / "fine")
    top.id, top.metrics, top.provenance = fine.id, fine.metrics, fine.provenance
    save_model_folder(None, top, staging, overwrite=True)


@dataclass
class FinetuneRun:
    """A fine-tuning run as the pool records it while it trains (``pool.json``'s ``training``), so that
    an interrupted run resumes with its own case lists, recipe and settings."""

    version: str  # v001, v002, …
    run: str  # its folder in the pool: runs/<version>
    recipe: str  # absolute path of the recipe
    parent: str | None  # the model fine-tuned (as the manifest names it); None: from scratch
    parent_folder: str | None
    train: list[str]
    holdout: list[str]
    overrides: list[str] = field(default_factory=list)
    current_folder: str | None = None  # the pool's model when the run started: the judge (older runs: none)
    started: str = ""

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FinetuneRun:
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in record.items() if k in known})
        except TypeError as exc:  # an entry missing: a pool.json edited by hand or cut short
            raise InputError(f"fine-tuning record {record.get('version')!r} in pool.json is incomplete ({exc}); "
                             "--restart discards it") from exc

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def finetune_pool(pool: CasePool, recipe_path: str | Path | None = None, start_from: str | None = None,
                  device: str = "auto", overrides: Sequence[str] = (), register: bool = True, quiet: bool = True,
                  progress: Progress | None = None, token: CancelToken | None = None,
                  holdout_share: float = HOLDOUT_SHARE, restart: bool = False,
                  from_scratch: bool = False) -> FinetuneResult:
    """Fine-tune on the corrected cases (the other images as unlabeled data) and judge the result.

    The network is the one of the model being fine-tuned (the recipe's model and data geometry are
    replaced by its card's); ``recipe_path`` (default ``finetune_pool.yaml``) says how to train.
    ``holdout_share`` 0 trains on every corrected case (simulations that judge on their own test set).
    ``from_scratch`` trains the recipe's own network from random weights instead of fine-tuning.
    An interrupted run resumes with its own settings; ``restart`` discards it instead. Corrected cases
    whose image is missing, or has changed since their labels were accepted, are left out (warned).

    Steps: plan (or resume) the run, train, publish the version folder, judge it against the current
    model on the held-out corrected cases, commit it to the pool (promoted if it is no worse).

    Raises:
        InputError: fewer than one training case, a recipe that does not fit the pool, a corrected
            label map with values the network has no class for (before anything is recorded), …
        CancelledError: interrupted (the run resumes on the next call).
    """
    state = pool.read()
    if state.training and restart:  # discard the interrupted run (its folder too) and start afresh
        shutil.rmtree(pool.folder / state.training["run"], ignore_errors=True)
        with pool.transaction() as fresh:
            fresh.training = None
        state = pool.read()
    if state.training:
        run, recipe, raw = _resume_run(pool, FinetuneRun.from_record(state.training), recipe_path, overrides)
    else:
        run, recipe, raw = _plan_run(pool, state, recipe_path, start_from, overrides, holdout_share, from_scratch)
    result = run_recipe(recipe, raw, output=pool.folder / run.run / "training", device=device, quiet=quiet,
                        progress=progress, token=token)
    if result.interrupted or result.model is None:
        raise CancelledError(f"fine-tuning {run.version} was interrupted; run the command again to resume")
    target, card = _publish_version(pool, run, result.model, recipe.name)
    promoted, note, report = _judge_version(pool, state, run, target, device)
    version = ModelVersion(run.version, pool.relative(target), card.id, run.parent, promoted, now_iso(), report, note)
    if register:
        try:
            load_catalog().add_folder(target, overwrite=True)
        except ToothSegError as exc:  # the version still exists in the pool
            log.warning("could not add %s to the model catalogue: %s", card.id, exc)
    with pool.transaction() as fresh:
        fresh.versions = [v for v in fresh.versions if v.version != version.version] + [version]
        if promoted:
            fresh.current_model = version.folder
        fresh.training = None
    return FinetuneResult(version, target, report)


def _resume_run(pool: CasePool, run: FinetuneRun, recipe_path: str | Path | None, overrides: Sequence[str]):
    """The interrupted run with its own case lists, recipe and overrides (those given now are ignored)."""
    changed_recipe = recipe_path is not None and str(Path(recipe_path).resolve()) != run.recipe
    if changed_recipe or (overrides and list(overrides) != run.overrides):
        log.warning("resuming fine-tuning %s with the recipe and settings it started with; "
                    "the ones given now are ignored (--restart discards it)", run.version)
    recipe, raw = _load_run_recipe(pool, run)
    return run, recipe, raw


def _plan_run(pool: CasePool, state, recipe_path: str | Path | None, start_from: str | None,
              overrides: Sequence[str], holdout_share: float, from_scratch: bool):
    """A new run: its cases (training, held out, unlabeled), parent and judge, manifests and recipe, all
    checked, then recorded in the pool; a bad recipe, parent or label map fails before anything is recorded."""
    missing = set(pool.missing_images(state))
    changed = pool.changed_labeled_images(state)
    left_out = sorted(c.id for c in state.cases.values() if c.status == "corrected" and c.id in missing)
    if left_out or changed:
        log.warning("left out of fine-tuning: %s", "; ".join(
            ([f"image missing: {', '.join(left_out)}"] if left_out else [])
            + ([f"image changed since its labels were accepted (labels of another scan): {', '.join(changed)}"]
               if changed else [])))
    missing |= set(changed)
    corrected = sorted(c.id for c in state.cases.values() if c.status == "corrected" and c.id not in missing)
    holdout = holdout_cases(corrected, [c.id for c in state.cases.values() if c.holdout], holdout_share) \
        if holdout_share > 0 else []
    train = [c for c in corrected if c not in holdout]
    if not train:
        raise InputError(f"{pool.folder}: no corrected case to train on (accept corrections first"
                         + (f"; {len(holdout)} held out for judging" if holdout else "") + ")")
    if from_scratch and start_from:
        raise InputError("start from a model or from scratch, not both")
    kind = _kind_of(pool)
    parent_folder, parent = (None, None) if from_scratch else resolve_model(pool, start_from, kind)
    try:  # the judge: what the pool predicts with now (a from-scratch run needs none to train)
        current_folder: Path | None = resolve_model(pool, None, kind)[0]
    except InputError:
        if not from_scratch:
            raise
        current_folder = None
    version = _next_version(pool, state)
    run = FinetuneRun(version=version, run=f"runs/{version}", recipe=str(Path(recipe_path or DEFAULT_RECIPE).resolve()),
                      parent=parent, parent_folder=str(parent_folder) if parent_folder else None, train=train,
                      holdout=holdout, overrides=list(overrides),
                      current_folder=str(current_folder) if current_folder else None, started=now_iso())
    run_dir = pool.folder / run.run
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_manifest(run_dir / "labeled.json", [Case(c, pool.path(state.cases[c].image),
                                                       pool.path(state.cases[c].label)) for c in train])
        unlabeled = [c for c in state.cases.values() if c.status != "corrected" and c.id not in missing]
        if unlabeled:
            write_manifest(run_dir / "unlabeled.json", [Case(c.id, pool.path(c.image)) for c in unlabeled])
        if holdout:
            write_manifest(run_dir / "holdout.json", [Case(c, pool.path(state.cases[c].image),
                                                           pool.path(state.cases[c].label)) for c in holdout])
        recipe, raw = _load_run_recipe(pool, run)
        _check_corrected_labels(pool, state, train + holdout, recipe)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    with pool.transaction() as fresh:
        for case_id in holdout:
            fresh.cases[case_id].holdout = True
        fresh.training = run.to_record()
    return run, recipe, raw


def _next_version(pool: CasePool, state) -> str:
    number = len(state.versions) + 1
    while (pool.folder / "runs" / f"v{number:03d}").exists():
        number += 1
    return f"v{number:03d}"


def _publish_version(pool: CasePool, run: FinetuneRun, trained: Path, recipe_name: str) -> tuple[Path, ModelCard]:
    """The new version folder (``models/<version>``), with provenance, staged then renamed into place."""
    target = pool.folder / "models" / run.version
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(target, overwrite=True) as staging:
        _assemble_version(trained, Path(run.parent_folder) if run.parent_folder else None, staging)
        card = read_card(staging)
        card.name = f"{card.name or recipe_name} ({pool.folder.name} {run.version})"
        card.provenance = {**card.provenance, "active_learning": {
            "pool": str(pool.folder.resolve()), "version": run.version, "parent": run.parent,
            "recipe": run.recipe, "trained_on": run.train, "held_out": run.holdout, "finished": now_iso()}}
        atomic_write_text(staging / "model.json", card.to_json() + "\n")
        verify_model_folder(staging)
    return target, card


def _judge_version(pool: CasePool, state, run: FinetuneRun, target: Path,
                   device: str) -> tuple[bool, str, dict[str, Any]]:
    """(promoted, note, report): the new version against the current model on the held-out corrected
    cases; promoted when its mean tooth Dice is no lower. Without held-out cases it is kept, not promoted."""
    report: dict[str, Any] = {"held_out": run.holdout}
    held = [(c, pool.path(state.cases[c].image), pool.path(state.cases[c].label)) for c in run.holdout
            if c in state.cases and state.cases[c].label]
    judge = run.current_folder or run.parent_folder  # runs recorded before "current_folder" existed
    if not (held and judge):
        return False, "no held-out corrected cases to judge it against the current model: kept, not promoted", report
    report["new"] = _mean_tooth_dice(target, held, device)  # type: ignore[arg-type]
    report["current"] = _mean_tooth_dice(Path(judge), held, device)  # type: ignore[arg-type]
    new, old = report["new"]["mean_tooth_dice"], report["current"]["mean_tooth_dice"]
    promoted = new is not None and (old is None or new >= old)
    return promoted, f"held-out mean tooth Dice {new} vs current {old}: " + ("promoted" if promoted else
                                                                               "not promoted"), report


def _check_corrected_labels(pool: CasePool, state, case_ids: Sequence[str], recipe) -> None:
    """Refuse, before a run is recorded, corrected labels with values the network has no class for
    (a segment drawn in Slicer and never named as a tooth): found later, they would stop the training
    mid-run, and a resumed run would meet the same revision again."""
    config = stage_data(recipe, 0)
    if config.label_table in ("binary", TOOTH_BOUNDARY, TOOTH_CONTACT):  # any tooth value is a tooth (an instance)
        return
    if config.label_table == TOOTH_TYPE_BOUNDARY:  # types come from FDI numbers: every tooth must have one
        classes = {0} | {v for v in range(11, 86) if tooth_type_class(v) is not None}
    else:
        classes = set(class_values_for(config, label_table_named(config.label_table)))
    for case_id in case_ids:
        revision = pool.path(state.cases[case_id].label)
        values = np.unique(read_label_map(revision).array)
        unknown = [int(v) for v in values if int(v) not in classes and int(v) != IGNORE]
        if unknown:
            raise LabelError(
                f"case {case_id!r} ({pool.relative(revision)}): label value(s) {unknown[:10]} are not among the "
                f"classes of the network being fine-tuned; accept a corrected revision ('toothseg al accept', or "
                f"in Slicer name the segment 'Tooth NN' and save the case again)")


def _load_run_recipe(pool: CasePool, run: FinetuneRun):
    """The recipe of a fine-tuning run: the pool's case lists, the parent's network, the run's overrides."""
    run_dir = pool.folder / run.run
    unlabeled = run_dir / "unlabeled.json"
    settings = ["data.source=files", setting("data.labeled", str(run_dir / "labeled.json")),
                "data.labeled_fraction=1.0", "data.root=null",
                setting("data.unlabeled", str(unlabeled) if unlabeled.exists() else None),
                setting("data.validation", str(run_dir / "holdout.json") if run.holdout else None),
                f"export.id={_version_id(pool, run)}", *run.overrides]
    if run.parent_folder:
        derived, trained_from = _parent_settings(Path(run.parent_folder), run_dir)
        settings = derived + settings + [setting("stages.0.init_from", str(trained_from))]
    try:
        return load_recipe(run.recipe, settings)
    except InputError as exc:
        if run.recipe and not Path(run.recipe).is_file():
            raise InputError(f"{exc} (fine-tuning {run.version}: its recipe is gone; --restart discards the run)") \
                from exc
        raise


def _version_id(pool: CasePool, run: FinetuneRun) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in pool.folder.resolve().name) or "pool"
    return f"toothseg-al-{stem}-{run.version}"
