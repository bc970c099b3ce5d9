"""How fast does each 3D network fit one fixed batch? The plain V-Net against the edge-guided V-Net
(Hsu & Hua's extension of BCP) with its code's initialisation (PyTorch's default) and with RAIL's
Kaiming initialisation, with and without the edge-guided modules' CBAM gates and dropout.

A control for the BCP rows of ``bench_ssl_synth3d.py``: the edge-guided BCP model trained with the
Kaiming initialisation of RAIL's V-Net still predicted background only after its pretraining, while
the same BCP recipe on the plain V-Net did not. This benchmark removes every other factor (data
pipeline, copy-paste, teachers, schedule): two synthetic scans painted on the real STS-2024
``Validation_0002`` tooth shapes (INTENSITIES ARE SYNTHETIC; seeds 3000/3001), one crop each around
the teeth, tooth vs background, the same seed for every network's initialisation, AdamW (lr 1e-3, as
the supervised recipes), BCP's loss ``(CE + Dice)/2``. It prints, per network, the loss and the
foreground Dice of its argmax on that batch, in training mode and in evaluation mode, after
``--steps`` steps.

    python Testing/benchmarks/bench_edge_guided_fit.py --out Testing/benchmarks/results/edge_guided_fit_cpu.json
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
from toothseg.core.inference.preprocessing import image_statistics, normalize_intensities  # noqa: E402
from toothseg.core.io.atomic import check_writable_output  # noqa: E402
from toothseg.core.models.card import IntensityNormalization  # noqa: E402
from toothseg.core.models.vnet import VNet  # noqa: E402
from toothseg.train.data.cases import shared_data_dir  # noqa: E402
from toothseg.train.methods.bcp import weighted_mix_loss  # noqa: E402

CROP = (48, 64, 64)


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


NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "plain V-Net": lambda: VNet(n_filters=8),
    "edge-guided V-Net": lambda: VNet(n_filters=8, edge_guided=True),
    "edge-guided, Kaiming init": lambda: _kaiming(VNet(n_filters=8, edge_guided=True)),
    "edge-guided, Kaiming init, no dropout": lambda: _without_dropout(_kaiming(VNet(n_filters=8, edge_guided=True))),
    "edge-guided, Kaiming init, no dropout/CBAM": lambda: _without_cbam(_kaiming(VNet(n_filters=8, edge_guided=True))),
}


def foreground_dice(logits: torch.Tensor, mask: torch.Tensor) -> float:
    found = logits.argmax(1) > 0
    truth = mask > 0
    return 2 * float((found & truth).sum()) / max(1, int(found.sum()) + int(truth.sum()))


def fit(build: Callable[[], nn.Module], image: torch.Tensor, mask: torch.Tensor, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    net = build()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
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
            result[f"dice_{mode}"] = round(foreground_dice(logits, mask), 4)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per network (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed, the same for every network")
    parser.add_argument("--out", type=Path, help="JSON to write (optional)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    try:
        if args.out:  # before minutes of training, not after
            check_writable_output(args.out, overwrite=True)
        image, mask = fixed_batch()
    except ToothSegError as exc:
        print(f"bench_edge_guided_fit: {exc}", file=sys.stderr)
        return 1
    print(f"batch {tuple(image.shape)}, tooth share {float(mask.float().mean()):.3f}, {args.steps} AdamW steps")
    rows = []
    for name, build in NETWORKS.items():
        row = {"network": name, **fit(build, image, mask, args.steps, args.seed)}
        rows.append(row)
        print(f"{name:44s} Dice train {row['dice_train']:.3f}  eval {row['dice_eval']:.3f}  "
              f"loss {row['loss_train']:.3f}  {row['seconds']:.0f} s", flush=True)
    if args.out:
        result = {"settings": {"steps": args.steps, "seed": args.seed, "crop": list(CROP), "optimizer": "AdamW 1e-3",
                               "loss": "BCP (CE + Dice)/2", "data": "2 synthetic scans (seeds 3000, 3001), "
                               "STS-2024 Validation_0002 shapes, SYNTHETIC intensities",
                               "threads": torch.get_num_threads(),
                               "machine": platform.processor() or platform.machine()},
                  "networks": rows}
        write_result(args.out, result, rows_key="networks")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
