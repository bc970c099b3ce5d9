"""Turn checkpoints of the original authors' code into ToothSeg model folders.

* RAIL: the four students (two V-Nets, two ResVNets) become one *ensemble* folder; at inference
  their softmax outputs are averaged, as RAIL's test script does (without its accumulation bug R4).
* nnU-Net / U-Mamba2: see :mod:`.nnunet_import` (re-exported here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.atomic import atomic_folder
from ..labels import LabelTable
from .card import IntensityNormalization, ModelCard, check_model_id
from .checkpoints import check_state_dict_fits, map_rail_state_dict, read_state_dict
from .folder import save_model_folder
from .nnunet_import import import_nnunet_checkpoint, import_nnunet_zip
from ..networks.build import build_network

__all__ = ["import_rail_students", "import_nnunet_checkpoint", "import_nnunet_zip", "rail_card"]

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
