"""Post-processing of label maps: a registry of small steps plus tooth-numbering checks."""

from .numbering import check_numbering  # noqa: F401
from .steps import apply_steps, postprocessing_steps, register_step, step_problems  # noqa: F401
from . import instances  # noqa: F401,E402  (registers the teeth_from_boundary step)
