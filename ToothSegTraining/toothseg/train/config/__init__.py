"""Recipes: one YAML file describes a whole (multi-stage) training run.

The YAML maps onto typed dataclasses (:mod:`.schema`, built by :mod:`.mapping`); an unknown key is an
error that names the nearest known key. :mod:`.loader` reads the file and applies ``--set`` overrides
(``from toothseg.train.config.loader import load_recipe``); :mod:`.checks` refuses what no run can use
when the recipe loads. Stages run in order; each names a method from the registry, its settings, and
``init_from`` (``none``, ``previous``, ``previous.encoder`` or a model folder), and ``init_classes`` where its
classes refine the ones of ``init_from``'s network.

This package's namespace holds only the schema, so that the data loaders and methods, which the
checks import, can import it without a cycle.
"""

from .mapping import stage_data
from .schema import AugmentConfig, DataConfig, ExportConfig, ModelConfig, OptimizerConfig, Recipe, StageConfig

__all__ = ["Recipe", "DataConfig", "ModelConfig", "StageConfig", "OptimizerConfig", "AugmentConfig",
           "ExportConfig", "stage_data"]
