"""The method registry: supervised, mean_teacher, and the semi-supervised methods of the papers."""

from .base import (Method, MethodContext, StepOutput, get_method, method_names, register_method,  # noqa: F401
                   schedule_settings)


def _load_builtins() -> None:
    from . import bcp, consistency, mean_teacher, rail, ssl_pretrain, supervised  # noqa: F401
