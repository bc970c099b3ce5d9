"""Headless training: recipes, data, the trainer, semi-supervised methods, synthetic CBCT, active learning.

The Slicer GUI process imports only :mod:`toothseg.train.active_learning.pool` (files and a lock, no
torch); training runs as a separate process.
"""
