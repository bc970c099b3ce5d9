"""Runs a recipe's stages in order, chaining weights with ``init_from``, and exports the final model."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
import yaml

from ...core.errors import InputError
from ...core.inference import InferenceOptions, Predictor
from ...core.io.atomic import atomic_folder
from ...core.io.images import read_volume, write_volume
from ...core.labels import LabelTable, label_table_named
from ...core.models.checkpoints import read_state_dict
from ...core.models.quantize import decompress_state_dict
from ...core.models.folder import read_card, save_model_folder
from ...core.progress import CancelToken, Progress
from ..config.mapping import stage_data
from ..config.schema import DataConfig, Recipe
from ..data.cases import Case
from ..data.dataset import TrainingData, class_values_for
from ..methods.base import Method, unwrap
from .class_init import class_rows, parse_init_classes
from .trainer import StageResult, Trainer, distributed_context

__all__ = ["run_recipe", "RunResult", "snapshot_stage"]

log = logging.getLogger("toothseg.train")


class RunResult:
    def __init__(self, model: Path | None, stages: list[StageResult], interrupted: bool) -> None:
        self.model, self.stages, self.interrupted = model, stages, interrupted


def _initializer(init_from: str, previous: Path | None, init_classes: list | None = None):
    """A function that loads weights into every network of a method, or None; with ``init_classes`` the output
    layers are built from the old network's class rows (:mod:`.class_init`)."""
    classes = parse_init_classes(init_classes) if init_classes is not None else None
    if init_from in ("", "none"):
        return None
    if init_from in ("previous", "previous.encoder"):
        if previous is None:
            raise InputError(f"init_from: {init_from} needs an earlier stage")
        folder, encoder_only = previous, init_from.endswith(".encoder")
    else:
        folder, encoder_only = Path(init_from), False
        if not (folder / "model.json").exists():
            raise InputError(f"init_from: {init_from!r} is not a model folder")

    def load(method: Method) -> None:
        card = read_card(folder)
        state = decompress_state_dict(read_state_dict(folder / card.weights_file))  # int8-packed folders too
        for name, network in method.nets.items():
            module = unwrap(network)
            own = module.state_dict()
            if encoder_only:
                keys = [k for k in state if k.startswith(getattr(module, "encoder_prefixes", ()))]
            else:
                keys = [k for k in state if k in own]
            usable = {k: state[k] for k in keys if k in own and own[k].shape == state[k].shape}
            if classes is not None:
                try:
                    rows = class_rows(state, own, classes)
                except InputError:
                    if name == method.exported:
                        raise
                    rows = {}  # a network of the method's own with other outputs (a reconstruction head)
                usable.update(rows)
                log.info("init_from %s: %d output tensors of %s built from its classes %s", folder, len(rows), name,
                         [source for source, _ in classes])
            if not usable:
                if name not in method.trainable or name == method.exported:
                    raise InputError(f"init_from {folder}: no weights fit network {name!r}")
                log.info("init_from %s: nothing fits %s (a head of this stage's own), left as built", folder, name)
                continue
            module.load_state_dict(usable, strict=False)
            log.info("init_from %s: %d/%d tensors of %s", folder, len(usable), len(own), name)

    return load


def _cascade_folder(recipe: Recipe, out: Path, fine: str | None = None) -> Path:
    """Assemble (once) a coarse-to-fine cascade folder from two stages' model folders.

    The coarse stage is ``export.cascade.coarse``; the fine one ``fine`` if given (pseudo-labelling
    with the stage just before), else ``export.cascade.fine``.
    """
    names = dict(recipe.export.cascade or {})
    if fine is not None:
        names["fine"] = fine
    if "coarse" not in names:
        raise InputError("pseudo_labels: cascade needs export.cascade.coarse")
    folder = out / f"cascade-{names['coarse']}-{names['fine']}"
    sources = {role: out / names[role] / "model" for role in ("coarse", "fine")}
    for role, source in sources.items():
        if not (source / "model.json").exists():
            raise InputError(f"cascade: stage {names[role]!r} has no model yet")
    if (folder / "model.json").exists():
        # reuse it only if it holds the stages' current weights (a stage retrained since would be lost)
        if all(read_card(folder / role).weights_sha256 == read_card(source).weights_sha256
               for role, source in sources.items()):
            return folder
        log.info("cascade %s: a stage was retrained since it was assembled; assembling it again", folder.name)
    with atomic_folder(folder, overwrite=True) as staging:
        for role, source in sources.items():
            shutil.copytree(source, staging / role)
        card = read_card(staging / "fine")
        card.members = [{"role": "coarse", "path": "coarse"}, {"role": "fine", "path": "fine"}]
        card.id = recipe.export.id or recipe.name
        card.name = recipe.export.name or recipe.name
        card.description = (recipe.export.description or "") + " Coarse-to-fine cascade."
        save_model_folder(None, card, staging, overwrite=True)
    return folder


