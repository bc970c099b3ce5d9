"""The architecture registry: names in model cards map to builder functions.

A model card stores ``{"architecture": "vnet", "kwargs": {...}}``; :func:`build_network` turns it
back into a network, so a model folder is self-describing without pickling any class.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from ..errors import InputError

__all__ = ["register_architecture", "build_network", "architecture_names", "ArchitectureSpec"]

_REGISTRY: dict[str, "ArchitectureSpec"] = {}


class ArchitectureSpec:
    """A registered architecture: its builder and the spatial dimensions it supports."""

    def __init__(self, name: str, builder: Callable[..., Any], dims: tuple[int, ...], summary: str) -> None:
        self.name, self.builder, self.dims, self.summary = name, builder, dims, summary


def register_architecture(name: str, dims: tuple[int, ...] = (2, 3), summary: str = "") -> Callable:
    """Class/function decorator adding a builder under ``name`` (lower snake case)."""

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        doc = summary or (builder.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = ArchitectureSpec(name, builder, dims, doc)
        return builder

    return wrap


def architecture_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ArchitectureSpec:
    _load_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown architecture {name!r}{hint}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


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


def _load_builtins() -> None:
    """Import the modules that register the built-in architectures (once, lazily: torch is heavy)."""
    from . import resenc_unet, umamba2, unet2d, vnet  # noqa: F401
