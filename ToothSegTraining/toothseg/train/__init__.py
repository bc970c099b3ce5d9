"""Headless training: recipes, data, the trainer, semi-supervised methods, synthetic CBCT, active learning.

The Slicer GUI process never imports this package (its case pool is :mod:`toothseg.core.pool`);
training runs as a separate process.
"""
