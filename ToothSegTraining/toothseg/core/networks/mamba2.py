"""Mamba2 (state-space duality) in pure PyTorch, so U-Mamba2 runs on any CPU or GPU.

The layer matches ``mamba_ssm``'s ``Mamba2Simple`` (parameter names and shapes included):
``in_proj`` → [z | xBC | dt]; a causal depthwise conv over xBC, SiLU; per head h and time t::

    S_t = exp(Δ_t A_h) S_{t-1} + Δ_t x_t B_tᵀ        (S_t: headdim x d_state)
    y_t = S_t C_t + D_h x_t

with ``Δ_t = softplus(dt_t + dt_bias_h)`` and ``A_h = -exp(A_log_h)``; then
``out_proj(RMSNorm(y ⊙ SiLU(z)))``. :func:`ssd_chunked` evaluates the recurrence in chunks
(quadratic inside a chunk, a short scan across chunks), which is exact up to round-off. When
``mamba_ssm`` is importable and the tensors are on CUDA, its Triton kernel is used instead
(``use_kernels``); tests check that both agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Mamba2", "ssd_chunked", "segment_sum", "mamba_ssm_available"]


def mamba_ssm_available() -> bool:
    try:
        import mamba_ssm.ops.triton.ssd_combined  # noqa: PLC0415, F401
    except Exception:  # ImportError, or a broken CUDA/Triton install
        return False
    return True


def segment_sum(x: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = sum(x[..., j+1 : i+1])`` for i ≥ j, −inf above the diagonal.

    Computed by masked cumulative sums (not differences of cumsums), which keeps it exact
    for long segments.
    """
    length = x.shape[-1]
    x = x[..., None].expand(*x.shape, length)  # [..., i, j] = x_i
    strictly_lower = torch.tril(torch.ones(length, length, dtype=torch.bool, device=x.device), diagonal=-1)
    x = x.masked_fill(~strictly_lower, 0)
    sums = torch.cumsum(x, dim=-2)
    lower = torch.tril(torch.ones(length, length, dtype=torch.bool, device=x.device), diagonal=0)
    return sums.masked_fill(~lower, float("-inf"))


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int = 256) -> torch.Tensor:
    """The SSD recurrence (without the D skip) by chunks.

    Args:
        x: (batch, length, heads, headdim)
        dt: (batch, length, heads), already softplus-ed and positive
        A: (heads,), negative
        B, C: (batch, length, groups, d_state); heads are split evenly over groups
        chunk_size: time steps per chunk

    Returns:
        y: (batch, length, heads, headdim)
    """
    batch, length, heads, headdim = x.shape
    groups = B.shape[2]
    if heads % groups:
        raise ValueError("the number of heads must be a multiple of the number of groups")
    B = B.repeat_interleave(heads // groups, dim=2)
    C = C.repeat_interleave(heads // groups, dim=2)
    pad = (-length) % chunk_size
    if pad:
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    chunks = x.shape[1] // chunk_size

    def split(t: torch.Tensor) -> torch.Tensor:  # (b, L, ...) -> (b, c, T, ...)
        return t.reshape(batch, chunks, chunk_size, *t.shape[2:])

    xs, Bs, Cs = split(x * dt[..., None]), split(B), split(C)
    a = split(dt * A).permute(0, 3, 1, 2)  # (b, h, c, T)
    a_cum = torch.cumsum(a, dim=-1)

    # 1) within each chunk: y_t = sum_{s<=t} C_t·B_s exp(a_{s+1..t}) x_s dt_s
    decay = torch.exp(segment_sum(a))  # (b, h, c, T, T)
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cs, Bs, decay, xs)

    # 2) state at the end of each chunk from its own inputs
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, T)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bs, decay_to_end, xs)

    # 3) carry states across chunks: S_c = exp(sum a in chunk c) S_{c-1} + states_c
    initial = torch.zeros_like(states[:, :1])
    states = torch.cat([initial, states], dim=1)  # (b, c+1, h, p, n)
    chunk_decay = torch.exp(segment_sum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    carried = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    previous = carried[:, :-1]  # state entering each chunk

    # 4) contribution of the entering state to every step of the chunk
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cs, previous, torch.exp(a_cum))
    y = (y_diag + y_off).reshape(batch, chunks * chunk_size, heads, headdim)
    return y[:, :length]


class RMSNormGated(nn.Module):
    """``RMSNorm(y ⊙ SiLU(z)) · weight`` (gate applied before the norm, as in Mamba2Simple)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y * F.silu(z)
        return y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mamba2(nn.Module):
    """Mamba2 sequence layer, (B, L, d_model) → (B, L, d_model). Defaults = U-Mamba2's bottleneck."""

    def __init__(self, d_model: int, d_state: int = 32, d_conv: int = 4, expand: int = 2, headdim: int = 80,
                 ngroups: int = 1, A_init_range: tuple[float, float] = (1.0, 16.0), dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, chunk_size: int = 256, bias: bool = False,
                 conv_bias: bool = True, use_kernels: bool = True) -> None:
        super().__init__()
        self.d_model, self.d_state, self.headdim, self.ngroups = d_model, d_state, headdim, ngroups
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"expand*d_model ({self.d_inner}) must be a multiple of headdim ({headdim})")
        self.nheads = self.d_inner // headdim
        self.chunk_size, self.use_kernels = chunk_size, use_kernels
        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=bias)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=conv_bias)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = RMSNormGated(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        batch, length, _ = u.shape
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv1d.in_channels, self.nheads], dim=-1)
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :length].transpose(1, 2))
        x, B, C = torch.split(xbc, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        x = x.reshape(batch, length, self.nheads, self.headdim)
        B = B.reshape(batch, length, self.ngroups, self.d_state)
        C = C.reshape(batch, length, self.ngroups, self.d_state)
        dt = F.softplus(dt + self.dt_bias)
        A = -torch.exp(self.A_log.float())
        if self.use_kernels and u.is_cuda and mamba_ssm_available():
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined  # noqa: PLC0415 (optional CUDA kernels)

            y = mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size=self.chunk_size, D=None)
        else:
            y = ssd_chunked(x.float(), dt.float(), A, B.float(), C.float(), self.chunk_size).to(x.dtype)
        y = y + x * self.D[:, None].to(x.dtype)
        y = self.norm(y.reshape(batch, length, self.d_inner), z)
        return self.out_proj(y)
