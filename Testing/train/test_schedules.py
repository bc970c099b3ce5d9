"""Learning-rate schedules and optimiser groups, against the values the methods' papers and code give."""

from __future__ import annotations

import math

import pytest
import torch

from toothseg.core import InputError
from toothseg.train.config import OptimizerConfig
from toothseg.train.engine.schedules import build_optimizer, learning_rate


def test_rail_warmup_then_constant_then_cosine():
    """RAIL (methods.md): linear 1e-5 → 0.01 over 1000 iterations, 0.01 until 4000, cosine to 1e-5 at 8000."""
    rail = OptimizerConfig(lr=0.01, min_lr=1e-5, warmup_iterations=1000, schedule="warmup_cosine")
    assert learning_rate(rail, 0, 8000) == pytest.approx(1e-5 + (0.01 - 1e-5) / 1000)
    assert learning_rate(rail, 499, 8000) == pytest.approx(1e-5 + (0.01 - 1e-5) * 0.5)
    assert learning_rate(rail, 999, 8000) == pytest.approx(0.01)
    assert learning_rate(rail, 1000, 8000) == learning_rate(rail, 3999, 8000) == 0.01
    assert learning_rate(rail, 6000, 8000) == pytest.approx(1e-5 + 0.5 * (0.01 - 1e-5))  # half-way down the cosine
    assert learning_rate(rail, 8000, 8000) == pytest.approx(1e-5)


def test_umamba2_dae_warmup_starts_below_the_cosine_floor():
    """U-Mamba2-SSL's DAE pretraining (timm CosineLRScheduler): warm-up from 5e-7 to 5e-5, then the
    cosine to 5e-6 at the step it stands at (no warm-up prefix)."""
    dae = OptimizerConfig(name="adamw", lr=5e-5, min_lr=5e-6, warmup_iterations=800, warmup_start_lr=5e-7,
                          schedule="cosine")
    assert learning_rate(dae, 0, 40000) == pytest.approx(5e-7 + (5e-5 - 5e-7) / 800)
    assert learning_rate(dae, 799, 40000) == pytest.approx(5e-5)
    assert learning_rate(dae, 800, 40000) == pytest.approx(5e-6 + 0.5 * 45e-6 * (1 + math.cos(math.pi * 800 / 40000)))
    assert learning_rate(dae, 20000, 40000) == pytest.approx(5e-6 + 0.5 * 45e-6)
    assert learning_rate(dae, 40000, 40000) == pytest.approx(5e-6)
    without = OptimizerConfig(lr=5e-5, min_lr=5e-6, warmup_iterations=800, schedule="cosine")
    assert learning_rate(without, 0, 40000) == pytest.approx(5e-6 + 45e-6 / 800)  # default: from min_lr


def test_poly_and_constant():
    poly = OptimizerConfig(lr=0.01)  # nnU-Net: 0.01 (1 − step/total)^0.9
    assert learning_rate(poly, 0, 1000) == 0.01
    assert learning_rate(poly, 500, 1000) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert learning_rate(poly, 5000, 1000) == pytest.approx(0.01 * 0.001 ** 0.9)  # past the end: the last value
    assert learning_rate(OptimizerConfig(lr=3e-4, schedule="constant"), 123, 1000) == 3e-4
    with pytest.raises(InputError, match="unknown learning-rate schedule"):
        learning_rate(OptimizerConfig(schedule="step"), 0, 10)


def test_linear_matches_pytorchs_linear_lr_as_u_mamba2_ssl_uses_it():
    """U-Mamba2-SSL's pseudo-label stage: SGD at 1e-3 with ``LinearLR(start_factor=1, end_factor=0.01)``
    over the stage, so it ends at 1e-5 (poly would end near 0)."""
    total = 50
    config = OptimizerConfig(lr=1e-3, min_lr=1e-5, schedule="linear")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    reference = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.01, total_iters=total - 1)
    for step in range(total):
        assert learning_rate(config, step, total) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9)
        optimizer.step()
        reference.step()
    assert learning_rate(config, total - 1, total) == pytest.approx(1e-5)
    assert learning_rate(config, 10 * total, total) == pytest.approx(1e-5)  # past the end: the last value


def test_norm_and_bias_parameters_can_be_left_without_weight_decay():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.InstanceNorm3d(4, affine=True),
                              torch.nn.Conv3d(4, 2, 1))
    plain = build_optimizer(OptimizerConfig(name="adamw", weight_decay=0.05), net.parameters())
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 0.05
    split = build_optimizer(OptimizerConfig(name="adamw", weight_decay=0.05, no_decay_norm_bias=True), net.parameters())
    decayed, free = split.param_groups
    assert decayed["weight_decay"] == 0.05
    assert [p.shape for p in decayed["params"]] == [(4, 1, 3, 3, 3), (2, 4, 1, 1, 1)]
    assert free["weight_decay"] == 0.0 and len(free["params"]) == 4  # two conv biases, the norm's weight and bias
    # one step with zero gradients: only decoupled weight decay moves the weights, and only the decayed ones
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    split.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, net.parameters())]
    assert moved == [True, False, False, False, True, False]
