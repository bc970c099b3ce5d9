"""The method registry: supervised, mean_teacher, and the semi-supervised methods of the papers.

Importing the package registers every built-in method (each module adds itself with
:func:`register_method`); :func:`get_method` then finds one by the name a recipe gives.
"""

import difflib

from ...core.errors import InputError
from . import bcp, consistency, mean_teacher, rail, ssl_pretrain, supervised  # noqa: F401  (they register)
from .base import (Method, MethodContext, StepOutput, register_method, registered_methods,  # noqa: F401
                   schedule_settings)


def method_names() -> list[str]:
    return sorted(registered_methods())


def get_method(name: str) -> type[Method]:
    methods = registered_methods()
    if name not in methods:
        close = difflib.get_close_matches(name, list(methods), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown training method {name!r}{hint}; known: {', '.join(sorted(methods))}")
    return methods[name]
