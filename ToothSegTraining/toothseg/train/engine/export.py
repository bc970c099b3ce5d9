"""A trained stage as a model folder: its card (what it was trained on, how to run it, where it came
from) and its weights, one network or an ensemble of members, written whole or not at all."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ...core.io.atomic import atomic_folder
from ...core.labels import LabelTable, label_table_named
from ...core.models.card import IntensityNormalization, ModelCard
from ...core.models.folder import LoadedModel, save_model_folder
from ..config.mapping import exported_label_table
from ..config.schema import Recipe, StageConfig
from ..data.cases import Case
from ..data.dataset import TrainingData, patient_of
from ..methods.base import Method, unwrap

__all__ = ["Member", "stage_card", "exported_members", "loaded_model", "export_model_folder", "git_commit"]

Member = tuple[str, ModelCard, nn.Module]
"""(network name in the method, its card, the network)."""


def stage_card(recipe: Recipe, stage: StageConfig, data: TrainingData, table: LabelTable, class_values: list[int],
               metrics: dict[str, Any] | None = None) -> ModelCard:
    """The model card of a stage's exported network (metrics: the validation it reached)."""
    export = recipe.export
    config = data.config
    dims = 2 if config.kind == "2d" else 3
    kwargs = {k: v for k, v in recipe.model.kwargs.items() if k not in ("num_classes",)}
    kwargs["spatial_dims"] = dims
    # the export's post-processing and result labels belong to the exported (last) stage's classes: a stage
    # that trains other ones (a cascade's binary coarse stage, a binary locator that a tooth-jaw stage starts
    # from) keeps ToothSeg's defaults. Compared with the recipe's top-level table instead, a last stage that
    # overrides it (jaw3d_from_binary_lopo.yaml) lost its teeth_from_jaws and FDI result.
    own_classes = config.label_table == exported_label_table(recipe)
    output_table = label_table_named(export.output_label_table) if own_classes and export.output_label_table else None
    return ModelCard(
        id=export.id or recipe.name, name=export.name or recipe.name, description=export.description,
        architecture=recipe.model.architecture, kwargs=kwargs, spatial_dims=dims,
        label_table=table.subset(class_values[1:]), class_values=class_values,
        input_kind=config.kind, spacing_zyx=config.spacing, image_extent_yx=config.image_extent,
        intensity=IntensityNormalization(**config.intensity), patch_size=list(config.patch_size),
        mirror_axes=list(export.mirror_axes), license=export.license,
        postprocessing=list(export.postprocessing) if own_classes and export.postprocessing is not None else None,
        output_label_table=output_table,
        provenance={"recipe": recipe.name, "method": stage.method, "stage": stage.name,
                    "iterations": stage.iterations, "data_source": config.source,
                    "labeled_cases": len(data.labeled), "unlabeled_cases": len(data.unlabeled),
                    "seed": recipe.seed, "commit": git_commit(), "trained": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "synthetic_intensities": config.source == "synthetic",
                    **_training_anatomy(config.source, data.labeled)},
        metrics=metrics or {})


def exported_members(method: Method, make_card: Callable[[], ModelCard]) -> list[Member]:
    """Each exported network with its own card: one, or the method's ensemble (members named ``<id>-<net>``,
    with their own architecture where the method says so, as RAIL's V-Net and ResVNet students)."""
    names = method.exported_members()
    members = []
    for name in names:
        member_card = make_card()
        override = method.member_architecture(name)
        if override is not None:
            member_card.architecture = override[0]
            member_card.kwargs = {**override[1], "spatial_dims": member_card.spatial_dims}
        if len(names) > 1:
            member_card.id = f"{member_card.id}-{name}"
        members.append((name, member_card, unwrap(method.nets[name])))
    return members


def loaded_model(members: list[Member], top_card: ModelCard, folder: Path) -> LoadedModel:
    """The members as the model the core's Predictor runs (validation uses the one inference path)."""
    if len(members) == 1:
        return LoadedModel(members[0][1], folder, network=members[0][2])
    top = LoadedModel(top_card, folder)
    top.members = [("ensemble", LoadedModel(card, folder, network=net)) for _, card, net in members]
    return top


def export_model_folder(folder: Path, members: list[Member], top_card: ModelCard) -> Path:
    """Write the model folder whole or not at all: ``best/`` is replaced during training, and a run
    killed half-way through that must not leave weights that no longer match their card."""
    with atomic_folder(folder, overwrite=True) as staging:
        if len(members) == 1:
            save_model_folder(members[0][2], members[0][1], staging)
            return folder
        for name, card, network in members:
            save_model_folder(network, card, staging / name)
        top_card.members = [{"role": "ensemble", "path": name} for name, _, _ in members]
        top_card.description = (top_card.description + " " if top_card.description else "") + \
            f"Ensemble of {len(members)} students (mean softmax)."
        save_model_folder(None, top_card, staging)
    return folder


def _training_anatomy(source: str, labeled: list[Case]) -> dict[str, list[str]]:
    """For a synthetic source, the real label maps its scans were painted on, one name per patient
    (``Validation_0002``'s ground truth and the participant's prediction are one): whoever scores the
    model on a scan of that anatomy (the demo's sample) can then say the figure is not a held-out one."""
    if source != "synthetic":
        return {}
    return {"training_anatomy": sorted({patient_of(case) for case in labeled if case.label is not None})}


def git_commit() -> str:
    """The source's commit (short hash) for the card's provenance; empty outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
