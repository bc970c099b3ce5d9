"""Recipes: one YAML file describes a whole (multi-stage) training run.

The YAML maps onto typed dataclasses; an unknown key is an error that names the nearest known key,
and ``--set path.to.key=value`` overrides any field (the value is parsed as YAML, so ``[96, 96]``,
``1e-3`` and ``true`` work). Stages run in order; each names a method from the registry, its
settings, and ``init_from`` (``none``, ``previous``, ``previous.encoder`` or a model folder).
``--set stages.0=null`` drops a stage (e.g. a pretraining stage when starting from trained weights);
indices in the other ``--set`` values keep counting the recipe's stages as written.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.models.card import IntensityNormalization, check_model_id
from ..core.names import PLAIN_NAME_RULE, is_plain_name
from .synth.cbct import SynthesisOptions

__all__ = ["Recipe", "DataConfig", "ModelConfig", "StageConfig", "OptimizerConfig", "AugmentConfig",
           "ExportConfig", "load_recipe", "apply_overrides", "setting", "yaml_text", "recipe_from_dict", "stage_data"]


HANDEDNESS_MODES = ("check", "fix", "off")


@dataclass
class AugmentConfig:
    """On-the-fly augmentation; probabilities per sample. Sagittal flips always swap FDI labels."""

    flip_lr: float = 0.5
    other_flip_axes: list[int] = field(default_factory=list)  # only for label sets without sides
    rotate_deg: float = 15.0
    rotate_probability: float = 0.3
    scale: tuple[float, float] = (0.85, 1.15)
    scale_probability: float = 0.3
    elastic_mm: float = 0.0
    elastic_probability: float = 0.0
    gamma: tuple[float, float] = (0.7, 1.5)
    gamma_probability: float = 0.3
    noise_std: tuple[float, float] = (0.0, 0.1)
    noise_probability: float = 0.15
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    blur_probability: float = 0.2
    contrast: tuple[float, float] = (0.75, 1.25)
    contrast_probability: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    brightness_probability: float = 0.15
    low_resolution: tuple[float, float] = (0.5, 1.0)
    low_resolution_probability: float = 0.25


@dataclass
class DataConfig:
    """Where cases come from and how patches are made (spatial lists in array order z, y, x)."""

    kind: str = "3d"  # 3d or 2d
    source: str = "files"  # files, ufba425, synthetic
    labeled: str | None = None  # manifest JSON (files), split name (ufba425), or label-map list (synthetic)
    unlabeled: str | None = None
    validation: str | None = None  # manifest (files), split name (ufba425), number of scans (synthetic); none
    root: str | None = None  # folder the manifest paths are relative to (default: the manifest's folder)
    labeled_fraction: float = 1.0  # keep this share of the labeled training cases (the rest: unlabeled)
    label_table: str = "fdi"  # fdi, fdi-deciduous, binary (every tooth → 1), or a JSON file
    class_values: list[int] | None = None  # output channels' label values; default: all in the table
    spacing: list[float] | None = None
    # 2D only: the extent (y, x), in the units of ``spacing``, that a whole X-ray is taken to span,
    # whatever its size and pixel spacing (UFBA-425's X-rays come resized to 512 x 512 px without
    # spacing: [512, 512]); None: the image's own pixel spacing
    image_extent: list[float] | None = None
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    intensity: dict[str, Any] = field(default_factory=lambda: {"mode": "percentile_zscore"})
    foreground_oversample: float = 0.33
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    workers: int = 2
    cache_cases: bool = True
    pseudo_labels: str | None = None  # earlier stage whose model labels the unlabeled set, or "cascade"
    # (export.cascade.coarse + the stage just before this one)
    pseudo_max_uncertainty: float = 0.25  # keep predicted teeth whose mean normalised entropy is below this
    # labels with fewer voxels than this in a training label map (as read) become background: the
    # coarse-to-fine method drops such "small teeth" (36 voxels); 0 keeps every label
    min_label_voxels: int = 0
    # 3D label maps whose left/right numbering is mirrored (toothseg.core.handedness): "check" refuses
    # them (a model would learn to number every correct scan mirror-wise), "fix" swaps their left/right
    # numbers, "off" reads them as stored. The built-in STS-2024 maps are always corrected.
    handedness: str = "check"
    # synthetic source: options of the synthesiser (toothseg.train.synth.SynthesisOptions), e.g.
    # {synthseg_probability: 0.5, bias_field_probability: 0.5}
    synthesis: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    architecture: str = "resenc_unet"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # sgd, adam, adamw
    lr: float = 0.01
    weight_decay: float = 3e-5
    momentum: float = 0.99
    nesterov: bool = True
    schedule: str = "poly"  # poly, cosine, linear, constant, warmup_cosine (RAIL)
    warmup_iterations: int = 0
    warmup_start_lr: float | None = None  # where the warm-up starts (default min_lr; U-Mamba2's DAE: 5e-7)
    min_lr: float = 0.0
    power: float = 0.9
    # no weight decay on 1-D parameters (norm weights, biases), as timm/MAE-style pretraining does
    no_decay_norm_bias: bool = False


@dataclass
class StageConfig:
    method: str = "supervised"
    name: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # method-specific, validated by the method
    iterations: int = 1000
    batch_size: int = 2  # labeled samples per step
    unlabeled_batch_size: int = 0  # unlabeled samples per step (semi-supervised methods)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    amp: bool = True  # autocast + grad scaling on CUDA (ignored on CPU)
    grad_accumulation: int = 1
    grad_clip: float = 12.0
    checkpoint_every: int = 100
    validate_every: int = 0  # 0: only at the end
    init_from: str = "none"
    data: dict[str, Any] = field(default_factory=dict)  # overrides of the recipe's data section for this stage


@dataclass
class ExportConfig:
    id: str = ""
    name: str = ""
    description: str = ""
    mirror_axes: list[int] = field(default_factory=list)
    license: str = ""
    postprocessing: list[dict[str, Any]] | None = None
    cascade: dict[str, str] | None = None  # {"coarse": stage name, "fine": stage name}: export a cascade


@dataclass
class Recipe:
    name: str
    data: DataConfig
    model: ModelConfig
    stages: list[StageConfig]
    seed: int = 0
    output_dir: str = ""
    export: ExportConfig = field(default_factory=ExportConfig)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Turn a YAML value into the annotated type (dataclasses recursively, tuples from lists)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where) if inner else value
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InputError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool) is False and isinstance(value, int):
        return value
    if annotation is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a YAML number where text is kept, e.g. ``validation: 2`` synthetic scans
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise InputError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def _build(cls: type, data: Any, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(known))}"
            raise InputError(f"unknown key '{where + '.' if where else ''}{key}' in the recipe{hint}")
    values = {}
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            values[f.name] = _convert(data[f.name], hints[f.name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise InputError(f"the recipe needs '{path}'")
    return cls(**values)


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    recipe = _build(Recipe, data, "")
    if not recipe.stages:
        raise InputError("the recipe has no stages")
    if recipe.data.kind not in ("2d", "3d"):
        raise InputError(f"data.kind must be 2d or 3d, got {recipe.data.kind!r}")
    if len(recipe.data.patch_size) != (2 if recipe.data.kind == "2d" else 3):
        raise InputError(f"data.patch_size needs {2 if recipe.data.kind == '2d' else 3} values")
    extent = recipe.data.image_extent
    if extent is not None and (recipe.data.kind != "2d" or len(extent) != 2 or min(extent) <= 0):
        raise InputError("data.image_extent is for 2D X-rays: two values (y, x) > 0")
    from .methods import get_method

    for index, stage in enumerate(recipe.stages):
        method = get_method(stage.method)  # unknown method: error with suggestion
        method.validate_settings(stage.settings, f"stages[{index}].settings")
        stage.name = stage.name or f"{index}_{stage.method}"
        _check_stage_values(stage, f"stages[{index}]")
        _check_data_values(stage_data(recipe, index), f"stages[{index}].data" if stage.data else "data")
    names = [stage.name for stage in recipe.stages]
    for index, name in enumerate(names):  # each names the stage's output folder
        if not is_plain_name(name):
            raise InputError(f"stages[{index}].name {name!r}: {PLAIN_NAME_RULE} (it names a folder)")
    # found now, not when the trained model is exported hours later
    check_model_id(recipe.export.id or recipe.name, "the recipe's " + (
        "export.id" if recipe.export.id else "name (the model ID unless export.id is set)"))
    if recipe.export.cascade:
        missing = [v for k, v in recipe.export.cascade.items() if k not in ("coarse", "fine") or v not in names]
        if missing or set(recipe.export.cascade) != {"coarse", "fine"}:
            raise InputError(f"export.cascade needs 'coarse' and 'fine' stage names among {names}")
    for index in range(len(recipe.stages)):
        _check_pseudo_label_source(recipe, index, names)
    return recipe


def _check_pseudo_label_source(recipe: Recipe, index: int, names: list[str]) -> None:
    """A stage's ``data.pseudo_labels`` names a model trained before it: an earlier segmentation stage,
    or ``cascade`` (``export.cascade.coarse``, earlier, with the stage just before as the fine model).
    Checked now, so that a typo does not surface after the earlier stages have trained."""
    from .methods import get_method

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


OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("poly", "cosine", "linear", "constant", "warmup_cosine")
SOURCES = ("files", "ufba425", "synthetic")


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
    _refuse(problems, where)


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
    from .data.augment import check_extra_flips
    from .data.dataset import class_values_for, label_table_for

    try:
        table = label_table_for(data.label_table)
    except InputError:
        return []
    try:
        check_extra_flips(data.augment, table, class_values_for(data, table), 2 if data.kind == "2d" else 3)
    except InputError as exc:
        return [str(exc)]
    return []


def stage_data(recipe: Recipe, index: int) -> DataConfig:
    """The data section for stage ``index``: the recipe's, with the stage's ``data`` overrides."""
    overrides = recipe.stages[index].data
    if not overrides:
        return recipe.data
    base = dataclasses.asdict(recipe.data)
    merged = {**base, **overrides}
    if "augment" in overrides:
        merged["augment"] = {**base["augment"], **overrides["augment"]}
    return _build(DataConfig, merged, f"stages[{index}].data")


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) else part
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            if isinstance(node, dict):
                node[key] = {}
                node = node[key]
            else:
                raise InputError(f"--set {dotted}: '{'.'.join(parts[:i + 1])}' does not exist") from None
    last: Any = int(parts[-1]) if isinstance(node, list) else parts[-1]
    if isinstance(node, list) and not (0 <= last < len(node)):
        raise InputError(f"--set {dotted}: index {last} is out of range")
    node[last] = value


def yaml_text(value: Any) -> str:
    """``value`` as YAML text that reads back as exactly this value: a string plain where YAML keeps it
    as it is, else (a folder 'Patient #3' would end at the ' #', 'a: b' would be a mapping) as JSON,
    which YAML also reads."""
    import yaml

    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def setting(key: str, value: Any) -> str:
    """An override (``--set`` item) whose value reads back exactly (see :func:`yaml_text`)."""
    return f"{key}={yaml_text(value)}"


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["stages.0.iterations=10", "data.patch_size=[64, 64]"]`` applied to the raw YAML data."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"--set {key}: cannot parse {text!r}: {exc}") from exc
        if text.count("#") > json.dumps(value, default=str).count("#"):
            # YAML took the rest for a comment: '--set data.labeled=/data/Study #2/x.json' would train on '/data/Study'
            raise InputError(f"--set {key}: ' #' starts a YAML comment, so {text!r} would be read as {value!r}; quote "
                             f"the value: --set '{key}=\"{text}\"'")
        _set_path(data, key.strip(), value)
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, dict[str, Any]]:
    """Recipe from YAML (+ overrides); also returns the resolved raw dict, saved with every run."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read recipe ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe must be a YAML mapping")
    data = apply_overrides(data, overrides or [])
    if isinstance(data.get("stages"), list):  # a stage set to null is dropped, after all overrides
        data["stages"] = [stage for stage in data["stages"] if stage is not None]
    data.setdefault("name", path.stem)
    recipe = recipe_from_dict(data)
    recipe_dir = path.parent
    for attr in ("labeled", "unlabeled", "validation", "root"):
        value = getattr(recipe.data, attr)
        if value and not Path(value).is_absolute() and recipe.data.source == "files" and (recipe_dir / value).exists():
            setattr(recipe.data, attr, str(recipe_dir / value))
    return recipe, data
