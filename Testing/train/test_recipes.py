"""The shipped recipes parse, name known methods with valid settings, and chain their stages."""

from __future__ import annotations

from pathlib import Path

import pytest

from toothseg.train.config import load_recipe, stage_data

RECIPES = sorted((Path(__file__).resolve().parents[2] / "ToothSegTraining" / "toothseg" / "train" / "recipes").glob("*.yaml"))


def test_every_method_family_has_a_recipe():
    names = {p.stem for p in RECIPES}
    assert {"supervised_ufba", "mean_teacher_ufba", "bcp_ufba", "mim_ufba", "rail_cbct", "umamba2_ssl",
            "coarse_to_fine", "demo3d_synthetic"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid(path):
    recipe, raw = load_recipe(path)
    assert recipe.name == path.stem
    for index, stage in enumerate(recipe.stages):
        data = stage_data(recipe, index)
        assert len(data.patch_size) == (2 if data.kind == "2d" else 3)
        if index == 0:
            assert stage.init_from == "none"