def add_pseudo_labels(data: TrainingData, model_folder: Path, folder: Path, max_uncertainty: float, device: str,
                      reuse: bool = False) -> None:
    """Label the unlabeled cases with ``model_folder`` and add them to ``data``'s labeled set.

    A predicted tooth is kept when its mean normalised entropy is at most ``max_uncertainty``; the
    voxels of the other predicted teeth are marked 255 ("ignore": no loss there), so that
    uncertain identifications neither teach nor contradict (CFP's confidence filtering).
    """
    folder.mkdir(parents=True, exist_ok=True)
    predictor = None
    added = []
    for case in data.unlabeled:
        target = folder / f"{case.id}.nii.gz"
        if not target.exists() and not reuse:
            if predictor is None:
                predictor = Predictor(model_folder, InferenceOptions(device=device, tta=False, uncertainty=True,
                                                                     numbering_checks=False))
            prediction = predictor.predict(read_volume(case.image))
            labels = prediction.labels.array.astype(np.uint8)
            doubtful = [v for v, u in prediction.tooth_uncertainty.items() if u > max_uncertainty]
            labels[np.isin(labels, doubtful)] = 255
            write_volume(prediction.labels.with_array(labels), target, overwrite=True)
        if target.exists():
            added.append(Case(f"pseudo-{case.id}", case.image, target))
    data.labeled = list(data.labeled) + added
    log.info("pseudo-labels: %d unlabeled cases added from %s", len(added), model_folder)


def _has_training(out: Path) -> bool:
    """Whether a run folder holds anything besides its ``recipe.yaml`` (a stage, pseudo-labels, ...)."""
    return any(entry.name != "recipe.yaml" for entry in out.iterdir())


_ABSENT = type("Absent", (), {"__repr__": lambda self: "(absent)"})()


def recipe_differences(before: Any, after: Any, key: str = "") -> list[str]:
    """``stages.0.iterations: 800 -> 1000``, one line per value that differs, in the recipe's order:
    what a user who resumes with another recipe (or other --set values) changed."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [line for name in [*before, *(k for k in after if k not in before)]
                for line in recipe_differences(before.get(name, _ABSENT), after.get(name, _ABSENT),
                                               f"{key}.{name}" if key else str(name))]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [line for i, (a, b) in enumerate(zip(before, after))
                for line in recipe_differences(a, b, f"{key}.{i}" if key else str(i))]
    if before == after:
        return []
    if isinstance(before, list) and isinstance(after, list):
        return [f"{key or 'recipe'}: {len(before)} -> {len(after)} entries"]
    return [f"{key or 'recipe'}: {before!r} -> {after!r}"]


def _check_run_folder(out: Path, restart: bool) -> None:
    """A run folder is new, empty or an earlier run's (it has ``recipe.yaml``): ``--output ~/cases --restart``
    must not delete a folder of the user's, nor a run mix its stages into one."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; a training run writes into a folder")
    if out.is_dir() and not (out / "recipe.yaml").exists() and any(out.iterdir()):
        raise InputError(f"{out} holds files but no recipe.yaml: it is not a ToothSeg run folder, and "
                         f"{'--restart deletes run folders only' if restart else 'a run does not write among them'}; "
                         "choose a new or empty folder")


def _stage_datasets(recipe: Recipe) -> list[tuple[DataConfig, LabelTable, list[int], TrainingData]]:
    """Each stage's data (stages with the same data section share one ``TrainingData``), built before
    any training, so that a stage that cannot run is refused before the earlier ones have trained."""
    datasets: dict[str, TrainingData] = {}
    out = []
    for index, stage in enumerate(recipe.stages):
        config = stage_data(recipe, index)
        table = label_table_named(config.label_table)
        class_values = class_values_for(config, table)
        key = repr(config)
        if key not in datasets:
            datasets[key] = TrainingData(config, table, class_values, recipe.seed)
        data = datasets[key]
        if config.pseudo_labels and not data.unlabeled:
            raise InputError(f"stage {stage.name}: data.pseudo_labels labels the unlabeled cases, and the data "
                             "section gives none (data.unlabeled, or labeled_fraction below 1)")
        out.append((config, table, class_values, data))
    return out


