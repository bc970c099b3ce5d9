"""Segmentation networks (PyTorch) and the registry that builds them by name from a model card.

Importing this package does not import torch; :func:`build_network` does. Model folders (cards,
weights, catalogue, importers) are :mod:`toothseg.core.models`, as MONAI separates networks from bundles.
"""

from .build import architecture_names, build_network, get_spec  # noqa: F401
from .registry import register_architecture  # noqa: F401
