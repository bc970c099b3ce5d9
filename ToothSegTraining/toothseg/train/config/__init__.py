"""Recipes: one YAML file describes a whole (multi-stage) training run.

The YAML maps onto typed dataclasses (:mod:`.schema`, built by :mod:`.mapping`); an unknown key is an
error that names the nearest known key. :mod:`.loader` reads the file and applies ``--set`` overrides;
:mod:`.checks` refuses what no run can use when the recipe loads. Stages run in order; each names a
method from the registry, its settings, and ``init_from`` (``none``, ``previous``, ``previous.encoder``
or a model folder).
"""

from .loader import apply_overrides, load_recipe, recipe_from_dict, setting, yaml_text
from .mapping import stage_data
from .schema import (AugmentConfig, DataConfig, ExportConfig, ModelConfig, OptimizerConfig, Recipe,
                     StageConfig)

__all__ = ["Recipe", "DataConfig", "ModelConfig", "StageConfig", "OptimizerConfig", "AugmentConfig",
           "ExportConfig", "load_recipe", "apply_overrides", "setting", "yaml_text", "recipe_from_dict", "stage_data"]
