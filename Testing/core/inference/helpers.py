"""Small stand-in networks with known behaviour, wrapped as loaded models (no weights files)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from toothseg.core import LabelTable
from toothseg.core.models.card import IntensityNormalization, ModelCard
from toothseg.core.models.folder import LoadedModel


class IntensityToClass(nn.Module):
    """'Segments' by intensity: input value v (after normalisation 'none') votes for channel round(v)."""

    def __init__(self, num_classes: int, dims: int = 3) -> None:
        super().__init__()
        self.num_classes, self.dims = num_classes, dims
        self.sharpness = nn.Parameter(torch.tensor(8.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = torch.arange(self.num_classes, dtype=x.dtype, device=x.device)
        shape = (1, -1) + (1,) * self.dims
        return -self.sharpness * (x - channels.view(shape)) ** 2


class HalfImage(nn.Module):
    """Labels the half of its input with small x as channel 1 and the rest as channel 2 (any content)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        left = (torch.arange(width, device=x.device) < width / 2).to(x.dtype)
        logits = torch.zeros((x.shape[0], 3, *x.shape[2:]), dtype=x.dtype, device=x.device)
        logits[:, 1] = 10.0 * left
        logits[:, 2] = 10.0 * (1 - left)
        return logits + self.dummy


def loaded(network: nn.Module, class_values: list[int], table: LabelTable | None = None, dims: int = 3,
           spacing=None, patch=None, mirror_axes=(), model_id="fake", members=None) -> LoadedModel:
    table = table or LabelTable.fdi()
    card = ModelCard(id=model_id, architecture="vnet" if dims == 3 else "unet2d", kwargs={}, spatial_dims=dims,
                     label_table=table, class_values=class_values, input_kind="3d" if dims == 3 else "2d",
                     spacing_zyx=spacing, intensity=IntensityNormalization("none"),
                     patch_size=patch or [16] * dims, mirror_axes=list(mirror_axes),
                     members=[{"role": r, "path": r} for r, _ in (members or [])])
    model = LoadedModel(card, Path("."), network=network.eval() if network is not None else None)
    model.members = list(members or [])
    return model
