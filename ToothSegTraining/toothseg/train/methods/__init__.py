"""The method registry: supervised, mean_teacher, and the semi-supervised methods of the papers.

Importing the package registers every built-in method (each module adds itself with
:func:`register_method`); :func:`get_method` then finds one by the name a recipe gives.
"""


from ...core.errors import InputError, did_you_mean
from . import bcp, consistency, mean_teacher, rail, ssl_pretrain, supervised  # noqa: F401  (they register)
from .base import (Method, MethodContext, StepOutput, ramp_settings, register_method,  # noqa: F401
                   registered_methods, schedule_settings)


def method_names() -> list[str]:
    return sorted(registered_methods())


def get_method(name: str) -> type[Method]:
    methods = registered_methods()
    if name not in methods:
        raise InputError(f"unknown training method {name!r}{did_you_mean(name, methods)}; "
                         f"known: {', '.join(sorted(methods))}")
    return methods[name]
