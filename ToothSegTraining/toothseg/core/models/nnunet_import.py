"""nnU-Net v2 models into ToothSeg model folders: checkpoints, or a distributed model zip as it comes.

``checkpoint_final.pth`` (one per fold) + ``plans.json`` + ``dataset.json`` become one folder (folds: an
ensemble whose logits are averaged) with the plan's spacing, patch size, normalisation and label names,
and the rest of the plan that nnU-Net's inference arithmetic needs (:mod:`.nnunet_settings`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.atomic import atomic_folder
from ..labels import LabelTable, is_fdi_tooth
from ..networks.build import build_network
from .card import IntensityNormalization, ModelCard, check_model_id
from .checkpoints import (
    check_state_dict_fits,
    map_nnunet_state_dict,
    nnunet_architecture_kwargs,
    read_json,
    resolve_nnunet_configuration,
    safe_torch_load,
    unwrap_state_dict,
)
from .folder import save_model_folder
from .nnunet_settings import nnunet_settings_from_plans

__all__ = ["import_nnunet_checkpoint", "import_nnunet_zip", "sided_pairs", "known_trainer"]

log = logging.getLogger(__name__)

_KNOWN_TRAINER = re.compile(r"nnUNetTrainer(_\d+epochs)?(NoMirroring|_NoMirroring|_onlyMirror01|_DASegOrd0"
                            r"(_NoMirroring)?|DA5|_probabilisticOversampling_\d+)?")
"""nnU-Net trainers that change training only: their network comes from the plans and their test-time
mirroring from the checkpoint, which is all the importer reads."""


def known_trainer(name: str) -> bool:
    """True for nnU-Net's own trainers that build the network from the plans (see ``_KNOWN_TRAINER``)."""
    return bool(_KNOWN_TRAINER.fullmatch(name))


_SIDE_WORDS = {"left": "right", "right": "left"}


def sided_pairs(names: dict[int, str]) -> dict[int, int]:
    """Label values whose names differ only by a ``left``/``right`` word (``sinus_maxillary_left`` and
    ``..._right``): what a mirror across the sagittal plane exchanges. Unsided classes (jaws, teeth of
    one jaw as a whole) have no entry; FDI teeth are paired by the label table itself."""
    def key(name: str) -> tuple[str, ...] | None:
        words = re.split(r"[^a-z0-9]+", name.lower())
        sides = [w for w in words if w in _SIDE_WORDS]
        if len(sides) != 1:
            return None
        return tuple("<side>" if w in _SIDE_WORDS else w for w in words) + (sides[0],)

    by_key: dict[tuple[str, ...], int] = {}
    for value, name in names.items():
        k = key(name)
        if k is not None:
            by_key[k] = value
    pairs = {}
    for k, value in by_key.items():
        other = by_key.get(k[:-1] + (_SIDE_WORDS[k[-1]],))
        if other is not None:
            pairs[value] = other
    return pairs


def _label_table_from_dataset(dataset: dict[str, Any]) -> tuple[LabelTable, list[int]]:
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError("dataset.json has no 'labels'")
    by_value: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise InputError("nnU-Net region-based labels are not supported")
        by_value[int(value)] = str(name)
    if 0 not in by_value:
        raise InputError("dataset.json labels have no background (0)")
    names = {v: ("" if is_fdi_tooth(v) and n.strip().isdigit() else n) for v, n in by_value.items() if v != 0}
    table = LabelTable.custom(names, name=str(dataset.get("name", "nnunet")), swap_pairs=sided_pairs(names))
    return table, sorted(by_value)


