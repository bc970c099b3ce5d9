"""Build a network by the name a model card stores (``{"architecture": "vnet", "kwargs": {...}}``).

A model folder is self-describing without pickling any class: the card names a registered
architecture and its keyword arguments. The built-in architectures are imported on first use,
because they import torch, which a command such as ``toothseg --help`` should not pay for.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import InputError, did_you_mean
from .registry import ArchitectureSpec, registered

__all__ = ["build_network", "architecture_names", "get_spec"]

BUILTIN_MODULES = ("plain_unet", "resenc_unet", "umamba2", "unet2d", "vnet")
"""Modules of this package that register an architecture when imported."""


def _load_builtins() -> dict[str, ArchitectureSpec]:
    for name in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{name}")
    return registered()


def architecture_names() -> list[str]:
    return sorted(_load_builtins())


def get_spec(name: str) -> ArchitectureSpec:
    specs = _load_builtins()
    if name not in specs:
        raise InputError(f"unknown architecture {name!r}{did_you_mean(name, specs)}; "
                         f"known: {', '.join(sorted(specs))}")
    return specs[name]


def build_network(name: str, **kwargs: Any):
    """Build a registered network; bad keyword arguments give an :class:`InputError`."""
    spec = get_spec(name)
    dims = kwargs.get("spatial_dims", spec.dims[-1])
    if dims not in spec.dims:
        raise InputError(f"architecture {name!r} exists in {' and '.join(f'{d}D' for d in spec.dims)}, not {dims}D")
    try:
        return spec.builder(**kwargs)
    except TypeError as exc:  # an unknown or missing keyword
        raise InputError(f"cannot build {name!r} with {sorted(kwargs)}: {exc}") from exc
    except ValueError as exc:  # a keyword the constructor refuses (e.g. edge_cbam="sometimes")
        raise InputError(f"cannot build {name!r}: {exc}") from exc
