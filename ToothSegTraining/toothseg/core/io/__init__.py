"""File input/output: images (SimpleITK, h5py), Slicer segmentations (slicerio), atomic writes."""

from .atomic import atomic_output, atomic_write_text, check_writable_output  # noqa: F401
from .images import read_label_map, read_volume, write_volume  # noqa: F401
from .segmentation import Segmentation, read_segmentation, write_segmentation  # noqa: F401
