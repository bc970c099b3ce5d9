"""Names that become file or folder names: case IDs, model IDs, stage names, paths inside a model.

One rule for all of them, because each is joined to a folder path: a name from a shared model card
or a manifest must not be able to point elsewhere (``../..``) or hide (``.name``).
"""

from __future__ import annotations

import re

__all__ = ["PLAIN_NAME_RULE", "is_plain_name", "is_plain_relative_path", "plain_name_from"]

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PLAIN_NAME_RULE = "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_plain_name(name: object) -> bool:
    return isinstance(name, str) and bool(_PLAIN_NAME.match(name))


def plain_name_from(text: str, fallback: str = "case") -> str:
    """A plain name made from free text, such as a Slicer node name ("3: CBCT 2024/03 (1)" → "3_CBCT_2024_03_1"):
    a '/' would point into a folder that does not exist, and a ':' on Windows writes into a hidden stream."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._-")[:128].rstrip("._-")
    return cleaned or fallback


def is_plain_relative_path(path: object) -> bool:
    """A '/'-separated path that stays inside its folder: relative, no '..', '.' or empty parts."""
    if not isinstance(path, str) or not path or "\\" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))
