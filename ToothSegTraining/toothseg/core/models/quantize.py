"""Smaller weight files: float16, or int8 with one scale per output channel (weight-only quantisation).

Why: the bundled models share a 50 MiB budget and must ship inside the extension for offline use. Only
the *stored* weights change; the networks always run in float32, so no quantised kernels are needed and
the same file runs on CPU and GPU alike. int8 storage is the symmetric per-output-channel scheme of
weight-only post-training quantisation (as in ``torch.ao.quantization``'s ``per_channel_symmetric``
observers): ``w ≈ q · s``, ``q`` in [-127, 127], one float32 ``s`` per output channel. Convolution and
linear weights (≥ 2 dimensions, ≥ :data:`MIN_INT8_ELEMENTS` elements) are quantised; biases, norms and
small tensors stay float16. The scale of a tensor ``k`` is stored beside it as ``k`` +
:data:`SCALE_SUFFIX`, so a loader that does not know the scheme fails on an unexpected key instead of
reading integers as weights.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import InputError

#: Stored next to an int8 tensor ``key`` as ``key + SCALE_SUFFIX`` (float32, one value per output channel).
SCALE_SUFFIX = ".__int8_scale__"
#: Tensors smaller than this stay float16: their bytes do not matter and their precision may.
MIN_INT8_ELEMENTS = 1024
WEIGHT_DTYPES = ("float32", "float16", "int8")


def quantize_int8(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)`` with ``q`` int8 and ``tensor ≈ q * scale`` (scale per index of dimension 0)."""
    values = tensor.detach().float()
    peak = values.abs().reshape(values.shape[0], -1).amax(dim=1)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    shape = (-1,) + (1,) * (values.dim() - 1)
    q = torch.clamp(torch.round(values / scale.reshape(shape)), -127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def compress_state_dict(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """The state dict to store for ``dtype`` (``float32``, ``float16`` or ``int8``, see the module doc)."""
    if dtype not in WEIGHT_DTYPES:
        raise InputError(f"unknown weight storage {dtype!r}; choose one of {', '.join(WEIGHT_DTYPES)}")
    if any(k.endswith(SCALE_SUFFIX) for k in state):
        state = decompress_state_dict(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not value.is_floating_point() or dtype == "float32":
            out[key] = (value.float() if value.is_floating_point() else value).contiguous()
        elif dtype == "int8" and value.dim() >= 2 and value.numel() >= MIN_INT8_ELEMENTS:
            out[key], out[key + SCALE_SUFFIX] = quantize_int8(value)
        else:
            out[key] = value.half().contiguous()
    return out


def decompress_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """float32 tensors from a state dict written by :func:`compress_state_dict` (others pass unchanged).

    Raises:
        InputError: a scale without its tensor, a scale that does not match its tensor's first
            dimension, or a quantised tensor that is not int8 — a damaged or foreign file.
    """
    scales = {k[: -len(SCALE_SUFFIX)]: v for k, v in state.items() if k.endswith(SCALE_SUFFIX)}
    if not scales:
        return state
    out = {k: v for k, v in state.items() if not k.endswith(SCALE_SUFFIX)}
    for key, scale in scales.items():
        q = out.get(key)
        if q is None:
            raise InputError(f"the weights hold an int8 scale for {key!r} but no such tensor")
        if q.dtype != torch.int8 or scale.dim() != 1 or scale.numel() != q.shape[0]:
            raise InputError(f"the int8 tensor {key!r} ({q.dtype}, {tuple(q.shape)}) does not match its scale "
                             f"({tuple(scale.shape)}); the weights file is damaged")
        out[key] = q.float() * scale.float().reshape((-1,) + (1,) * (q.dim() - 1))
    return out


def check_no_raw_int8(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Refuse integer tensors where the network holds floating-point ones: ``load_state_dict`` would cast
    them silently and the network would run on unscaled integers."""
    for key, value in state.items():
        target = expected.get(key)
        if target is not None and target.is_floating_point() and not value.is_floating_point():
            raise InputError(f"the weights store {key!r} as {value.dtype} without a scale, but the network holds "
                             f"{target.dtype}; the file is damaged or was written by another program")


def stored_dtype(state: dict[str, torch.Tensor]) -> str:
    """How a state dict's floating-point weights are stored: ``int8``, ``float16``, ``float32`` or ``mixed``."""
    if any(k.endswith(SCALE_SUFFIX) for k in state):
        return "int8"
    kinds = {str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()}
    return kinds.pop() if len(kinds) == 1 else "mixed"
