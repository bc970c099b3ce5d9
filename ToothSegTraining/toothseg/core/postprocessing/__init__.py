"""Post-processing of label maps: a registry of small steps plus tooth-numbering checks."""

from .numbering import check_numbering  # noqa: F401
from .steps import (JAWS_IN_VIEW, apply_steps, postprocessing_steps, register_step, step_problems,  # noqa: F401
                    takes_jaws_in_view)
from . import instances  # noqa: F401,E402  (registers the teeth_from_boundary step)
