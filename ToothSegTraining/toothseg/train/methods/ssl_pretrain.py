"""Self-supervised pretraining by reconstruction, on labeled and unlabeled images alike.

Three corruptions (``mode``):

* ``dae`` — U-Mamba2-SSL's disruptive autoencoder (§2.2): additive Gaussian noise (variance 0.1),
  down- and up-sampling by 4 (nearest, as the code does), and 30 % of 16-voxel cubes set to −2;
  L1 over the whole image.
* ``mim`` — seed 001's masked-image modelling: random rectangles (sides 32–96 px at 224x320,
  scaled to the patch) until ≥ 55 % is masked, masked pixels set to 0; L1 on the masked pixels.
* ``recon`` — the same masking, L1 over the whole image (full-image reconstruction).

The network is the segmentation architecture itself, with a **separate reconstruction head**: a
1x1 convolution (``reconstruction_head``, trained here, never exported) reads the decoder's features
where the segmentation head does, and the segmentation head itself is left as built. Encoder and
decoder then initialise the next stage (``init_from: previous``, or ``previous.encoder``) without a
segmentation head trained to output intensities (reading channel 0 as the image made the background
logit an intensity map, which the fine-tuning then had to unlearn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...core.errors import InputError
from ...core.networks.blocks import conv_nd
from .base import Method, StepOutput, register_method, unwrap

__all__ = ["corrupt_dae", "block_mask", "rectangle_mask"]


def block_mask(shape: tuple[int, ...], cube: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(B, *spatial) bool mask of ``ceil(ratio · #cubes)`` random cubes per sample."""
    batch, spatial = shape[0], shape[1:]
    grid = [math.ceil(s / cube) for s in spatial]
    cells = int(torch.tensor(grid).prod())
    count = math.ceil(ratio * cells)
    masks = []
    for _ in range(batch):
        chosen = torch.zeros(cells, dtype=torch.bool)
        chosen[torch.randperm(cells, generator=generator)[:count]] = True
        cell_mask = chosen.view(grid)
        for axis in range(len(spatial)):
            cell_mask = cell_mask.repeat_interleave(cube, dim=axis)
        masks.append(cell_mask[tuple(slice(0, s) for s in spatial)])
    return torch.stack(masks)


def rectangle_mask(shape: tuple[int, ...], ratio: float, side_fraction: tuple[float, float],
                   generator: torch.Generator) -> torch.Tensor:
    """(B, *spatial) bool mask: random boxes until at least ``ratio`` of each sample is covered."""
    batch, spatial = shape[0], shape[1:]
    masks = torch.zeros(shape, dtype=torch.bool)
    for b in range(batch):
        while masks[b].float().mean() < ratio:
            box = []
            for s in spatial:
                low, high = max(1, int(side_fraction[0] * s)), max(2, int(side_fraction[1] * s))
                side = int(torch.randint(low, high + 1, (1,), generator=generator))
                start = int(torch.randint(0, max(1, s - side + 1), (1,), generator=generator))
                box.append(slice(start, start + side))
            masks[(b, *box)] = True
    return masks


def corrupt_dae(x: torch.Tensor, generator: torch.Generator, variance: float = 0.1, factor: int = 4,
                cube: int = 16, ratio: float = 0.3, mask_value: float = -2.0) -> torch.Tensor:
    """Noise, then nearest down/up-sampling, then cube masking (in that order, as in U-Mamba2's code)."""
    noisy = x + math.sqrt(variance) * torch.randn(x.shape, generator=generator).to(x)
    size = [max(1, s // factor) for s in x.shape[2:]]
    coarse = F.interpolate(F.interpolate(noisy, size=size, mode="nearest"), size=x.shape[2:], mode="nearest")
    mask = block_mask((x.shape[0], *x.shape[2:]), cube, ratio, generator).to(x.device)
    return torch.where(mask[:, None], torch.full_like(coarse, mask_value), coarse)


@dataclass
class PretrainSettings:
    mode: str = "dae"  # dae, mim, recon
    noise_variance: float = 0.1
    downsample: int = 4
    cube: int = 16
    cube_ratio: float = 0.3
    mask_ratio: float = 0.55
    side_fraction: tuple[float, float] = (0.12, 0.35)  # 32–96 px of a 224–320 px image


@register_method("ssl_pretrain")
class SSLPretrain(Method):
    """Reconstruction pretraining (DAE, MIM or full-image); uses unlabeled images when given."""

    Settings = PretrainSettings
    produces_segmentation = False
    trainable = ("student", "reconstruction_head")

    def __init__(self, settings, context):
        super().__init__(settings, context)
        if settings.mode not in ("dae", "mim", "recon"):
            raise InputError(f"ssl_pretrain mode must be dae, mim or recon, not {settings.mode!r}")
        self.generator = torch.Generator().manual_seed(context.seed + 17)

    def build_networks(self):
        student = self.context.build_network()
        head = student.segmentation_head()
        channels = getattr(student, "in_channels", 1)
        return {"student": student,
                "reconstruction_head": conv_nd(self.context.spatial_dims)(head.in_channels, channels, 1)}

    def reconstruct(self, corrupted: torch.Tensor) -> torch.Tensor:
        """The reconstruction head on the decoder's features (the segmentation head's input)."""
        captured: list[torch.Tensor] = []
        hook = unwrap(self.nets["student"]).segmentation_head().register_forward_hook(
            lambda module, inputs, output: captured.append(inputs[0]))
        try:
            self.nets["student"](corrupted)
        finally:
            hook.remove()
        return self.nets["reconstruction_head"](captured[-1])

    def train_step(self, batch, step):
        s = self.settings
        images = [batch["image"]] + ([batch["unlabeled_image"]] if "unlabeled_image" in batch else [])
        clean = torch.cat(images)
        if s.mode == "dae":
            corrupted = corrupt_dae(clean, self.generator, s.noise_variance, s.downsample, s.cube, s.cube_ratio)
            weight = torch.ones_like(clean)
        else:
            mask = rectangle_mask((clean.shape[0], *clean.shape[2:]), s.mask_ratio, s.side_fraction,
                                  self.generator).to(clean.device)[:, None]
            corrupted = clean * (~mask)
            weight = mask.to(clean.dtype) if s.mode == "mim" else torch.ones_like(clean)
        reconstruction = self.reconstruct(corrupted)
        loss = (weight * (reconstruction.float() - clean).abs()).sum() / weight.sum().clamp_min(1.0)
        return StepOutput(loss, {"reconstruction": loss}, unsupervised=("reconstruction",))


@dataclass
class MIMSettings(PretrainSettings):
    mode: str = "mim"


@dataclass
class ReconSettings(PretrainSettings):
    mode: str = "recon"


@register_method("mim_pretrain")
class MIMPretrain(SSLPretrain):
    """Masked-image modelling pretraining (mask ratio 0.55, L1 on the masked pixels)."""

    Settings = MIMSettings


@register_method("recon_pretrain")
class ReconPretrain(SSLPretrain):
    """Full-image reconstruction pretraining (the same masking, L1 over the whole image)."""

    Settings = ReconSettings
