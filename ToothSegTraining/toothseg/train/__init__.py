"""Headless training: recipes, data, the trainer, semi-supervised methods, synthetic CBCT, active learning.

Never imported by the Slicer GUI process (it starts training as a separate process).
"""
