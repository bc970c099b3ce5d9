"""Checks of a recipe that need the method registry and the data definitions (label tables, flips).

Run when a recipe loads, so that a typo in a later stage is found before the earlier stages train
for hours; the plain typing of values is :mod:`.mapping`'s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ...core.errors import InputError
from ...core.models.card import IntensityNormalization, ModelCard, check_model_id
from ...core.models.folder import CARD_FILE
from ...core.names import PLAIN_NAME_RULE, is_plain_name
from ...core.networks import build_network
from ..data.augment import check_extra_flips
from ..data.dataset import class_values_for
from ...core.labels import INSTANCE_TABLES, TOOTH_JAW, label_table_named
from ...core.postprocessing import step_problems
from ..engine.class_init import parse_init_classes
from ..engine.frozen import check_train_only
from ..methods import get_method
from ..synth.cbct import SynthesisOptions
from .mapping import exported_label_table, stage_data
from .schema import HANDEDNESS_MODES, OPTIMIZERS, SCHEDULES, SOURCES, DataConfig, Recipe, StageConfig

__all__ = ["check_recipe"]


def check_recipe(recipe: Recipe) -> None:
    """Refuse, with the reason, a recipe no run can use; names each stage that has none (``0_supervised``)."""
    if not recipe.stages:
        raise InputError("the recipe has no stages")
    if recipe.data.kind not in ("2d", "3d"):
        raise InputError(f"data.kind must be 2d or 3d, got {recipe.data.kind!r}")
    if len(recipe.data.patch_size) != (2 if recipe.data.kind == "2d" else 3):
        raise InputError(f"data.patch_size needs {2 if recipe.data.kind == '2d' else 3} values")
    extent = recipe.data.image_extent
    if extent is not None and (recipe.data.kind != "2d" or len(extent) != 2 or min(extent) <= 0):
        raise InputError("data.image_extent is for 2D X-rays: two values (y, x) > 0")
    for index, stage in enumerate(recipe.stages):
        method = get_method(stage.method)  # unknown method: error with suggestion
        method.validate_settings(stage.settings, f"stages[{index}].settings")
        stage.name = stage.name or f"{index}_{stage.method}"
        _check_stage_values(stage, f"stages[{index}]")
        data = stage_data(recipe, index)
        _check_data_values(data, f"stages[{index}].data" if stage.data else "data")
        if stage.init_classes is not None:
            _check_init_classes(recipe, index, data)
        if stage.train_only is not None:
            _check_train_only(recipe, index, data)
    names = [stage.name for stage in recipe.stages]
    for index, name in enumerate(names):  # each names the stage's output folder
        if not is_plain_name(name):
            raise InputError(f"stages[{index}].name {name!r}: {PLAIN_NAME_RULE} (it names a folder)")
    # found now, not when the trained model is exported hours later
    check_model_id(recipe.export.id or recipe.name, "the recipe's " + (
        "export.id" if recipe.export.id else "name (the model ID unless export.id is set)"))
    if recipe.export.output_label_table is not None:
        label_table_named(recipe.export.output_label_table)  # an unknown name is refused with the known ones
        if not recipe.export.postprocessing:
            raise InputError("export.output_label_table needs the export.postprocessing steps that make those "
                             "labels (e.g. [{name: teeth_from_boundary}])")
    if recipe.export.postprocessing:
        problems = step_problems(recipe.export.postprocessing)
        if problems:
            raise InputError("export.postprocessing: " + "; ".join(problems))
        # the exported model is the last stage's; a binary tooth map is all interior (split at its necks)
        exported_table = exported_label_table(recipe)
        if exported_table not in (*INSTANCE_TABLES, "binary") and any(
                step.get("name") == "teeth_from_boundary" for step in recipe.export.postprocessing):
            raise InputError(f"export.postprocessing: teeth_from_boundary reads tooth interior/boundary classes; "
                             f"the exported stage trains label_table {exported_table!r}, whose result it would "
                             f"empty (use label_table: {', '.join(INSTANCE_TABLES)} or binary)")
        if exported_table != TOOTH_JAW and any(
                step.get("name") == "teeth_from_jaws" for step in recipe.export.postprocessing):
            raise InputError(f"export.postprocessing: teeth_from_jaws reads upper/lower tooth classes; the exported "
                             f"stage trains label_table {exported_table!r} (use label_table: {TOOTH_JAW})")
    if recipe.export.cascade:
        missing = [v for k, v in recipe.export.cascade.items() if k not in ("coarse", "fine") or v not in names]
        if missing or set(recipe.export.cascade) != {"coarse", "fine"}:
            raise InputError(f"export.cascade needs 'coarse' and 'fine' stage names among {names}")
    for index in range(len(recipe.stages)):
        _check_pseudo_label_source(recipe, index, names)


def _check_pseudo_label_source(recipe: Recipe, index: int, names: list[str]) -> None:
    """A stage's ``data.pseudo_labels`` names a model trained before it: an earlier segmentation stage,
    or ``cascade`` (``export.cascade.coarse``, earlier, with the stage just before as the fine model).
    Checked now, so that a typo does not surface after the earlier stages have trained."""
    source = stage_data(recipe, index).pseudo_labels
    if not source:
        return
    where = f"stages[{index}] ({names[index]}): data.pseudo_labels"
    earlier = names[:index]
    if source == "cascade":
        coarse = (recipe.export.cascade or {}).get("coarse")
        if coarse is None:
            raise InputError(f"{where}: cascade needs export.cascade (its coarse stage locates the teeth)")
        if coarse not in earlier[:-1]:
            raise InputError(f"{where}: cascade needs the coarse stage {coarse!r} to come before the stage "
                             f"just before this one (the fine model); stages before it: {earlier}")
        source = earlier[-1]
    elif source not in earlier:
        raise InputError(f"{where} {source!r} must name an earlier stage ({', '.join(earlier) or 'none'}) "
                         "or be 'cascade'")
    producer = recipe.stages[names.index(source)]
    if not getattr(get_method(producer.method), "produces_segmentation", True):
        raise InputError(f"{where}: stage {source!r} ({producer.method}) trains no segmentation model")


def _refuse(problems: list[str], where: str) -> None:
    if problems:
        raise InputError(f"{where}: " + "; ".join(problems))


def _check_stage_values(stage: StageConfig, where: str) -> None:
    """Values no run can use, found when the recipe loads: a later stage's typo would otherwise stop
    the run after the earlier stages trained, and some (iterations 0) would not stop it at all."""
    problems = []
    for name, low in (("iterations", 1), ("batch_size", 1), ("unlabeled_batch_size", 0), ("grad_accumulation", 1),
                      ("checkpoint_every", 1), ("validate_every", 0)):
        if getattr(stage, name) < low:
            problems.append(f"{name} must be at least {low}, got {getattr(stage, name)}")
    if stage.grad_clip < 0:
        problems.append(f"grad_clip must be ≥ 0 (0: no clipping), got {stage.grad_clip}")
    opt = stage.optimizer
    if opt.name not in OPTIMIZERS:
        problems.append(f"optimizer.name {opt.name!r} is not one of {', '.join(OPTIMIZERS)}")
    if opt.schedule not in SCHEDULES:
        problems.append(f"optimizer.schedule {opt.schedule!r} is not one of {', '.join(SCHEDULES)}")
    if not opt.lr >= 0:  # 0 holds the weights (a stage that only exports or checks a start)
        problems.append(f"optimizer.lr must be ≥ 0, got {opt.lr}")
    for name in ("weight_decay", "min_lr", "warmup_iterations", "warmup_start_lr"):
        if (getattr(opt, name) or 0) < 0:
            problems.append(f"optimizer.{name} must be ≥ 0, got {getattr(opt, name)}")
    if not 0 <= opt.momentum < 1:
        problems.append(f"optimizer.momentum must be in [0, 1), got {opt.momentum}")
    if not opt.power > 0:
        problems.append(f"optimizer.power must be > 0, got {opt.power}")
    if stage.init_classes is not None:
        if stage.init_from in ("", "none"):
            problems.append("init_classes needs init_from (the network whose classes it names)")
        elif stage.init_from == "previous.encoder":
            problems.append("init_classes builds the output layers from the previous network's, and "
                            "init_from: previous.encoder takes its encoder only (use previous)")
        try:
            parse_init_classes(stage.init_classes)
        except InputError as exc:
            problems.append(str(exc))
    _refuse(problems, where)


def _check_init_classes(recipe: Recipe, index: int, data: DataConfig) -> None:
    """``init_classes`` has one entry per class of the stage's network and names only classes the network it
    starts from has (a model folder's card, or the previous stage's classes): found when the recipe loads,
    before a run folder records it."""
    stage, where = recipe.stages[index], f"stages[{index}].init_classes"
    classes = class_values_for(data, label_table_named(data.label_table))
    if len(stage.init_classes) != len(classes):
        raise InputError(f"{where}: {len(stage.init_classes)} entries for a network of {len(classes)} classes "
                         f"({data.label_table}: values {classes[:8]})")
    if stage.init_from.startswith("previous"):
        previous = stage_data(recipe, index - 1) if index > 0 else None
        old = len(class_values_for(previous, label_table_named(previous.label_table))) if previous else None
    else:
        card = Path(stage.init_from) / CARD_FILE
        old = len(ModelCard.from_json(card.read_text(encoding="utf-8")).class_values) if card.is_file() else None
    highest = max(source for source, _ in parse_init_classes(stage.init_classes))
    if old is not None and highest >= old:
        raise InputError(f"{where}: names class {highest}, but the network of init_from {stage.init_from!r} has "
                         f"{old} classes (0-{old - 1})")


def _check_train_only(recipe: Recipe, index: int, data: DataConfig) -> None:
    """``train_only`` names parameters of the stage's network (built on the meta device: no memory, no
    weights), and leaves some frozen: a typo would otherwise freeze everything or nothing."""
    stage = recipe.stages[index]
    if stage.init_from in ("", "none"):
        raise InputError(f"stages[{index}].train_only: the frozen weights would stay random: set init_from")
    kwargs = {**recipe.model.kwargs, "spatial_dims": 2 if data.kind == "2d" else 3,
              "num_classes": len(class_values_for(data, label_table_named(data.label_table)))}
    with torch.device("meta"):
        network = build_network(recipe.model.architecture, **kwargs)
    check_train_only(stage.train_only, (name for name, _ in network.named_parameters()),
                     f"stages[{index}].train_only")


def _check_data_values(data: DataConfig, where: str) -> None:
    problems = []
    if data.source not in SOURCES:
        problems.append(f"source {data.source!r} is not one of {', '.join(SOURCES)}")
    if data.source == "synthetic":
        if data.validation not in (None, "none") and not data.validation.isdigit():
            problems.append(f"validation for synthetic data is a number of synthetic scans (or none), "
                            f"got {data.validation!r}")
        if data.unlabeled not in (None, "none"):
            problems.append("unlabeled: synthetic data has no unlabeled set (unlabeled batches are synthetic "
                            "scans too); leave it out")
    if any(int(p) < 1 for p in data.patch_size):
        problems.append(f"patch_size values must be at least 1, got {data.patch_size}")
    if data.spacing is not None and (len(data.spacing) != len(data.patch_size) or min(data.spacing) <= 0):
        problems.append(f"spacing needs {len(data.patch_size)} values > 0 (z, y, x order), got {data.spacing}")
    if data.handedness not in HANDEDNESS_MODES:
        problems.append(f"handedness must be one of {', '.join(HANDEDNESS_MODES)}, got {data.handedness!r}")
    if data.min_label_voxels < 0:
        problems.append(f"min_label_voxels must be ≥ 0 (0: keep every label), got {data.min_label_voxels}")
    if data.workers < 0:
        problems.append(f"workers must be ≥ 0 (0: load in the main process), got {data.workers}")
    if not 0 < data.labeled_fraction <= 1:
        problems.append(f"labeled_fraction must be in (0, 1], got {data.labeled_fraction}")
    if data.label_table in (*INSTANCE_TABLES, TOOTH_JAW) and data.pseudo_labels:
        problems.append(f"pseudo_labels with label_table {data.label_table}: its classes are made from maps with one "
                        "value per tooth, and a tooth-boundary or tooth-jaw model's own output (interior/boundary, "
                        "upper/lower) is not one; label the unlabeled set with an FDI model instead")
    for name in ("foreground_oversample", "pseudo_max_uncertainty"):
        if not 0 <= getattr(data, name) <= 1:
            problems.append(f"{name} must be in [0, 1], got {getattr(data, name)}")
    for name, value in dataclasses.asdict(data.augment).items():
        if name.endswith("probability") or name == "flip_lr":
            if not 0 <= value <= 1:
                problems.append(f"augment.{name} must be in [0, 1], got {value}")
        elif isinstance(value, (list, tuple)) and name != "other_flip_axes":
            if len(value) != 2 or value[0] > value[1] or min(value) < 0:
                problems.append(f"augment.{name} must be a range [low, high] with 0 ≤ low ≤ high, got {list(value)}")
    try:
        IntensityNormalization(**data.intensity)
    except (InputError, TypeError) as exc:
        problems.append(f"intensity: {exc}")
    if data.synthesis:
        if data.source != "synthetic":
            problems.append("synthesis: options of the synthetic source; this recipe reads " + data.source)
        else:
            try:
                SynthesisOptions.from_dict(data.synthesis)
            except (InputError, TypeError, ValueError) as exc:
                problems.append(str(exc))
    if data.augment.other_flip_axes:
        problems += _extra_flip_problems(data)
    _refuse(problems, where)


def _extra_flip_problems(data: DataConfig) -> list[str]:
    """``other_flip_axes`` against the label table, when the table can be read now (a JSON table the
    user has yet to write is checked again when training starts)."""
    try:
        table = label_table_named(data.label_table)
    except InputError:
        return []
    try:
        check_extra_flips(data.augment, table, class_values_for(data, table), 2 if data.kind == "2d" else 3)
    except InputError as exc:
        return [str(exc)]
    return []
