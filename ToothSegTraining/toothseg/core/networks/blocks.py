"""Small building blocks shared by the architectures, for 2D and 3D alike."""

from __future__ import annotations

import abc

import torch
from torch import nn

__all__ = ["conv_nd", "conv_transpose_nd", "norm_nd", "dropout_nd", "avg_pool_nd", "SegmentationNetwork"]


def conv_nd(dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[dims]


def conv_transpose_nd(dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]


def dropout_nd(dims: int) -> type[nn.Module]:
    """Channel dropout (whole feature maps), as ``nn.Dropout3d`` in the papers' code."""
    return {2: nn.Dropout2d, 3: nn.Dropout3d}[dims]


def avg_pool_nd(dims: int) -> type[nn.Module]:
    return {2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims]


def norm_nd(kind: str, dims: int, channels: int) -> nn.Module:
    """``batch`` (BatchNorm), ``instance`` (affine InstanceNorm, nnU-Net) or ``instance_plain`` (no affine)."""
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    if kind == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels, eps=1e-5, affine=True)
    if kind == "instance_plain":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](channels)
    raise ValueError(f"unknown normalisation {kind!r}")


class SegmentationNetwork(nn.Module, metaclass=abc.ABCMeta):
    """What every ToothSeg network offers beyond ``forward``.

    * ``encode(x)`` returns the feature maps a decoder consumes (skips, bottleneck last), so that
      semi-supervised methods can perturb features between ``encode`` and ``decode``;
    * ``decode(features, image)`` returns logits ``(B, C, *spatial)`` — or, when
      ``deep_supervision`` is on, a list of logits from full to lowest resolution;
    * ``segmentation_head()`` is the final convolution to class logits (its input: the decoder's features);
    * ``encoder_prefixes`` name the state-dict keys of the encoder, for pretraining transfer;
    * ``size_divisor`` is the multiple each spatial input size must have.
    """

    spatial_dims: int = 3
    in_channels: int = 1
    num_classes: int = 2
    deep_supervision: bool = False
    encoder_prefixes: tuple[str, ...] = ()
    size_divisor: tuple[int, ...] = (16, 16, 16)

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps for the decoder, highest resolution first, bottleneck last."""

    @abc.abstractmethod
    def decode(self, features: list[torch.Tensor], image: torch.Tensor | None = None):
        """Logits from (possibly perturbed) features; ``image`` feeds edge guidance."""

    def forward(self, x: torch.Tensor):
        return self.decode(self.encode(x), x)

    @abc.abstractmethod
    def segmentation_head(self) -> nn.Module:
        """The final (full-resolution) convolution that maps decoder features to class logits; a
        method that needs other outputs (reconstruction pretraining) reads its input and leaves it alone."""

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's parameters and buffers (keys as in ``state_dict``)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.encoder_prefixes)}
