"""The tiny panoramic model the active-learning tests predict and fine-tune with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from toothseg.core.models.card import IntensityNormalization, ModelCard
from toothseg.core.models.folder import save_model_folder
from toothseg.core.networks import build_network

from .helpers import TABLE


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = build_network("unet2d", num_classes=3, base_channels=4)
    card = ModelCard(id="tiny-al", architecture="unet2d", kwargs={"base_channels": 4}, spatial_dims=2,
                     label_table=TABLE, class_values=[0, 11, 21], input_kind="2d", patch_size=[32, 32],
                     mirror_axes=[1], intensity=IntensityNormalization("percentile_zscore"))
    return save_model_folder(network, card, tmp_path_factory.mktemp("al-model") / "tiny-al")
