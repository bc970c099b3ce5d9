"""The ``toothseg`` command line: thin argument parsing over the functions Slicer also calls."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
