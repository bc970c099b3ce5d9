"""Error types that reach the user.

Every error the core raises on purpose derives from :class:`ToothSegError`, so the
CLI and the Slicer module can show one clear line instead of a traceback, and tell
"the input is bad" apart from "the program has a bug".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "did_you_mean",
    "ToothSegError",
    "InputError",
    "GeometryMismatchError",
    "LabelError",
    "OutputExistsError",
    "OutputWriteError",
    "CancelledError",
]


class ToothSegError(Exception):
    """Base class of all errors meant for the user (one line, no traceback)."""


class InputError(ToothSegError):
    """An input file or folder cannot be read, or holds data the program cannot use."""


class GeometryMismatchError(InputError):
    """Two images that must share a voxel grid (e.g. an image and its labels) do not."""


class LabelError(InputError):
    """A label map holds values that the label table does not define."""


class OutputExistsError(ToothSegError):
    """The output path exists and overwriting was not allowed."""


class OutputWriteError(ToothSegError):
    """An output could not be written (permissions, full disk, ...); nothing partial is left."""


class CancelledError(ToothSegError):
    """The user cancelled a long operation; no partial output is left."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to a mistyped one, else empty: one wording for
    every "unknown architecture / method / model" error."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
