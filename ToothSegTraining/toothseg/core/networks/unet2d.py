"""2D U-Nets for panoramic X-rays (seed 001, DL4CR): plain, with spatial–channel attention gates
(scAG) and with a neighbour-aware context block (NAC); any of them optionally edge-guided (seed 003).

U-Net (base 32, bilinear): DoubleConv = 2 x (3x3 conv without bias → BatchNorm → ReLU); encoder
32/64/128/256/256 with 2x2 max-pooling; decoder: bilinear x2 up-sampling, pad to the skip, concat
``[skip, up]``, DoubleConv with ``in/2`` middle channels; 1x1 output conv.

scAG refines each encoder skip ``F_e`` with the decoder feature ``F_d`` below it:
``S = F_e + BN(conv1x1(F_d))`` (resized), channel gate ``σ(conv(ReLU(conv(GAP(S)))))`` (reduction 16,
no bias), spatial gate ``σ(conv7x7([mean_c S, max_c S]))``, output ``F_e · Mc · Ms``.
NAC on the bottleneck: four 3x3 branches with dilation 1, 2, 3, 5, mixed by softmax weights from
``conv1x1(ReLU(conv1x1(GAP(x), C→C/4)), C/4→4)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SegmentationNetwork
from .edge import EdgeGuidedAttention, check_edge_options, sobel_magnitude
from .registry import register_architecture

__all__ = ["UNet2D", "UNet2DScAG", "UNet2DNAC"]


class DoubleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        super().__init__()
        mid = mid_channels or out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear x2, pad to the skip, concat [skip, up], DoubleConv(in → out, mid = in/2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class SpatialChannelGate(nn.Module):
    """scAG: refine an encoder skip with the decoder feature below it."""

    def __init__(self, skip_channels: int, gate_channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, skip_channels // reduction)
        self.gate = nn.Sequential(nn.Conv2d(gate_channels, skip_channels, 1), nn.BatchNorm2d(skip_channels))
        self.channel = nn.Sequential(nn.Conv2d(skip_channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, skip_channels, 1, bias=False))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        g = F.interpolate(self.gate(gate), size=skip.shape[2:], mode="bilinear", align_corners=True)
        s = skip + g
        channel = torch.sigmoid(self.channel(s.mean(dim=(2, 3), keepdim=True)))
        spatial = torch.sigmoid(self.spatial(torch.cat([s.mean(1, keepdim=True), s.amax(1, keepdim=True)], 1)))
        return skip * channel * spatial


class NeighbourAwareContext(nn.Module):
    """NAC: softmax-weighted sum of four dilated 3x3 branches (dilation 1, 2, 3, 5)."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 3, 5)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in dilations)
        hidden = max(1, channels // 4)
        self.weights = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, len(dilations), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.weights(x.mean(dim=(2, 3), keepdim=True)), dim=1)  # (B, 4, 1, 1)
        return sum(w[:, k:k + 1] * branch(x) for k, branch in enumerate(self.branches))


@register_architecture("unet2d", dims=(2,), summary="2D U-Net for panoramic X-rays (DL4CR), optional edge guidance")
class UNet2D(SegmentationNetwork):
    """2D U-Net; ``attention_gates`` adds scAG, ``context_block`` adds NAC, ``edge_guided`` seed-003 EGA."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_channels: int = 32,
                 attention_gates: bool = False, context_block: bool = False, edge_guided: bool = False,
                 edge_cbam: str = "gate", spatial_dims: int = 2) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError("the panoramic U-Nets are 2D")
        check_edge_options(edge_guided, edge_cbam)
        b = base_channels
        self.spatial_dims, self.in_channels, self.num_classes = 2, in_channels, num_classes
        self.size_divisor = (16, 16)
        self.inc = DoubleConv(in_channels, b)
        self.down1, self.down2, self.down3 = Down(b, 2 * b), Down(2 * b, 4 * b), Down(4 * b, 8 * b)
        self.down4 = Down(8 * b, 8 * b)  # 16b // 2 (bilinear)
        self.up1, self.up2 = Up(16 * b, 4 * b), Up(8 * b, 2 * b)
        self.up3, self.up4 = Up(4 * b, b), Up(2 * b, b)
        self.outc = nn.Conv2d(b, num_classes, 1)
        self.encoder_prefixes = ("inc.", "down1.", "down2.", "down3.", "down4.")
        self.gates = None
        if attention_gates:  # skip channels x4 … x1, gated by x5, up1, up2, up3
            self.gates = nn.ModuleList([SpatialChannelGate(8 * b, 8 * b), SpatialChannelGate(4 * b, 4 * b),
                                        SpatialChannelGate(2 * b, 2 * b), SpatialChannelGate(b, b)])
        self.context = NeighbourAwareContext(8 * b) if context_block else None
        self.edge_attention = None
        if edge_guided:
            self.edge_attention = nn.ModuleList(EdgeGuidedAttention(c, 2, cbam=edge_cbam) for c in (4 * b, 2 * b, b, b))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        return [x1, x2, x3, x4, self.down4(x4)]

    def decode(self, features: list[torch.Tensor], image: torch.Tensor | None = None) -> torch.Tensor:
        x1, x2, x3, x4, x = features
        if self.context is not None:
            x = self.context(x)
        edge = None
        if self.edge_attention is not None:
            if image is None:
                raise ValueError("the edge-guided U-Net needs the input image to decode")
            edge = sobel_magnitude(image)
        for level, (up, skip) in enumerate(zip((self.up1, self.up2, self.up3, self.up4), (x4, x3, x2, x1))):
            if self.gates is not None:
                skip = self.gates[level](skip, x)
            x = up(x, skip)
            if self.edge_attention is not None:
                x = self.edge_attention[level](x, edge)
        return self.outc(x)

    def segmentation_head(self) -> nn.Module:
        return self.outc


@register_architecture("unet2d_scag", dims=(2,), summary="2D U-Net with spatial-channel attention gates")
def UNet2DScAG(**kwargs) -> UNet2D:
    """2D U-Net with scAG skip gates."""
    return UNet2D(attention_gates=True, **kwargs)


@register_architecture("unet2d_nac", dims=(2,), summary="2D U-Net with scAG and neighbour-aware context")
def UNet2DNAC(**kwargs) -> UNet2D:
    """2D U-Net with scAG gates and the NAC bottleneck block."""
    return UNet2D(attention_gates=True, context_block=True, **kwargs)
