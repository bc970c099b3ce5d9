"""Segmentation networks (PyTorch) and the registry that builds them from model cards.

Importing this package does not import torch; :func:`build_network` does.
"""

from .registry import architecture_names, build_network, register_architecture  # noqa: F401
