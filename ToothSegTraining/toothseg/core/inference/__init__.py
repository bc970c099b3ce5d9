"""Inference: preprocessing, sliding windows, test-time augmentation, cascades, uncertainty."""

from .predictor import InferenceOptions, Prediction, Predictor, resolve_device  # noqa: F401
