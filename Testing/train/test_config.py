"""Recipes: strict keys with suggestions, overrides, stage validation."""

from __future__ import annotations

import pytest
import yaml

from toothseg.core import InputError
from toothseg.train.config import apply_overrides, load_recipe, recipe_from_dict

from .conftest import toy_recipe


def test_round_trip_and_defaults(tmp_path, toy_dataset):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(toy_recipe(toy_dataset)))
    recipe, raw = load_recipe(path, ["stages.0.iterations=7", "data.patch_size=[16, 24]", "seed=3"])
    assert recipe.stages[0].iterations == 7 and recipe.data.patch_size == [16, 24] and recipe.seed == 3
    assert recipe.stages[0].optimizer.name == "adam" and recipe.data.augment.flip_lr == 0.5
    assert raw["stages"][0]["iterations"] == 7


@pytest.mark.parametrize("change, message", [
    ({"dataa": {}}, "unknown key 'dataa'.*did you mean 'data'"),
    ({"data": {"patch_sise": [8, 8]}}, "unknown key 'data.patch_sise'.*did you mean 'patch_size'"),
    ({"stages": [{"method": "mean_teachr"}]}, "unknown training method 'mean_teachr'.*did you mean 'mean_teacher'"),
    ({"stages": [{"method": "mean_teacher", "settings": {"ema_decai": 0.9}}]}, "ema_decai.*did you mean 'ema_decay'"),
    ({"stages": [{"iterations": "many"}]}, "expected int"),
    ({"stages": []}, "no stages"),
    ({"data": {"kind": "4d"}}, "data.kind"),
])
def test_bad_recipes_name_the_problem(toy_dataset, change, message):
    data = toy_recipe(toy_dataset)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(InputError, match=message):
        recipe_from_dict(data)


def test_overrides_report_bad_paths(toy_dataset):
    data = toy_recipe(toy_dataset)
    with pytest.raises(InputError, match="key=value"):
        apply_overrides(data, ["stages.0.iterations"])
    with pytest.raises(InputError, match="does not exist"):
        apply_overrides(data, ["stages.3.iterations=2"])
