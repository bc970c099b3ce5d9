"""The core: images, labels, models, inference, metrics and export, without Slicer or training code.

Importing this package is cheap; heavy libraries (SimpleITK, VTK, torch) load in the functions
that need them.
"""

from .errors import (  # noqa: F401
    CancelledError,
    GeometryMismatchError,
    InputError,
    LabelError,
    OutputExistsError,
    OutputWriteError,
    ToothSegError,
)
from .labels import LabelInfo, LabelTable, fdi_name, is_fdi_tooth  # noqa: F401
from .progress import CancelToken, Progress  # noqa: F401
from .volume import Volume, VolumeKind, check_same_geometry  # noqa: F401
