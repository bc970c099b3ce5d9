"""U-Mamba2 (STSR-2025 winner): nnU-Net's ResEnc U-Net with one Mamba2 layer at the bottleneck.

The deepest feature map is flattened to tokens in C order over (z, y, x), layer-normalised, passed
through :class:`~toothseg.core.networks.mamba2.Mamba2` (d_state 32, expand 2, headdim 80) and reshaped
back; the result *replaces* the bottleneck features (no residual, no positional encoding), as in
the paper's code. The Mamba layer runs in :meth:`bottleneck`, i.e. after any feature perturbation
applied to the encoder output (U-Mamba2-SSL's consistency stage).
"""

from __future__ import annotations

import torch
from torch import nn

from .mamba2 import Mamba2
from .registry import register_architecture
from .resenc_unet import ResEncUNet, resenc_config

__all__ = ["UMamba2", "MambaLayer"]


class MambaLayer(nn.Module):
    """LayerNorm + Mamba2 over the flattened spatial positions of a (B, C, *spatial) map."""

    def __init__(self, dim: int, d_state: int = 32, d_conv: int = 4, expand: int = 2, headdim: int = 80) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba2(dim, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        spatial = x.shape[2:]
        tokens = x.reshape(batch, channels, -1).transpose(1, 2)
        tokens = self.mamba(self.norm(tokens))
        return tokens.transpose(1, 2).reshape(batch, channels, *spatial)


@register_architecture("umamba2", dims=(2, 3), summary="ResEnc U-Net with a Mamba2 bottleneck (U-Mamba2-SSL)")
class UMamba2(ResEncUNet):
    """U-Mamba2. Without explicit stage settings it uses the paper's 7-stage STSR-2025 plan.

    Args:
        d_state, expand, headdim: Mamba2 settings (32, 2, 80 in the paper).
        other arguments: as :class:`ResEncUNet`.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 3, d_state: int = 32,
                 expand: int = 2, headdim: int = 80, **kwargs) -> None:
        if "features_per_stage" not in kwargs:
            preset = resenc_config("umamba2_sts")
            preset.pop("spatial_dims")
            kwargs = {**preset, **kwargs}
        super().__init__(in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims, **kwargs)
        self.mamba_layer = MambaLayer(self.features_per_stage[-1], d_state=d_state, expand=expand, headdim=headdim)

    def bottleneck(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        features[-1] = self.mamba_layer(features[-1])
        return features
