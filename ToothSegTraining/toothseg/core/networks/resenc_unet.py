"""nnU-Net's residual-encoder U-Net (ResEnc), 2D or 3D, as used by the coarse-to-fine pipeline
and as the body of U-Mamba2.

Encoder: a stem (one conv–norm–LeakyReLU) then one stage per resolution, each a stack of ResNet-D
basic blocks (the first block strides; its shortcut is average pooling + 1x1 conv + norm).
Decoder: per stage a transposed conv (kernel = stride) to the skip's channels, concatenation
with the skip, ``n_conv_per_stage_decoder`` conv–norm–LeakyReLU, and a 1x1 segmentation head;
with deep supervision every stage's head is returned (full resolution first).

Module names follow nnU-Net's ``dynamic_network_architectures`` (``encoder.stages.0.blocks.0.conv1.conv``),
so nnU-Net checkpoints load after dropping that library's duplicate ``all_modules`` and
``decoder.encoder`` keys (see :mod:`toothseg.core.models.checkpoints`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import SegmentationNetwork, avg_pool_nd, conv_nd, conv_transpose_nd, norm_nd
from .registry import register_architecture

__all__ = ["ResEncUNet", "ConvNormAct", "StackedConvs", "resenc_config"]


def _as_list(value, n: int, dims: int) -> list[list[int]]:
    """Per-stage kernel/stride lists from an int, a per-stage int list or per-stage tuples."""
    if isinstance(value, int):
        return [[value] * dims for _ in range(n)]
    out = []
    for item in value:
        out.append([int(item)] * dims if isinstance(item, int) else [int(v) for v in item])
    if len(out) != n:
        raise ValueError(f"expected {n} per-stage entries, got {len(out)}")
    return out


class ConvNormAct(nn.Module):
    """conv → (instance) norm → optional LeakyReLU, with nnU-Net's attribute names."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel: Sequence[int], stride: Sequence[int],
                 bias: bool, norm: str, activation: bool, dropout: float = 0.0) -> None:
        super().__init__()
        padding = [(k - 1) // 2 for k in kernel]
        self.conv = conv_nd(dims)(in_channels, out_channels, list(kernel), list(stride), padding, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.norm = norm_nd(norm, dims, out_channels)
        self.nonlin = nn.LeakyReLU(0.01, inplace=True) if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.dropout is not None:
            x = self.dropout(x)
        x = self.norm(x)
        return self.nonlin(x) if self.nonlin is not None else x


class StackedConvs(nn.Module):
    def __init__(self, n: int, dims: int, in_channels: int, out_channels: int, kernel, stride, bias: bool,
                 norm: str) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[
            ConvNormAct(dims, in_channels if i == 0 else out_channels, out_channels, kernel,
                        stride if i == 0 else [1] * dims, bias, norm, True) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class BasicBlockD(nn.Module):
    """ResNet-D basic block: conv(stride)–norm–act → conv–norm, + shortcut, act."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel, stride, bias: bool, norm: str) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(dims, in_channels, out_channels, kernel, stride, bias, norm, True)
        self.conv2 = ConvNormAct(dims, out_channels, out_channels, kernel, [1] * dims, bias, norm, False)
        self.nonlin2 = nn.LeakyReLU(0.01, inplace=True)
        strided = any(s != 1 for s in stride)
        if strided or in_channels != out_channels:
            ops: list[nn.Module] = []
            if strided:
                ops.append(avg_pool_nd(dims)(list(stride), list(stride)))
            if in_channels != out_channels:
                ops.append(ConvNormAct(dims, in_channels, out_channels, [1] * dims, [1] * dims, False, norm, False))
            self.skip = nn.Sequential(*ops)
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class StackedResidualBlocks(nn.Module):
    def __init__(self, n: int, dims: int, in_channels: int, out_channels: int, kernel, stride, bias: bool,
                 norm: str) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[
            BasicBlockD(dims, in_channels if i == 0 else out_channels, out_channels, kernel,
                        stride if i == 0 else [1] * dims, bias, norm) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ResidualEncoder(nn.Module):
    def __init__(self, dims: int, in_channels: int, features: list[int], kernels, strides, blocks: list[int],
                 bias: bool, norm: str) -> None:
        super().__init__()
        self.stem = StackedConvs(1, dims, in_channels, features[0], kernels[0], [1] * dims, bias, norm)
        stages = []
        channels = features[0]
        for s, n_blocks in enumerate(blocks):
            stages.append(StackedResidualBlocks(n_blocks, dims, channels, features[s], kernels[s], strides[s], bias,
                                                norm))
            channels = features[s]
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    def __init__(self, dims: int, features: list[int], kernels, strides, n_convs: list[int], num_classes: int,
                 bias: bool, norm: str) -> None:
        super().__init__()
        transposed = conv_transpose_nd(dims)
        n = len(features)
        self.transpconvs = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        for s in range(1, n):
            below, skip = features[-s], features[-(s + 1)]
            stride = strides[-s]
            self.transpconvs.append(transposed(below, skip, stride, stride, bias=bias))
            self.stages.append(StackedConvs(n_convs[s - 1], dims, 2 * skip, skip, kernels[-(s + 1)], [1] * dims,
                                            bias, norm))
            self.seg_layers.append(conv_nd(dims)(skip, num_classes, 1, 1, 0, bias=True))

    def forward(self, skips: list[torch.Tensor], deep_supervision: bool):
        x = skips[-1]
        outputs = []
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), dim=1))
            if deep_supervision or s == len(self.stages) - 1:
                outputs.append(self.seg_layers[s](x))
        outputs = outputs[::-1]
        return outputs if deep_supervision else outputs[0]


def resenc_config(preset: str, spatial_dims: int = 3) -> dict:
    """Named configurations from the papers (kwargs for :class:`ResEncUNet`).

    * ``umamba2_sts`` — U-Mamba2's STSR-2025 plan (7 stages, 32…320 features, blocks 1/3/4/6/6/6/6).
    * ``cfp_fine`` / ``cfp_coarse`` — nnU-Net ResEnc shapes for the coarse-to-fine pipeline.
    """
    if preset == "umamba2_sts":
        return {"features_per_stage": [32, 64, 128, 256, 320, 320, 320],
                "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                "n_blocks_per_stage": [1, 3, 4, 6, 6, 6, 6], "n_conv_per_stage_decoder": [1] * 6,
                "kernel_sizes": 3, "spatial_dims": 3}
    if preset == "cfp_fine":
        return {"features_per_stage": [32, 64, 128, 256, 320, 320],
                "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                "n_blocks_per_stage": [1, 3, 4, 6, 6, 6], "n_conv_per_stage_decoder": [1] * 5,
                "kernel_sizes": 3, "spatial_dims": 3}
    if preset == "cfp_coarse":
        return {"features_per_stage": [32, 64, 128, 256, 320],
                "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                "n_blocks_per_stage": [1, 3, 4, 6, 6], "n_conv_per_stage_decoder": [1] * 4,
                "kernel_sizes": 3, "spatial_dims": 3}
    raise ValueError(f"unknown preset {preset!r}")


@register_architecture("resenc_unet", dims=(2, 3), summary="nnU-Net residual-encoder U-Net (deep supervision)")
class ResEncUNet(SegmentationNetwork):
    """nnU-Net-style residual-encoder U-Net.

    Args:
        features_per_stage: channels per resolution stage, e.g. ``[32, 64, 128, 256, 320]``.
        strides: per-stage stride (int or per-axis list); the first is usually 1.
        n_blocks_per_stage: residual blocks per encoder stage.
        n_conv_per_stage_decoder: convolutions per decoder stage (len = stages - 1).
        kernel_sizes: int or per-stage kernel sizes.
        deep_supervision: return one output per decoder stage (training).
        conv_bias: as nnU-Net (True in U-Mamba2's plan).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, spatial_dims: int = 3,
                 features_per_stage: Sequence[int] = (32, 64, 128, 256, 320),
                 strides: Sequence = (1, 2, 2, 2, 2), n_blocks_per_stage: Sequence[int] = (1, 3, 4, 6, 6),
                 n_conv_per_stage_decoder: Sequence[int] | None = None, kernel_sizes=3,
                 deep_supervision: bool = False, conv_bias: bool = True, normalization: str = "instance") -> None:
        super().__init__()
        dims = spatial_dims
        n = len(features_per_stage)
        features = [int(f) for f in features_per_stage]
        kernels = _as_list(kernel_sizes, n, dims)
        stride_list = _as_list(list(strides), n, dims)
        blocks = [int(b) for b in n_blocks_per_stage]
        n_convs = [int(c) for c in (n_conv_per_stage_decoder or [1] * (n - 1))]
        if len(blocks) != n or len(n_convs) != n - 1:
            raise ValueError("n_blocks_per_stage needs one entry per stage, n_conv_per_stage_decoder one fewer")
        self.spatial_dims, self.in_channels, self.num_classes = dims, in_channels, num_classes
        self.deep_supervision = deep_supervision
        self.features_per_stage = features
        total = [1] * dims
        for stride in stride_list:
            total = [t * s for t, s in zip(total, stride)]
        self.size_divisor = tuple(total)
        self.encoder = self._build_encoder(dims, in_channels, features, kernels, stride_list, blocks, conv_bias,
                                           normalization)
        self.decoder = UNetDecoder(dims, features, kernels, stride_list, n_convs, num_classes, conv_bias,
                                   normalization)
        self.encoder_prefixes = ("encoder.",)

    @staticmethod
    def _build_encoder(dims: int, in_channels: int, features: list[int], kernels, strides, blocks: list[int],
                       bias: bool, norm: str) -> nn.Module:
        return ResidualEncoder(dims, in_channels, features, kernels, strides, blocks, bias, norm)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def bottleneck(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Hook between encoder and decoder (U-Mamba2 puts its Mamba layer here)."""
        return features

    def decode(self, features: list[torch.Tensor], image: torch.Tensor | None = None):
        return self.decoder(self.bottleneck(list(features)), self.deep_supervision)

    def segmentation_head(self) -> nn.Module:
        return self.decoder.seg_layers[-1]  # the full-resolution one
