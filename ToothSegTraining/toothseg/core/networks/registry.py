"""The architecture table: the decorator each network module uses to add itself under a name.

This module imports no network module (they import it), so registering creates no import cycle;
:mod:`.build` loads the built-in architectures and builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register_architecture", "ArchitectureSpec", "registered"]

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


def registered() -> dict[str, ArchitectureSpec]:
    """The architectures registered so far (a copy; :func:`.build.architecture_names` loads the built-ins)."""
    return dict(_REGISTRY)
