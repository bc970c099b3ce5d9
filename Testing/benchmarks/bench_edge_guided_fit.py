"""How fast does each network fit one fixed batch? In 3D (default) the plain V-Net against the
edge-guided V-Net (Hsu & Hua's extension of BCP) with its code's initialisation (PyTorch's default) and
with RAIL's Kaiming initialisation, with and without the edge-guided modules' CBAM gates and dropout,
and with residual CBAMs (``edge_cbam: residual``);
in 2D (``--dims 2``) the plain 2D U-Net against the edge-guided one, with its CBAM gates whole, halved
(channel or spatial gate alone), widened (reduction 1), made residual (``edge_cbam: residual``),
removed, and removed at the output level only or everywhere else; and both U-Nets with LeakyReLU
features, as the public edge-guided 2D U-Net has them.

A control for the BCP rows of ``bench_ssl_synth3d.py``: the edge-guided BCP model trained with the
Kaiming initialisation of RAIL's V-Net still predicted background only after its pretraining, while
the same BCP recipe on the plain V-Net did not. This benchmark removes every other factor (data
pipeline, copy-paste, teachers, schedule): two synthetic scans painted on the real STS-2024
``Validation_0002`` tooth shapes (INTENSITIES ARE SYNTHETIC; seeds 3000/3001), one crop each around
the teeth, tooth vs background, the same seed for every network's initialisation, AdamW (lr 1e-3, as
the supervised recipes), BCP's loss ``(CE + Dice)/2``. It prints, per network, the loss and the
foreground Dice of its argmax on that batch, in training mode and in evaluation mode, after
``--steps`` steps.

The 2D mode is the control for the 2D BCP row of ``bench_ssl_ufba.py``, whose copy-paste pretraining
on the edge-guided U-Net learnt several times slower than on the plain one. Its batch: four training
patches of REAL panoramic X-rays (UFBA-425, the 10 % labeled split of ``bcp_ufba.yaml``, 256² at
2 mm, FDI classes), drawn by the recipe's own data pipeline with a fixed seed; BCP's pretraining
optimiser (SGD 0.01, momentum 0.9); the Dice is the mean over the tooth classes in the batch.

    python Testing/benchmarks/bench_edge_guided_fit.py --out Testing/benchmarks/results/edge_guided_fit_cpu.json
    python Testing/benchmarks/bench_edge_guided_fit.py --dims 2 --steps 150 \
        --out Testing/benchmarks/results/edge_guided_fit_2d_cpu.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "ToothSegTraining"))
sys.path.insert(0, str(REPO / "Testing" / "benchmarks"))

from bench_ssl_synth3d import LABEL_MAPS  # noqa: E402
from bench_ufba import write_result  # noqa: E402
from toothseg.core.errors import ToothSegError  # noqa: E402
from toothseg.core.io.atomic import check_writable_output  # noqa: E402
from toothseg.core.models.card import IntensityNormalization  # noqa: E402
from toothseg.core.networks.edge import CBAM  # noqa: E402
from toothseg.core.networks.unet2d import DoubleConv, UNet2D  # noqa: E402
from toothseg.core.networks.vnet import VNet  # noqa: E402
from toothseg.core.preprocessing import image_statistics, normalize_intensities  # noqa: E402
from toothseg.train.data.cases import shared_data_dir  # noqa: E402
from toothseg.train.methods.bcp import weighted_mix_loss  # noqa: E402

CROP = (48, 64, 64)
BCP_2D_RECIPE = REPO / "ToothSegTraining" / "toothseg" / "train" / "recipes" / "bcp_ufba.yaml"
BATCH_2D = 4


def fixed_batch(seeds: tuple[int, int] = (3000, 3001), spacing: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 1, *CROP) images and (2, *CROP) tooth masks: one synthetic scan from the ground-truth map and
    one from the predicted map of ``Validation_0002``, as the 3D benchmark draws its first two scans."""
    from toothseg.train.synth import synthesize
    from toothseg.train.synth.sample import cropped_anatomy

    images, masks = [], []
    for key, seed in zip(("gt", "pred"), seeds):
        anatomy, region = cropped_anatomy(shared_data_dir() / "sts2024" / LABEL_MAPS[key], spacing, 12.0)
        image, labels = synthesize(anatomy, np.random.default_rng(seed), region=region)
        array = image.array.astype(np.float32)
        tensor = normalize_intensities(torch.from_numpy(array.copy()), IntensityNormalization(),
                                       image_statistics(array))
        teeth = labels.array > 0
        centre = [int(np.mean(axis)) for axis in np.nonzero(teeth)]
        block = tuple(slice(max(0, min(c - n // 2, size - n)), max(0, min(c - n // 2, size - n)) + n)
                      for c, n, size in zip(centre, CROP, teeth.shape))
        images.append(tensor[block])
        masks.append(torch.from_numpy(teeth[block].astype(np.int64)))
    return torch.stack(images)[:, None], torch.stack(masks)


def fixed_batch_2d(size: int = BATCH_2D) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(size, 1, 256, 256) images, (size, 256, 256) class indices and the number of classes: the first
    ``size`` labeled patches that BCP's 2D recipe draws (real UFBA-425 X-rays, 10 % split, its
    augmentation, seed 0)."""
    from toothseg.core.labels import label_table_named
    from toothseg.train.config import stage_data
    from toothseg.train.config.loader import load_recipe
    from toothseg.train.data.dataset import TrainingData

    recipe, _ = load_recipe(BCP_2D_RECIPE)
    config = stage_data(recipe, 0)
    table = label_table_named(config.label_table)
    classes = config.class_values or [0, *table.values]
    data = TrainingData(config, table, classes, recipe.seed)
    items = [data.labeled_item(index) for index in range(size)]
    images, labels = torch.stack([item["image"] for item in items]), torch.stack([item["label"] for item in items])
    return images, labels.long(), len(classes)


def _without_dropout(net: nn.Module) -> nn.Module:
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
    return net


def _kaiming(net: VNet) -> VNet:
    net.kaiming_init()
    return net


def _without_cbam(net: VNet) -> VNet:
    for attention in net.edge_attention:
        attention.cbam = nn.Identity()
    return _without_dropout(net)


class _HalfCBAM(nn.Module):
    """A CBAM reduced to one of its two gates (the ablation keeps the module's own parameters)."""

    def __init__(self, cbam: nn.Module) -> None:
        super().__init__()
        self.cbam = cbam


class _ChannelGateOnly(_HalfCBAM):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam.channel_gate(x)


class _SpatialGateOnly(_HalfCBAM):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbam.spatial_gate(x)


def _wide_cbam(cbam: nn.Module) -> nn.Module:
    """The same CBAM with a channel MLP as wide as its input (reduction 1 instead of 16)."""
    return CBAM(cbam.mlp[0].in_features, cbam.spatial.weight.dim() - 2, reduction=1)


def _with_cbam(net: nn.Module, replace: Callable[[nn.Module], nn.Module], levels: tuple[int, ...] = (0, 1, 2, 3)):
    for level in levels:
        net.edge_attention[level].cbam = replace(net.edge_attention[level].cbam)
    return net


NETWORKS: dict[str, Callable[[int], nn.Module]] = {
    "plain V-Net": lambda classes: VNet(num_classes=classes, n_filters=8),
    "edge-guided V-Net": lambda classes: VNet(num_classes=classes, n_filters=8, edge_guided=True),
    "edge-guided, Kaiming init": lambda classes: _kaiming(VNet(num_classes=classes, n_filters=8, edge_guided=True)),
    "edge-guided, Kaiming init, no dropout": lambda classes: _without_dropout(
        _kaiming(VNet(num_classes=classes, n_filters=8, edge_guided=True))),
    "edge-guided, Kaiming init, no dropout/CBAM": lambda classes: _without_cbam(
        _kaiming(VNet(num_classes=classes, n_filters=8, edge_guided=True))),
    "edge-guided, residual CBAM": lambda classes: VNet(num_classes=classes, n_filters=8, edge_guided=True,
                                                       edge_cbam="residual"),
    "edge-guided, Kaiming init, residual CBAM": lambda classes: _kaiming(
        VNet(num_classes=classes, n_filters=8, edge_guided=True, edge_cbam="residual")),
}
"""3D networks, each built from the number of classes (8 base filters, as the 3D benchmark)."""


def _unet2d(classes: int, edge_guided: bool = False, edge_cbam: str = "gate") -> UNet2D:
    return UNet2D(num_classes=classes, base_channels=16, edge_guided=edge_guided, edge_cbam=edge_cbam)


def _leaky_features(net: UNet2D, slope: float = 0.01) -> UNet2D:
    """The U-Net's feature blocks with LeakyReLU (slope 0.01) instead of ReLU, as the public edge-guided
    2D U-Net (``unet_ega.py``, an SSL4MIS U-Net) has them; the edge modules and CBAMs are untouched."""
    for block in net.modules():
        if isinstance(block, DoubleConv):
            for index, layer in enumerate(block.double_conv):
                if isinstance(layer, nn.ReLU):
                    block.double_conv[index] = nn.LeakyReLU(slope, inplace=True)
    return net


NETWORKS_2D: dict[str, Callable[[int], nn.Module]] = {
    "plain U-Net": lambda classes: _unet2d(classes),
    "edge-guided U-Net": lambda classes: _unet2d(classes, True),
    "edge-guided, no CBAM": lambda classes: _unet2d(classes, True, edge_cbam="none"),
    "edge-guided, CBAM channel gate only": lambda classes: _with_cbam(_unet2d(classes, True), _ChannelGateOnly),
    "edge-guided, CBAM spatial gate only": lambda classes: _with_cbam(_unet2d(classes, True), _SpatialGateOnly),
    "edge-guided, CBAM reduction 1": lambda classes: _with_cbam(_unet2d(classes, True), _wide_cbam),
    "edge-guided, residual CBAM": lambda classes: _unet2d(classes, True, edge_cbam="residual"),
    "edge-guided, no CBAM at the output level": lambda classes: _with_cbam(
        _unet2d(classes, True), lambda cbam: nn.Identity(), levels=(3,)),
    "edge-guided, CBAM at the output level only": lambda classes: _with_cbam(
        _unet2d(classes, True), lambda cbam: nn.Identity(), levels=(0, 1, 2)),
    "plain U-Net, LeakyReLU features": lambda classes: _leaky_features(_unet2d(classes)),
    "edge-guided, LeakyReLU features": lambda classes: _leaky_features(_unet2d(classes, True)),
}
"""2D U-Nets (16 base channels, as the 2D benchmark); the edge-guided ones differ only in their CBAMs."""


def mean_tooth_dice(logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean Dice of the argmax over the tooth classes present in ``mask`` (with one tooth class: the
    foreground Dice)."""
    found = logits.argmax(1)
    scores = []
    for value in mask.unique().tolist():
        if value == 0:
            continue
        a, b = found == value, mask == value
        scores.append(2 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum())))
    return sum(scores) / len(scores) if scores else 0.0


OPTIMIZERS = {"adamw": "AdamW 1e-3", "sgd": "SGD 0.01, momentum 0.9"}


SHUT = 0.05
"""A gate below this lets through less than 5 % of its input: that channel or position is shut."""


def shut_gates(net: nn.Module, image: torch.Tensor) -> dict[str, float]:
    """Share of the edge-guided modules' CBAM gates that are shut (< :data:`SHUT`) on ``image``, for
    the gates each network applies: channel gates per (image, channel), spatial gates per (image,
    position), pooled over the decoder levels. Empty for networks without CBAM gates."""
    counts = {"channel": [0, 0], "spatial": [0, 0]}

    def record(kind: str, gate: torch.Tensor) -> None:
        counts[kind][0] += int((gate < SHUT).sum())
        counts[kind][1] += gate.numel()

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        cbam, x = (module if isinstance(module, CBAM) else module.cbam), inputs[0]
        if not isinstance(module, _SpatialGateOnly):
            record("channel", cbam.channel_weights(x))
            x = cbam.channel_gate(x)
        if not isinstance(module, _ChannelGateOnly):
            record("spatial", cbam.spatial_weights(x))

    attention = getattr(net, "edge_attention", None) or []
    handles = [a.cbam.register_forward_hook(hook) for a in attention if not isinstance(a.cbam, nn.Identity)]
    try:
        with torch.no_grad():
            net(image)
    finally:
        for handle in handles:
            handle.remove()
    return {f"{kind}_gates_shut": round(shut / total, 4) for kind, (shut, total) in counts.items() if total}


def make_optimizer(name: str, parameters) -> torch.optim.Optimizer:
    """``adamw``: the 3D supervised recipes' AdamW 1e-3; ``sgd``: BCP's 2D pretraining SGD."""
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=1e-3, weight_decay=1e-4)
    return torch.optim.SGD(parameters, lr=0.01, momentum=0.9, weight_decay=1e-4)


def fit(build: Callable[[int], nn.Module], image: torch.Tensor, mask: torch.Tensor, steps: int, seed: int,
        classes: int = 2, optimizer: str = "adamw") -> dict:
    torch.manual_seed(seed)
    net = build(classes)
    optimizer = make_optimizer(optimizer, net.parameters())
    weight = torch.ones_like(mask, dtype=torch.float)
    started = time.perf_counter()
    net.train()
    for _ in range(steps):
        loss = weighted_mix_loss(net(image), mask, weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    result = {"seconds": round(time.perf_counter() - started, 1)}
    with torch.no_grad():
        for mode in ("train", "eval"):
            net.train(mode == "train")
            logits = net(image)
            result[f"loss_{mode}"] = round(float(weighted_mix_loss(logits, mask, weight)), 4)
            result[f"dice_{mode}"] = round(mean_tooth_dice(logits, mask), 4)
    return {**result, **shut_gates(net, image)}  # net is in evaluation mode here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, choices=(2, 3), default=3,
                        help="3: V-Nets on synthetic CBCT crops (default); 2: U-Nets on real panoramic patches")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per network (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed, the same for every network")
    parser.add_argument("--network", action="append", metavar="NAME",
                        help="fit only this network (repeatable; default: all of the chosen --dims)")
    parser.add_argument("--out", type=Path, help="JSON to write (optional)")
    args = parser.parse_args(argv)
    networks = NETWORKS_2D if args.dims == 2 else NETWORKS
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    unknown = sorted(set(args.network or ()) - set(networks))
    if unknown:
        parser.error(f"unknown --network {', '.join(map(repr, unknown))} for --dims {args.dims}; "
                     f"choose from {', '.join(map(repr, networks))}")
    chosen = {name: build for name, build in networks.items() if not args.network or name in args.network}
    optimizer = "sgd" if args.dims == 2 else "adamw"
    try:
        if args.out:  # before minutes of training, not after
            check_writable_output(args.out, overwrite=True)
        image, mask, classes = fixed_batch_2d() if args.dims == 2 else (*fixed_batch(), 2)
    except ToothSegError as exc:
        print(f"bench_edge_guided_fit: {exc}", file=sys.stderr)
        return 1
    print(f"batch {tuple(image.shape)}, tooth share {float((mask > 0).float().mean()):.3f}, "
          f"{len(mask.unique()) - 1} tooth classes present, {args.steps} {OPTIMIZERS[optimizer]} steps")
    rows = []
    for name, build in chosen.items():
        row = {"network": name, **fit(build, image, mask, args.steps, args.seed, classes, optimizer)}
        rows.append(row)
        shut = "".join(f"  {kind} gates shut {row[f'{kind}_gates_shut']:.0%}" for kind in ("channel", "spatial")
                       if f"{kind}_gates_shut" in row)
        print(f"{name:44s} Dice train {row['dice_train']:.3f}  eval {row['dice_eval']:.3f}  "
              f"loss {row['loss_train']:.3f}  {row['seconds']:.0f} s{shut}", flush=True)
    if args.out:
        if args.dims == 2:
            data = {"patch": list(image.shape[2:]), "batch": image.shape[0], "classes": classes,
                    "data": f"{image.shape[0]} REAL panoramic X-ray patches (UFBA-425, the first labeled items "
                            "of bcp_ufba.yaml: 10 % split, its augmentation, seed 0)",
                    "dice": "mean over the tooth classes present in the batch"}
        else:
            data = {"crop": list(CROP), "data": "2 synthetic scans (seeds 3000, 3001), "
                    "STS-2024 Validation_0002 shapes, SYNTHETIC intensities",
                    "dice": "foreground (tooth vs background)"}
        result = {"settings": {"dims": args.dims, "steps": args.steps, "seed": args.seed, **data,
                               "optimizer": OPTIMIZERS[optimizer], "loss": "BCP (CE + Dice)/2",
                               "threads": torch.get_num_threads(),
                               "machine": platform.processor() or platform.machine()},
                  "networks": rows}
        write_result(args.out, result, rows_key="networks")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