def import_nnunet_checkpoint(checkpoint: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                             plans_path: str | os.PathLike[str], dataset_path: str | os.PathLike[str],
                             out_dir: str | os.PathLike[str], configuration: str = "3d_fullres",
                             model_id: str = "nnunet-imported", overwrite: bool = False,
                             source: dict[str, Any] | None = None) -> Path:
    """Convert nnU-Net v2 (plain, ResEnc or U-Mamba2) checkpoints into a model folder (``source``: what the
    card's provenance says they were read from, when not the files themselves).

    Several checkpoints (one per fold, e.g. ``fold_0 … fold_4/checkpoint_final.pth``) become an
    ensemble whose logits are averaged, as ``nnUNetv2_predict`` averages its folds. The card records
    the plan (:class:`NnUNetSettings`), so that inference does nnU-Net's arithmetic.
    """
    check_model_id(model_id, "--id")
    paths = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    if not paths:
        raise InputError("give at least one nnU-Net checkpoint")
    plans, dataset = read_json(plans_path), read_json(dataset_path)
    architecture, kwargs = nnunet_architecture_kwargs(plans, configuration, dataset)
    table, class_values = _label_table_from_dataset(dataset)
    if kwargs["num_classes"] != len(class_values):
        raise InputError(f"dataset.json lists {len(class_values)} labels but the plan expects {kwargs['num_classes']}")
    config = resolve_nnunet_configuration(plans, configuration)
    settings = nnunet_settings_from_plans(plans, config)
    networks, first = [], None
    for path in paths:
        raw = safe_torch_load(path)
        state = map_nnunet_state_dict(unwrap_state_dict(raw, path))
        network = build_network(architecture, **kwargs)
        check_state_dict_fits(network, state, architecture)
        network.load_state_dict(state)
        networks.append(network)
        first = raw if first is None else first
    trainer = str(first.get("trainer_name", "")) if isinstance(first, dict) else ""
    if trainer and not known_trainer(trainer):
        log.warning("nnU-Net trainer %r is not one ToothSeg knows: the network is built from the plans and the "
                    "mirror axes read from the checkpoint; if this trainer changes the network or its inference, "
                    "compare the imported model with nnUNetv2_predict before use (see "
                    "Testing/benchmarks/make_nnunet_fixtures.py)", trainer)
    # as nnU-Net's predictor reads it (from the first fold): None, or no entry, means no test-time
    # mirroring (its NoMirroring trainers, used for side-labelled tasks, save None)
    mirror = first.get("inference_allowed_mirroring_axes") if isinstance(first, dict) else None
    dims = kwargs["spatial_dims"]
    properties = settings.intensity_properties
    if settings.normalization == "CTNormalization":
        intensity = IntensityNormalization("clip_zscore", clip=(properties["percentile_00_5"],
                                                                properties["percentile_99_5"]),
                                           mean=properties["mean"], std=properties["std"])
    else:
        intensity = IntensityNormalization("zscore" if settings.normalization == "ZScoreNormalization" else "none")
    provenance = {"method": "nnunet", "imported_from": [Path(p).name for p in paths], "trainer": trainer,
                  "trainer_known": known_trainer(trainer) if trainer else None,
                  "configuration": configuration, "plans": str(plans.get("plans_name", "")), **(source or {})}

    def card(card_id: str, **extra: Any) -> ModelCard:
        return ModelCard(
            id=card_id, architecture=architecture,
            kwargs={k: v for k, v in kwargs.items() if k != "num_classes"}, spatial_dims=dims, label_table=table,
            class_values=class_values, input_kind="3d" if dims == 3 else "2d",
            spacing_zyx=[float(s) for s in config["spacing"]], intensity=intensity,
            patch_size=[int(p) for p in config["patch_size"]],
            mirror_axes=[int(a) for a in mirror] if mirror is not None else [], nnunet=settings.to_dict(),
            reorient=False, postprocessing=[],
            provenance=provenance, **extra)

    name = f"{plans.get('dataset_name', 'nnU-Net')} {configuration}"
    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        if len(networks) == 1:
            save_model_folder(networks[0], card(model_id, name=name), staging)
        else:
            members = []
            for index, network in enumerate(networks):
                save_model_folder(network, card(f"{model_id}-fold{index}", name=f"{name} fold {index}"),
                                  staging / f"fold_{index}")
                members.append({"role": "ensemble", "path": f"fold_{index}"})
            save_model_folder(None, card(model_id, name=f"{name} ({len(networks)} folds)", members=members), staging)
    return Path(out_dir)


