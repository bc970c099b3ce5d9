"""nnU-Net's default network, the plain convolutional U-Net (``PlainConvUNet``), 2D or 3D.

It is what nnU-Net's default planner gives (DentalSegmentator, TotalSegmentator and most published
nnU-Net models): each encoder stage is ``n_conv_per_stage`` conv–norm–LeakyReLU, the first one
strided; the decoder is the residual-encoder U-Net's. Module names follow ``dynamic_network_architectures``
(``encoder.stages.0.0.convs.1.conv``), so nnU-Net checkpoints load as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .registry import register_architecture
from .resenc_unet import ResEncUNet, StackedConvs

__all__ = ["PlainConvUNet"]


class PlainConvEncoder(nn.Module):
    """Stages of stacked convolutions (no stem, no residuals), each wrapped as nnU-Net wraps it."""

    def __init__(self, dims: int, in_channels: int, features: list[int], kernels, strides, convs: list[int],
                 bias: bool, norm: str) -> None:
        super().__init__()
        stages = []
        channels = in_channels
        for s, n_convs in enumerate(convs):
            stages.append(nn.Sequential(StackedConvs(n_convs, dims, channels, features[s], kernels[s], strides[s],
                                                     bias, norm)))
            channels = features[s]
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


@register_architecture("plain_conv_unet", dims=(2, 3), summary="nnU-Net default plain convolutional U-Net")
class PlainConvUNet(ResEncUNet):
    """nnU-Net's ``PlainConvUNet``: as :class:`ResEncUNet` with ``n_conv_per_stage`` plain convolutions
    per encoder stage in place of residual blocks."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 3,
                 features_per_stage: Sequence[int] = (32, 64, 128, 256, 320),
                 strides: Sequence = (1, 2, 2, 2, 2), n_conv_per_stage: Sequence[int] = (2, 2, 2, 2, 2),
                 n_conv_per_stage_decoder: Sequence[int] | None = None, kernel_sizes=3,
                 deep_supervision: bool = False, conv_bias: bool = True, normalization: str = "instance") -> None:
        super().__init__(in_channels, num_classes, spatial_dims, features_per_stage, strides, n_conv_per_stage,
                         n_conv_per_stage_decoder, kernel_sizes, deep_supervision, conv_bias, normalization)

    @staticmethod
    def _build_encoder(dims: int, in_channels: int, features: list[int], kernels, strides, blocks: list[int],
                       bias: bool, norm: str) -> nn.Module:
        return PlainConvEncoder(dims, in_channels, features, kernels, strides, blocks, bias, norm)
