"""RAIL's students: the V-Net (type A) and the ResNet-34-encoder V-Net (type B), 3D.

Module names follow the public RAIL/SSL4MIS code (``block_one``, ``block_one_dw`` …,
``resencoder.layer1.0.conv1``), so that its checkpoints load with a near-identity key mapping.

V-Net (``n_filters`` = 16): five encoder levels 16/32/64/128/256 channels with 1/2/3/3/3 conv
blocks (3³ conv → BatchNorm → ReLU) and 2³ strided-conv down-sampling; the decoder up-samples with
2³ transposed convs and **adds** the skip (no concatenation); Kaiming-normal initialisation (the
edge-guided variant keeps PyTorch's default, as its code does); optional
channel dropout 0.5 on the bottleneck and before the output convolution. The edge-guided variant
(seed 003) adds Sobel edge features and an :class:`EdgeGuidedAttention` after each up-sampling,
with channel dropout 0.4 on the fourth encoder level as in that code.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import SegmentationNetwork, conv_nd, conv_transpose_nd, dropout_nd, norm_nd
from .edge import EdgeGuidedAttention, check_edge_options, sobel_magnitude
from .registry import register_architecture

__all__ = ["VNet", "ResVNet"]


class ConvBlock(nn.Module):
    """``n_stages`` x (3³ conv → norm → ReLU); the layers live in ``.conv`` as in RAIL's code."""

    def __init__(self, n_stages: int, in_channels: int, out_channels: int, norm: str, dims: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_stages):
            layers += [conv_nd(dims)(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                       norm_nd(norm, dims, out_channels), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Resample(nn.Module):
    """Strided 2³ conv (down) or transposed conv (up) → norm → ReLU, in ``.conv``."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, dims: int, up: bool) -> None:
        super().__init__()
        op = conv_transpose_nd(dims) if up else conv_nd(dims)
        self.conv = nn.Sequential(op(in_channels, out_channels, 2, stride=2), norm_nd(norm, dims, out_channels),
                                  nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _VNetDecoder(SegmentationNetwork):
    """The V-Net decoder shared by both students (attributes at top level, as in RAIL's code)."""

    def _build_decoder(self, n_filters: int, num_classes: int, norm: str, dims: int) -> None:
        f = n_filters
        self.block_five_up = Resample(16 * f, 8 * f, norm, dims, up=True)
        self.block_six = ConvBlock(3, 8 * f, 8 * f, norm, dims)
        self.block_six_up = Resample(8 * f, 4 * f, norm, dims, up=True)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f, norm, dims)
        self.block_seven_up = Resample(4 * f, 2 * f, norm, dims, up=True)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f, norm, dims)
        self.block_eight_up = Resample(2 * f, f, norm, dims, up=True)
        self.block_nine = ConvBlock(1, f, f, norm, dims)
        self.out_conv = conv_nd(dims)(f, num_classes, 1)

    def _decode(self, features: list[torch.Tensor], edge: torch.Tensor | None = None,
                attention: nn.ModuleList | None = None, dropout: nn.Module | None = None) -> torch.Tensor:
        x1, x2, x3, x4, x5 = features
        ups = (self.block_five_up, self.block_six_up, self.block_seven_up, self.block_eight_up)
        convs = (self.block_six, self.block_seven, self.block_eight, self.block_nine)
        x = x5
        for level, (up, conv, skip) in enumerate(zip(ups, convs, (x4, x3, x2, x1))):
            x = up(x) + skip
            if attention is not None:
                x = attention[level](x, edge)
            x = conv(x)
        if dropout is not None:
            x = dropout(x)
        return self.out_conv(x)

    def segmentation_head(self) -> nn.Module:
        return self.out_conv


@register_architecture("vnet", dims=(3,),
                       summary="RAIL's V-Net student (additive skips, optional dropout, edge guidance)")
class VNet(_VNetDecoder):
    """V-Net of RAIL/SSL4MIS.

    Args:
        in_channels, num_classes: input channels and output classes (RAIL: 1 and 2).
        n_filters: channels at full resolution (16).
        has_dropout: channel dropout 0.5 on the bottleneck and before the output conv (RAIL's students).
        edge_guided: add the seed-003 edge-guided attention to every decoder level.
        edge_cbam: how each edge-guided module ends (:data:`~.edge.CBAM_MODES`; ``gate``: the seed's).
        normalization: ``batch`` (paper) or ``instance``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, n_filters: int = 16, has_dropout: bool = False,
                 edge_guided: bool = False, normalization: str = "batch", spatial_dims: int = 3,
                 edge_cbam: str = "gate") -> None:
        super().__init__()
        dims = spatial_dims
        check_edge_options(edge_guided, edge_cbam)
        self.spatial_dims, self.in_channels, self.num_classes = dims, in_channels, num_classes
        self.size_divisor = (16,) * dims
        self.has_dropout, self.edge_guided = has_dropout, edge_guided
        f, norm = n_filters, normalization
        self.block_one = ConvBlock(1, in_channels, f, norm, dims)
        self.block_one_dw = Resample(f, 2 * f, norm, dims, up=False)
        self.block_two = ConvBlock(2, 2 * f, 2 * f, norm, dims)
        self.block_two_dw = Resample(2 * f, 4 * f, norm, dims, up=False)
        self.block_three = ConvBlock(3, 4 * f, 4 * f, norm, dims)
        self.block_three_dw = Resample(4 * f, 8 * f, norm, dims, up=False)
        self.block_four = ConvBlock(3, 8 * f, 8 * f, norm, dims)
        self.block_four_dw = Resample(8 * f, 16 * f, norm, dims, up=False)
        self.block_five = ConvBlock(3, 16 * f, 16 * f, norm, dims)
        self._build_decoder(f, num_classes, norm, dims)
        self.dropout = dropout_nd(dims)(0.5)
        self.encoder_prefixes = tuple(f"block_{n}." for n in ("one", "two", "three", "four", "five")) + \
            tuple(f"block_{n}_dw." for n in ("one", "two", "three", "four"))
        if edge_guided:
            self.dropout_four = dropout_nd(dims)(0.4)
            self.edge_conv = conv_nd(dims)(1, 8 * f, 1)
            self.edge_attention = nn.ModuleList(
                EdgeGuidedAttention(c, dims, edge_channels=8 * f, dropout=0.4, norm=norm, cbam=edge_cbam)
                for c in (8 * f, 4 * f, 2 * f, f))
        else:
            # Kaiming for RAIL's V-Net only: the edge-guided V-Net's public code keeps PyTorch's
            # default initialisation, and with Kaiming's it does not learn (its CBAM-gated decoder
            # still predicts background only after 160 steps on one batch; bench_edge_guided_fit.py).
            self.kaiming_init()

    def kaiming_init(self) -> None:
        """RAIL's initialisation: Kaiming-normal conv weights, BatchNorm weight 1 and bias 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, (nn.BatchNorm3d, nn.BatchNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        if self.edge_guided and self.has_dropout:
            x4 = self.dropout_four(x4)
        x5 = self.block_five(self.block_four_dw(x4))
        if self.has_dropout:
            x5 = self.dropout(x5)
        return [x1, x2, x3, x4, x5]

    def decode(self, features: list[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        edge = None
        if self.edge_guided:
            if image is None:
                raise ValueError("the edge-guided V-Net needs the input image to decode")
            edge = self.edge_conv(sobel_magnitude(image))
        return self._decode(features, edge, self.edge_attention if self.edge_guided else None,
                            self.dropout if self.has_dropout else None)


class BasicBlock3d(nn.Module):
    """ResNet basic block: conv3(stride)–norm–ReLU–conv3–norm + shortcut, ReLU (no conv bias)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dims: int, norm: str) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_nd(norm, dims, out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = norm_nd(norm, dims, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(conv(in_channels, out_channels, 1, stride=stride, bias=False),
                                            norm_nd(norm, dims, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNetEncoder(nn.Module):
    """3D ResNet-34 of RAIL (BasicBlocks 3/4/6/3, base width 16, stride-1 7³ stem, InstanceNorm without
    affine parameters); returns the stem output and the four layer outputs (1, 1/2 … 1/16)."""

    def __init__(self, in_channels: int = 1, width: int = 16, blocks: tuple[int, ...] = (3, 4, 6, 3),
                 dims: int = 3, norm: str = "instance_plain") -> None:
        super().__init__()
        self.conv1 = conv_nd(dims)(in_channels, width, 7, stride=1, padding=3, bias=False)
        self.bn1 = norm_nd(norm, dims, width)
        self.relu = nn.ReLU(inplace=True)
        channels = width
        for index, n_blocks in enumerate(blocks, start=1):
            out = width * 2**index
            layer = nn.Sequential(*[BasicBlock3d(channels if b == 0 else out, out, 2 if b == 0 else 1, dims, norm)
                                    for b in range(n_blocks)])
            setattr(self, f"layer{index}", layer)
            channels = out
        self.n_layers = len(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x]
        for index in range(1, self.n_layers + 1):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


@register_architecture("resvnet", dims=(3,), summary="RAIL's ResNet-34-encoder V-Net student")
class ResVNet(_VNetDecoder):
    """RAIL's type-B student: ResNet-34 encoder (InstanceNorm) + V-Net decoder (BatchNorm).

    As in RAIL's forward pass, no dropout is applied; PyTorch's default initialisation is kept.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, n_filters: int = 16,
                 normalization: str = "batch", spatial_dims: int = 3) -> None:
        super().__init__()
        dims = spatial_dims
        self.spatial_dims, self.in_channels, self.num_classes = dims, in_channels, num_classes
        self.size_divisor = (16,) * dims
        self.resencoder = ResNetEncoder(in_channels, n_filters, dims=dims)
        self._build_decoder(n_filters, num_classes, normalization, dims)
        self.encoder_prefixes = ("resencoder.",)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.resencoder(x)

    def decode(self, features: list[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        return self._decode(features)
