"""Edge-guided attention (seed 003, Hsu & Hua's extension of BCP), for 2D and 3D decoders.

At one decoder level with features ``x`` (C channels) and an edge map of the input image:

1. three branches — reverse attention ``x·(1−σ(x))``, boundary attention ``x·Lap(σ(x))`` and
   high-frequency ``x·edge``;
2. concat → conv 3 → norm → ReLU (→ channel dropout in 3D) → F; spatial attention
   ``A = σ(norm(conv3(F → 1)))``; ``out = F·A + x``;
3. CBAM (channel then spatial gate), then dropout (3D).

``cbam="residual"`` (ours, not the seed's) replaces step 3's ``CBAM(y)`` by ``y + CBAM(y)``, and
``cbam="none"`` drops it. Why: on real panoramic X-rays the seed's gates nearly stop the 2D U-Net
from learning (one fixed batch, 150 SGD steps: mean tooth Dice 0.012, without the CBAMs 0.20, with
residual ones 0.28; ``Testing/benchmarks/bench_edge_guided_fit.py --dims 2``). The channel gates
cost most, at every decoder level; the same gates added residually learn, so it is the
multiplicative form that hurts (not a share of saturated gates: 3-14 % are shut in the networks
that fail, 53 % where only the output level is gated, 6 % in the residual one that learns; nor the
ReLU features: with LeakyReLU, as the public U-Net, the gated network fails alike; the exact
mechanism is not isolated).

``Lap(v) = v − up(down(G * mean_c(v)))`` is one level of a Laplacian pyramid. Unlike the public
3D code, which "up-samples" by concatenating zeros after the data (so the map lands in the first
half of each axis), zeros are *interleaved* here in every dimension, as the 2D code does; the
result is scaled by 2^dims and ``G`` is the 2D code's binomial kernel in 3D too (see
:func:`_gaussian_kernel`), so that a constant map is preserved.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .blocks import conv_nd, dropout_nd, norm_nd

__all__ = ["sobel_magnitude", "laplacian_level", "CBAM", "EdgeGuidedAttention", "CBAM_MODES", "check_edge_options"]

CBAM_MODES = ("gate", "residual", "none")
"""How an edge-guided module ends: the seed's CBAM gate, ``y + CBAM(y)``, or no CBAM."""


def _sobel_kernels(dims: int) -> torch.Tensor:
    """Sobel derivative kernels, one per axis: shape (dims, 1, 3, ..., 3)."""
    derivative = torch.tensor([-1.0, 0.0, 1.0])
    smooth = torch.tensor([1.0, 2.0, 1.0])
    kernels = []
    for axis in range(dims):
        kernel = torch.ones([1] * dims)
        for other in range(dims):
            vector = derivative if other == axis else smooth
            shape = [1] * dims
            shape[other] = 3
            kernel = kernel * vector.reshape(shape)
        kernels.append(kernel)
    return torch.stack(kernels)[:, None]


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude ``sqrt(Σ g_axis²)`` of a (B, 1, *spatial) image (2D or 3D)."""
    dims = image.dim() - 2
    kernels = _sobel_kernels(dims).to(image)
    conv = F.conv2d if dims == 2 else F.conv3d
    gradients = conv(image.mean(dim=1, keepdim=True), kernels, padding=1)
    return torch.sqrt((gradients**2).sum(dim=1, keepdim=True) + 1e-12)


def _gaussian_kernel(dims: int) -> torch.Tensor:
    """Separable 5-tap binomial kernel ([1, 4, 6, 4, 1] / 16 per axis), the seed's 2D kernel.

    The seed's 3D code uses a 3³ Gaussian (sigma 1.5) instead; with zero interleaving that kernel
    cannot rebuild even a constant map (its even and odd taps sum to 0.38 and 0.62), so the
    boundary map would carry a checkerboard. The binomial kernel's even and odd taps both sum to
    1/2 per axis, which makes ``up(down(constant)) == constant``.
    """
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    kernel = row
    for _ in range(dims - 1):
        kernel = kernel[..., None] * row
    return kernel[None, None]


def laplacian_level(v: torch.Tensor) -> torch.Tensor:
    """One Laplacian-pyramid level of the channel mean of ``v`` (B, 1, *spatial)."""
    dims = v.dim() - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    kernel = _gaussian_kernel(dims).to(v)
    pad = kernel.shape[-1] // 2
    mean = v.mean(dim=1, keepdim=True)
    blurred = conv(mean, kernel, padding=pad)
    down = blurred[(slice(None), slice(None)) + (slice(None, None, 2),) * dims]
    up = torch.zeros_like(mean)
    up[(slice(None), slice(None)) + (slice(None, None, 2),) * dims] = down  # true zero interleaving
    up = conv(up, kernel, padding=pad) * (2**dims)
    return mean - up


class CBAM(nn.Module):
    """Convolutional block attention: channel gate (shared MLP on avg/max pool), then spatial gate."""

    def __init__(self, channels: int, dims: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.spatial = conv_nd(dims)(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate's weights ``σ(MLP(avgpool x) + MLP(maxpool x))``, shape (B, C)."""
        flat = x.flatten(2)
        return torch.sigmoid(self.mlp(flat.mean(-1)) + self.mlp(flat.amax(-1)))

    def spatial_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial gate's weights ``σ(conv([max_c x, mean_c x]))``, shape (B, 1, *spatial)."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(pooled))

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.channel_weights(x)
        return x * gate.reshape(*gate.shape, *([1] * (x.dim() - 2)))

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.spatial_weights(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))