def run_recipe(recipe: Recipe, raw: dict[str, Any], output: str | Path | None = None, device: str = "auto",
               restart: bool = False, quiet: bool = False, token: CancelToken | None = None,
               progress: Progress | None = None) -> RunResult:
    """Train every stage (resuming finished/interrupted ones) and return the final model folder.

    ``progress`` hears every step (its own cancel token is not used: ``token`` stops training at a
    step boundary, with a checkpoint, instead of raising mid-step)."""
    rank, world, _ = distributed_context()
    out = Path(output or recipe.output_dir or Path("runs") / recipe.name)
    saved = out / "recipe.yaml"
    if rank == 0:
        _check_run_folder(out, restart)
        if restart and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(raw, sort_keys=False)
        if saved.exists() and saved.read_text(encoding="utf-8") != text and _has_training(out):
            changes = recipe_differences(yaml.safe_load(saved.read_text(encoding="utf-8")), raw)
            raise InputError(f"{out} holds a run of a different recipe ({'; '.join(changes[:4])}"
                             f"{f'; {len(changes) - 4} more' if len(changes) > 4 else ''}); use --restart or "
                             "another --output")
        # A folder holding only its recipe (a run refused before any training, e.g. for a bad model
        # setting) takes the corrected recipe: nothing trained there can be mixed up.
        saved.write_text(text, encoding="utf-8")
    if world > 1:
        dist.barrier()
    token = token or CancelToken()
    stage_datasets = _stage_datasets(recipe)
    previous: Path | None = None
    results: list[StageResult] = []
    for index, stage in enumerate(recipe.stages):
        config, table, class_values, data = stage_datasets[index]
        stage_dir = out / stage.name
        if (stage_dir / "model" / "model.json").exists():
            previous = stage_dir / "model"
            continue
        if config.pseudo_labels:
            if config.pseudo_labels == "cascade":
                if rank == 0:
                    _cascade_folder(recipe, out, fine=recipe.stages[index - 1].name)
                source = out / f"cascade-{(recipe.export.cascade or {}).get('coarse')}-{recipe.stages[index - 1].name}"
            else:
                source = out / config.pseudo_labels / "model"
            if rank == 0:
                add_pseudo_labels(data, source, stage_dir / "pseudo_labels", config.pseudo_max_uncertainty, device)
            if world > 1:
                dist.barrier()
                if rank != 0:
                    add_pseudo_labels(data, source, stage_dir / "pseudo_labels", config.pseudo_max_uncertainty,
                                      device, reuse=True)
        on_step = None
        if progress is not None:
            part = progress.sub(index / len(recipe.stages), (index + 1) / len(recipe.stages), stage.name)

            def on_step(done: int, total: int, loss: float, part: Progress = part) -> None:
                part.update(done / total, f"step {done}/{total}, loss {loss:.3f}")

        trainer = Trainer(recipe, index, stage_dir, data, table, class_values, device, token, quiet, on_step)
        result = trainer.fit(resume=True, init_weights=_initializer(stage.init_from, previous, stage.init_classes))
        results.append(result)
        if result.interrupted:
            return RunResult(None, results, True)
        previous = stage_dir / "model"
    final = out / "model"
    if rank == 0 and previous is not None:
        source = _cascade_folder(recipe, out) if recipe.export.cascade else previous
        with atomic_folder(final, overwrite=True) as staging:  # the previous run's model stays until this is whole
            shutil.copytree(source, staging, dirs_exist_ok=True)
    return RunResult(final, results, False)


def snapshot_stage(recipe: Recipe, raw: dict[str, Any], output: str | Path | None, dest: str | Path,
                   stage: str | None = None) -> tuple[Path, str, int]:
    """Write a stage's latest checkpoint as a model folder in ``dest``: (folder, stage, step).

    What a researcher needs to score a long run half-way (``bench_cbct_generalisation.py --model DEST``)
    without stopping it: the checkpoint is only read (it is replaced atomically by the running training).
    The folder is the stage's own network with the recipe's export settings; its card's metrics say the step.
    ``stage`` defaults to the last stage that has a checkpoint. Refused for a run of another recipe, for a
    ``dest`` that exists and is not a model folder (it would be replaced whole), and for the run's own
    exported models (``model``, a stage's ``model`` or ``best``)."""
    out = Path(output or recipe.output_dir or Path("runs") / recipe.name)
    saved = out / "recipe.yaml"
    if not saved.exists():
        raise InputError(f"{out} is not a ToothSeg run folder (no recipe.yaml)")
    changes = recipe_differences(yaml.safe_load(saved.read_text(encoding="utf-8")), raw)
    if changes:
        raise InputError(f"{out} holds a run of a different recipe ({'; '.join(changes[:4])}): a snapshot would "
                         "carry the wrong card")
    names = [s.name for s in recipe.stages]
    if stage is None:
        with_checkpoint = [n for n in names if (out / n / "checkpoint.pt").exists()]
        if not with_checkpoint:
            raise InputError(f"{out}: no stage has a checkpoint yet")
        stage = with_checkpoint[-1]
    if stage not in names:
        raise InputError(f"stage {stage!r} is not in recipe {recipe.name!r} (its stages: {', '.join(names)})")
    if not (out / stage / "checkpoint.pt").exists():
        raise InputError(f"stage {stage!r} of {out} has no checkpoint yet")
    dest = Path(dest)
    if dest.exists() and not (dest / "model.json").exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError(f"{dest} exists and is not a model folder; choose a new folder")
    own = {out / "model", *(out / n / part for n in names for part in ("model", "best"))}
    if dest.exists() and any(dest.resolve() == folder.resolve() for folder in own if folder.exists()):
        raise InputError(f"{dest} is a model the run exported itself; a snapshot does not replace it: choose a new "
                         "folder")
    index = names.index(stage)
    config = stage_data(recipe, index)
    table = label_table_named(config.label_table)
    class_values = class_values_for(config, table)
    data = TrainingData(config, table, class_values, recipe.seed)
    trainer = Trainer(recipe, index, out / stage, data, table, class_values, device="cpu", quiet=True)
    step = trainer.restore()
    if step is None:  # removed between the check and the read (a --restart)
        raise InputError(f"stage {stage!r} of {out} has no checkpoint")
    trainer.export(dest, {"snapshot_step": step})
    return dest, stage, step
