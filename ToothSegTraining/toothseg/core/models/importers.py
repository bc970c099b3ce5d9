"""Turn checkpoints of the original authors' code into ToothSeg model folders.

* RAIL: the four students (two V-Nets, two ResVNets) become one *ensemble* folder; at inference
  their softmax outputs are averaged, as RAIL's test script does (without its accumulation bug R4).
* nnU-Net / U-Mamba2: ``checkpoint_final.pth`` (one per fold) + ``plans.json`` + ``dataset.json`` become
  one folder (folds: an ensemble) with the plan's spacing, patch size, normalisation, label names and
  the rest of the plan that nnU-Net's inference arithmetic needs (see :mod:`.nnunet_settings`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.atomic import atomic_folder
from ..labels import LabelTable, is_fdi_tooth
from .card import IntensityNormalization, ModelCard, check_model_id
from .checkpoints import (
    check_state_dict_fits,
    map_nnunet_state_dict,
    map_rail_state_dict,
    nnunet_architecture_kwargs,
    read_json,
    read_state_dict,
    resolve_nnunet_configuration,
    safe_torch_load,
    unwrap_state_dict,
)
from .folder import save_model_folder
from .nnunet_settings import nnunet_settings_from_plans
from ..networks.build import build_network

__all__ = ["import_rail_students", "import_nnunet_checkpoint", "rail_card"]

RAIL_TABLE = LabelTable.custom({1: "tooth"}, name="binary-tooth")


def rail_card(model_id: str, architecture: str, **extra: Any) -> ModelCard:
    """Card of one RAIL student, run as RAIL's ``test_util`` runs it: binary tooth mask, clip [500, 2500]
    → [0, 1], no resampling, the array as stored (nibabel's x, y, z is SimpleITK's z, y, x reversed),
    patch 112 x 112 x 80 at strides 64/64/32 with every window weighted 1, no mirroring, no post-processing."""
    return ModelCard(
        id=model_id, architecture=architecture, kwargs={"in_channels": 1}, spatial_dims=3, label_table=RAIL_TABLE,
        class_values=[0, 1], input_kind="3d", spacing_zyx=None,
        intensity=IntensityNormalization("clip_scale", clip=(500.0, 2500.0)),
        patch_size=[80, 112, 112], mirror_axes=[], reorient=False, postprocessing=[],
        sliding_window={"strides": [32, 64, 64], "importance": "uniform"}, license="see the RAIL repository",
        **extra)


def import_rail_students(vnets: list[str | os.PathLike[str]], resvnets: list[str | os.PathLike[str]],
                         out_dir: str | os.PathLike[str], model_id: str = "rail-imported",
                         overwrite: bool = False) -> Path:
    """Convert RAIL's student checkpoints into an ensemble model folder.

    Args:
        vnets: the type-A (V-Net) student checkpoints, usually two.
        resvnets: the type-B (ResNet-34 encoder V-Net) student checkpoints, usually two.
    """
    if not vnets and not resvnets:
        raise InputError("give at least one RAIL student checkpoint")
    check_model_id(model_id, "--id")
    out_dir = Path(out_dir)
    members = []
    provenance = {"method": "rail", "imported_from": "Tournesol-Saturday/RAIL checkpoints"}
    # Built beside out_dir and renamed into place: a student that does not fit leaves nothing behind
    # (nor a half ensemble that makes the corrected command fail with "already holds a model").
    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        for kind, paths in (("vnet", vnets), ("resvnet", resvnets)):
            for index, path in enumerate(paths):
                state = map_rail_state_dict(read_state_dict(path), kind)
                kwargs: dict[str, Any] = {"has_dropout": True} if kind == "vnet" else {}
                first = state.get("block_one.conv.0.weight")
                if kind == "vnet" and first is not None and first.shape[0] != 16:
                    kwargs["n_filters"] = int(first.shape[0])  # a narrower V-Net than the paper's 16
                network = build_network(kind, in_channels=1, num_classes=2, **kwargs)
                check_state_dict_fits(network, state, kind)
                network.load_state_dict(state)
                name = f"{kind}_{index}"
                card = rail_card(f"{model_id}-{name}", kind, provenance={**provenance, "file": Path(path).name})
                card.kwargs.update(kwargs)
                save_model_folder(network, card, staging / name)
                members.append({"role": "ensemble", "path": name})
        top = rail_card(model_id, "vnet", name="RAIL (imported)", members=members, provenance=provenance,
                        description="RAIL dual-group dual-student ensemble: mean softmax of the students")
        save_model_folder(None, top, staging)
    return out_dir


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
    table = LabelTable.custom(names, name=str(dataset.get("name", "nnunet")))
    return table, sorted(by_value)


def import_nnunet_checkpoint(checkpoint: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                             plans_path: str | os.PathLike[str], dataset_path: str | os.PathLike[str],
                             out_dir: str | os.PathLike[str], configuration: str = "3d_fullres",
                             model_id: str = "nnunet-imported", overwrite: bool = False) -> Path:
    """Convert nnU-Net v2 (plain, ResEnc or U-Mamba2) checkpoints into a model folder.

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
    provenance = {"method": "nnunet", "imported_from": [Path(p).name for p in paths],
                  "trainer": first.get("trainer_name", "") if isinstance(first, dict) else "",
                  "configuration": configuration, "plans": str(plans.get("plans_name", ""))}

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