def _model_folders(names: list[str], checkpoint_name: str) -> dict[str, dict[str, Any]]:
    """The nnU-Net results folders in a zip listing: ``<prefix>/<Trainer>__<Plans>__<configuration>/`` with
    ``plans.json``, ``dataset.json`` and ``fold_<N>/<checkpoint_name>`` (``fold_all`` included)."""
    members = set(names)
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        if not name.endswith("/plans.json") and name != "plans.json":
            continue
        folder = name[: -len("plans.json")]
        if folder + "dataset.json" not in members:
            continue
        pattern = re.compile(re.escape(folder) + r"fold_(all|\d+)/" + re.escape(checkpoint_name))
        folds = {m.group(1): m.group(0) for m in map(pattern.fullmatch, names) if m}
        if folds:
            found[folder] = {"folds": folds, "configuration": folder.rstrip("/").rsplit("/", 1)[-1].rsplit("__", 1)[-1]}
    return found


def import_nnunet_zip(zip_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                      configuration: str | None = None, folds: Sequence[str] | None = None,
                      checkpoint_name: str = "checkpoint_final.pth", model_id: str = "nnunet-imported",
                      overwrite: bool = False) -> Path:
    """Import a distributed nnU-Net model zip as it comes (dataset folder, ``Trainer__Plans__configuration``,
    ``fold_N`` or ``fold_all``, one or several folds; all folds unless ``folds`` names some).

    Only the plans, dataset.json and the chosen checkpoints are read out of the archive, into a temporary
    folder under names of ToothSeg's choosing (an archive's own paths never decide where a file goes).
    """
    zip_path = Path(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{zip_path}: not a readable zip file ({exc})") from exc
    with archive:
        found = _model_folders(archive.namelist(), checkpoint_name)
        if configuration is not None:
            found = {k: v for k, v in found.items() if v["configuration"] == configuration}
        if not found:
            raise InputError(f"{zip_path}: no nnU-Net model folder (plans.json, dataset.json, fold_*/"
                             f"{checkpoint_name}){f' for configuration {configuration!r}' if configuration else ''}")
        if len(found) > 1:
            choices = ", ".join(sorted(f"{v['configuration']} ({k.rstrip('/')})" for k, v in found.items()))
            raise InputError(f"{zip_path} holds several models ({choices}); choose one with --configuration")
        folder, entry = next(iter(found.items()))
        chosen = sorted(entry["folds"], key=lambda f: (f == "all", int(f) if f.isdigit() else 0))
        if folds:
            missing = [f for f in folds if str(f) not in entry["folds"]]
            if missing:
                raise InputError(f"{zip_path}: no fold(s) {', '.join(map(str, missing))} in {folder.rstrip('/')} "
                                 f"(it has {', '.join(chosen)})")
            chosen = [str(f) for f in folds]
        Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=Path(out_dir).parent, prefix=".nnunet-zip-") as tmp:
            work = Path(tmp)
            targets = {"plans.json": folder + "plans.json", "dataset.json": folder + "dataset.json"}
            targets.update({f"fold_{f}.pth": entry["folds"][f] for f in chosen})
            for local, member in targets.items():
                with archive.open(member) as source, open(work / local, "wb") as target:
                    shutil.copyfileobj(source, target, length=1 << 20)
            return import_nnunet_checkpoint([work / f"fold_{f}.pth" for f in chosen], work / "plans.json",
                                            work / "dataset.json", out_dir, configuration=entry["configuration"],
                                            model_id=model_id, overwrite=overwrite,
                                            source={"imported_from": [entry["folds"][f] for f in chosen],
                                                    "archive": zip_path.name})

