"""Typed construction: a YAML mapping becomes the schema's dataclasses, with errors that name the key.

An unknown key names the nearest known one; a wrong type names the path (``stages[1].optimizer.lr``).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from ...core.errors import InputError
from .schema import DataConfig, Recipe

__all__ = ["build", "stage_data", "exported_label_table"]


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """Turn a YAML value into the annotated type (dataclasses recursively, tuples from lists)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where) if inner else value
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"{where}: expected a list, got {value!r}")
        return [_convert(v, args[0], f"{where}[{i}]") if args else v for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InputError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, where) for v, a in zip(value, args))
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool) is False and isinstance(value, int):
        return value
    if annotation is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a YAML number where text is kept, e.g. ``validation: 2`` synthetic scans
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise InputError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def build(cls: type, data: Any, where: str) -> Any:
    """``cls`` built from the mapping ``data`` (``where``: its path in the recipe, for errors)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(known))}"
            raise InputError(f"unknown key '{where + '.' if where else ''}{key}' in the recipe{hint}")
    values = {}
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            values[f.name] = _convert(data[f.name], hints[f.name], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise InputError(f"the recipe needs '{path}'")
    return cls(**values)


def stage_data(recipe: Recipe, index: int) -> DataConfig:
    """The data section for stage ``index``: the recipe's, with the stage's ``data`` overrides."""
    overrides = recipe.stages[index].data
    if not overrides:
        return recipe.data
    base = dataclasses.asdict(recipe.data)
    merged = {**base, **overrides}
    if "augment" in overrides:
        merged["augment"] = {**base["augment"], **overrides["augment"]}
    return build(DataConfig, merged, f"stages[{index}].data")


def exported_label_table(recipe: Recipe) -> str:
    """The label table of the stage whose network the recipe exports (the last one): the classes that
    ``export.postprocessing`` and ``export.output_label_table`` are written for."""
    return stage_data(recipe, len(recipe.stages) - 1).label_table if recipe.stages else recipe.data.label_table
