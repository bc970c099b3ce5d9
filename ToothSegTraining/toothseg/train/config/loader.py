"""Reading a recipe: YAML text, ``--set`` overrides and paths relative to the recipe's folder.

``--set path.to.key=value`` overrides any field (the value is parsed as YAML, so ``[96, 96]``,
``1e-3`` and ``true`` work); ``--set stages.0=null`` drops a stage after all overrides, so indices in
the other ``--set`` values keep counting the recipe's stages as written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ...core.errors import InputError
from .checks import check_recipe
from .mapping import build
from .schema import Recipe

__all__ = ["load_recipe", "recipe_from_dict", "apply_overrides", "setting", "yaml_text"]


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """The checked recipe of a raw mapping (the YAML after overrides)."""
    recipe = build(Recipe, data, "")
    check_recipe(recipe)
    return recipe


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) else part
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            if isinstance(node, dict):
                node[key] = {}
                node = node[key]
            else:
                raise InputError(f"--set {dotted}: '{'.'.join(parts[:i + 1])}' does not exist") from None
    if not isinstance(node, (dict, list)):  # e.g. a key under a stage set to null earlier on the command line
        where = ".".join(parts[:-1])
        raise InputError(f"--set {dotted}: '{where}' is {yaml_text(node)}, not a mapping or list")
    last: Any = int(parts[-1]) if isinstance(node, list) else parts[-1]
    if isinstance(node, list) and not (0 <= last < len(node)):
        raise InputError(f"--set {dotted}: index {last} is out of range")
    node[last] = value


def yaml_text(value: Any) -> str:
    """``value`` as YAML text that reads back as exactly this value: a string plain where YAML keeps it
    as it is, else (a folder 'Patient #3' would end at the ' #', 'a: b' would be a mapping) as JSON,
    which YAML also reads."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def setting(key: str, value: Any) -> str:
    """An override (``--set`` item) whose value reads back exactly (see :func:`yaml_text`)."""
    return f"{key}={yaml_text(value)}"


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["stages.0.iterations=10", "data.patch_size=[64, 64]"]`` applied to the raw YAML data."""
    for item in overrides:
        if "=" not in item:
            raise InputError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"--set {key}: cannot parse {text!r}: {exc}") from exc
        if text.count("#") > json.dumps(value, default=str).count("#"):
            # YAML took the rest for a comment: '--set data.labeled=/data/Study #2/x.json' would train on '/data/Study'
            raise InputError(f"--set {key}: ' #' starts a YAML comment, so {text!r} would be read as {value!r}; quote "
                             f"the value: --set '{key}=\"{text}\"'")
        _set_path(data, key.strip(), value)
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[Recipe, dict[str, Any]]:
    """Recipe from YAML (+ overrides); also returns the resolved raw dict, saved with every run."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read recipe ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a recipe must be a YAML mapping")
    data = apply_overrides(data, overrides or [])
    if isinstance(data.get("stages"), list):  # a stage set to null is dropped, after all overrides
        data["stages"] = [stage for stage in data["stages"] if stage is not None]
    data.setdefault("name", path.stem)
    recipe = recipe_from_dict(data)
    recipe_dir = path.parent
    for attr in ("labeled", "unlabeled", "validation", "root"):
        value = getattr(recipe.data, attr)
        if value and not Path(value).is_absolute() and recipe.data.source == "files" and (recipe_dir / value).exists():
            setattr(recipe.data, attr, str(recipe_dir / value))
    return recipe, data