def check_edge_options(edge_guided: bool, edge_cbam: str) -> None:
    """Refuse an unknown ``edge_cbam``, and one set on a network without edge-guided modules (it
    would be ignored silently). Raises ValueError (an InputError through ``build_network``)."""
    if edge_cbam not in CBAM_MODES:
        raise ValueError(f"edge_cbam must be one of {', '.join(CBAM_MODES)}, not {edge_cbam!r}")
    if edge_cbam != "gate" and not edge_guided:
        raise ValueError(f"edge_cbam={edge_cbam!r} needs edge_guided=true (it changes the edge-guided modules)")


class EdgeGuidedAttention(nn.Module):
    """Edge-guided module for one decoder level (see the module docstring).

    Args:
        channels: C, features at this level.
        dims: 2 or 3.
        edge_channels: channels of the shared edge features it receives (3D: 128 from a learnable
            1³ conv; 2D: 1, the Sobel magnitude repeated to C).
        dropout: channel dropout inside the module (3D seed: 0.4; 2D seed: none).
        norm: normalisation of the fusion convolutions.
        cbam: one of :data:`CBAM_MODES` (``gate``, the seed's, by default).
    """

    def __init__(self, channels: int, dims: int, edge_channels: int = 1, dropout: float = 0.0,
                 norm: str = "batch", cbam: str = "gate") -> None:
        super().__init__()
        check_edge_options(True, cbam)
        conv = conv_nd(dims)
        self.dims = dims
        self.project = None if edge_channels in (1, channels) else conv(edge_channels, channels, 1)
        self.fuse = nn.Sequential(conv(3 * channels, channels, 3, padding=1), norm_nd(norm, dims, channels),
                                  nn.ReLU(inplace=True))
        self.fuse_dropout = dropout_nd(dims)(dropout) if dropout > 0 else nn.Identity()
        self.attention = nn.Sequential(conv(channels, 1, 3, padding=1), norm_nd(norm, dims, 1))
        self.cbam_mode = cbam
        self.cbam = CBAM(channels, dims) if cbam != "none" else nn.Identity()
        self.out_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
        mode = "nearest" if self.project is not None else ("bilinear" if self.dims == 2 else "trilinear")
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        edge = F.interpolate(edge, size=x.shape[2:], mode=mode, **kwargs)
        edge = self.project(edge) if self.project is not None else edge.expand(-1, x.shape[1], *edge.shape[2:])
        prob = torch.sigmoid(x)
        reverse = x * (1.0 - prob)
        boundary = x * laplacian_level(prob)
        high_freq = x * edge
        fused = self.fuse_dropout(self.fuse(torch.cat([reverse, boundary, high_freq], dim=1)))
        fused = fused * torch.sigmoid(self.attention(fused)) + x
        gated = fused + self.cbam(fused) if self.cbam_mode == "residual" else self.cbam(fused)
        return self.out_dropout(gated)


