"""Training on a real GPU: autocast + gradient scaling (AMP), then export.

Marked ``gpu``: run only where CUDA is available (``.venv/bin/python -m pytest -m gpu Testing``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from toothseg.train.config.loader import recipe_from_dict
from toothseg.train.engine.pipeline import run_recipe

from .conftest import losses, toy_recipe

pytestmark = pytest.mark.gpu


def test_training_with_amp_on_gpu_lowers_the_loss_and_exports(tmp_path, toy_dataset):
    data = toy_recipe(toy_dataset, iterations=12)
    result = run_recipe(recipe_from_dict(json.loads(json.dumps(data))), data, tmp_path / "run", device="cuda",
                        quiet=True)
    assert not result.interrupted and (result.model / "model.json").exists()
    curve = losses(tmp_path / "run")
    assert all(np.isfinite(curve)) and curve[-1] < curve[0]
