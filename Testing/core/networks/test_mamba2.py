"""The pure-PyTorch Mamba2 SSD scan against a naive sequential recurrence (the oracle)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from toothseg.core.networks import build_network
from toothseg.core.networks.mamba2 import Mamba2, mamba_ssm_available, segment_sum, ssd_chunked


def sequential_ssd(x, dt, A, B, C):
    """S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_tᵀ ;  y_t = S_t C_t — one step at a time, float64."""
    batch, length, heads, headdim = x.shape
    groups = B.shape[2]
    B = B.repeat_interleave(heads // groups, dim=2).double()
    C = C.repeat_interleave(heads // groups, dim=2).double()
    x, dt, A = x.double(), dt.double(), A.double()
    state = torch.zeros(batch, heads, headdim, B.shape[-1], dtype=torch.float64)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)  # (b, h)
        state = decay[..., None, None] * state + (dt[:, t, :, None, None] * x[:, t, :, :, None] * B[:, t, :, None, :])
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    return torch.stack(ys, dim=1)


def random_inputs(batch=2, length=37, heads=4, headdim=8, groups=2, d_state=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, headdim, generator=g)
    dt = F.softplus(torch.randn(batch, length, heads, generator=g))
    A = -torch.exp(torch.rand(heads, generator=g) * 2.0)
    B = torch.randn(batch, length, groups, d_state, generator=g)
    C = torch.randn(batch, length, groups, d_state, generator=g)
    return x, dt, A, B, C


@pytest.mark.parametrize("chunk", [1, 5, 16, 37, 64, 256])
def test_chunked_scan_equals_the_recurrence(chunk):
    x, dt, A, B, C = random_inputs()
    expected = sequential_ssd(x, dt, A, B, C)
    actual = ssd_chunked(x, dt, A, B, C, chunk_size=chunk)
    torch.testing.assert_close(actual.double(), expected, atol=1e-4, rtol=1e-4)


def test_long_sequence_with_strong_decay():
    x, dt, A, B, C = random_inputs(batch=1, length=300, heads=2, groups=1, seed=3)
    A = A * 4.0  # strong forgetting: the chunked form must not overflow or underflow
    torch.testing.assert_close(ssd_chunked(x, dt, A, B, C, 64).double(), sequential_ssd(x, dt, A, B, C),
                               atol=1e-4, rtol=1e-4)


def test_segment_sum():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = segment_sum(values)
    assert out[3, 1].item() == 3.0 + 4.0 and out[2, 2].item() == 0.0 and out[1, 3].item() == float("-inf")


def test_full_layer_matches_a_sequential_reference():
    torch.manual_seed(0)
    layer = Mamba2(d_model=16, d_state=8, expand=2, headdim=8, chunk_size=4)
    u = torch.randn(2, 11, 16)
    # reference: the same projections, with the sequential scan
    z, xbc, dt = torch.split(layer.in_proj(u), [layer.d_inner, layer.conv1d.in_channels, layer.nheads], dim=-1)
    xbc = F.silu(layer.conv1d(xbc.transpose(1, 2))[..., :11].transpose(1, 2))
    x, B, C = torch.split(xbc, [layer.d_inner, 8, 8], dim=-1)
    x = x.reshape(2, 11, layer.nheads, 8)
    y = sequential_ssd(x, F.softplus(dt + layer.dt_bias), -torch.exp(layer.A_log), B[:, :, None], C[:, :, None]).float()
    y = (y + x * layer.D[:, None]).reshape(2, 11, layer.d_inner)
    expected = layer.out_proj(layer.norm(y, z))
    torch.testing.assert_close(layer(u), expected, atol=1e-4, rtol=1e-4)


def test_layer_is_causal():
    torch.manual_seed(1)
    layer = Mamba2(d_model=16, d_state=4, headdim=8, chunk_size=3)
    u = torch.randn(1, 9, 16)
    changed = u.clone()
    changed[:, 6:] += 5.0
    torch.testing.assert_close(layer(u)[:, :6], layer(changed)[:, :6])


def test_paper_configuration_shapes():
    layer = Mamba2(d_model=320)  # d_state 32, expand 2, headdim 80 → 8 heads
    assert layer.nheads == 8 and layer.in_proj.out_features == 1352
    assert layer(torch.randn(1, 80, 320)).shape == (1, 80, 320)


@pytest.mark.gpu
@pytest.mark.skipif(not mamba_ssm_available(), reason="mamba_ssm is not installed")
def test_mamba_ssm_kernel_agrees_with_pure_pytorch():
    x, dt, A, B, C = (t.cuda() for t in random_inputs(length=160, heads=8, headdim=16, groups=1, d_state=16))
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    kernel = mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size=64, D=None)
    torch.testing.assert_close(kernel.float(), ssd_chunked(x, dt, A, B, C, 64), atol=1e-3, rtol=1e-3)


def test_umamba2_trains_a_few_steps_on_cpu():
    torch.manual_seed(0)
    model = build_network("umamba2", num_classes=2, features_per_stage=[8, 16, 32], strides=[1, 2, 2],
                          n_blocks_per_stage=[1, 1, 1], headdim=16)
    x = torch.randn(2, 1, 16, 16, 16)
    target = (x > 0.3).long()[:, 0]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0]
    assert model.mamba_layer.mamba.A_log.grad is not None  # the Mamba layer is trained too
