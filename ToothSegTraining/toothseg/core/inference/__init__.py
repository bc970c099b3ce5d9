"""Inference: the predictor (one path for every caller), sliding windows, test-time mirroring and
ensembles (:mod:`.tta`), the coarse-to-fine region (:mod:`.cascade`); preprocessing is
:mod:`toothseg.core.preprocessing`, shared with training."""

from .predictor import InferenceOptions, Prediction, Predictor, resolve_device  # noqa: F401
