"""Synthetic CBCT painted onto real tooth label maps (domain randomisation)."""

from .cbct import SynthesisAnatomy, SynthesisOptions, prepare_anatomy, synthesize  # noqa: F401
