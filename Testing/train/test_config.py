"""Recipes: strict keys with suggestions, overrides, stage validation."""

from __future__ import annotations

import pytest
import yaml
from toothseg.core import InputError
from toothseg.train.config.loader import apply_overrides, load_recipe, recipe_from_dict

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
    ({"data": {"image_extent": [512]}}, "image_extent"),
    ({"data": {"kind": "3d", "patch_size": [8, 8, 8], "image_extent": [512, 512]}}, "image_extent"),
    # names that become folder names are checked when the recipe loads, not at export hours later
    ({"name": "my run"}, r"recipe's name \(the model ID unless export.id is set\)"),
    ({"export": {"id": "../x"}}, "recipe's export.id: model ID '../x'"),
    ({"stages": [{"method": "supervised", "name": "../up"}]}, r"stages\[0\].name '../up'.*names a folder"),
    # values no run can use: refused at load, not after the earlier stages trained (or never)
    ({"stages": [{"iterations": 0}]}, r"stages\[0\]: iterations must be at least 1, got 0"),
    ({"stages": [{"batch_size": 0}]}, "batch_size must be at least 1"),
    ({"stages": [{"optimizer": {"lr": -1}}]}, "optimizer.lr must be ≥ 0"),
    ({"stages": [{}, {"optimizer": {"name": "sgdd"}}]}, r"stages\[1\]: optimizer.name 'sgdd' is not one of"),
    ({"stages": [{"optimizer": {"schedule": "step"}}]}, "optimizer.schedule 'step'"),
    ({"stages": [{"optimizer": {"momentum": 1.0}}]}, "momentum must be in"),
    ({"data": {"workers": -1}}, "workers must be ≥ 0"),
    ({"data": {"patch_size": [0, 8]}}, "patch_size values must be at least 1"),
    ({"data": {"labeled_fraction": 0}}, r"labeled_fraction must be in \(0, 1\]"),
    ({"data": {"augment": {"flip_lr": 2}}}, r"augment.flip_lr must be in \[0, 1\]"),
    ({"data": {"augment": {"gamma": [1.5, 0.7]}}}, "augment.gamma must be a range"),
    ({"data": {"intensity": {"mode": "foo"}}}, "unknown intensity normalisation 'foo'"),
    ({"data": {"source": "ufba"}}, "source 'ufba' is not one of"),
    # synthetic data: validation counts synthetic scans, and there is no unlabeled set to name
    ({"data": {"source": "synthetic", "validation": "val", "unlabeled": None}}, "validation for synthetic data is a"),
    ({"data": {"source": "synthetic", "unlabeled": "u.json"}}, "synthetic data has no unlabeled set"),
    ({"stages": [{"data": {"workers": -2}}]}, r"stages\[0\].data: workers"),
    # pseudo-labels come from a model trained before the stage: a wrong name is found at load
    ({"stages": [{"name": "a"}, {"name": "b", "data": {"pseudo_labels": "c"}}]},
     r"stages\[1\] \(b\): data.pseudo_labels 'c' must name an earlier stage \(a\)"),
    ({"stages": [{"name": "a", "data": {"pseudo_labels": "a"}}]}, r"'a' must name an earlier stage \(none\)"),
    ({"stages": [{"name": "a", "method": "ssl_pretrain"}, {"name": "b", "data": {"pseudo_labels": "a"}}]},
     "stage 'a' \\(ssl_pretrain\\) trains no segmentation model"),
    ({"stages": [{"name": "a"}, {"name": "b", "data": {"pseudo_labels": "cascade"}}]},
     "cascade needs export.cascade"),
    ({"stages": [{"name": "a"}, {"name": "b", "data": {"pseudo_labels": "cascade"}}],
      "export": {"cascade": {"coarse": "a", "fine": "b"}}}, "cascade needs the coarse stage 'a' to come before"),
    # a result numbered by post-processing needs the steps that number it, and steps that exist
    ({"export": {"output_label_table": "fdi"}}, "output_label_table needs the export.postprocessing steps"),
    ({"export": {"output_label_table": "fdj", "postprocessing": [{"name": "teeth_from_boundary"}]}},
     "unknown label table 'fdj'"),
    ({"export": {"postprocessing": [{"name": "teeth_from_boundry"}]}},
     "unknown post-processing step 'teeth_from_boundry'"),
    # options are checked when the recipe is read, not when the trained model is first run
    ({"export": {"postprocessing": [{"name": "remove_small", "min_mm3": -5}]}},
     r"step 0 \(remove_small\): min_mm3 must be a finite number >= 0, got -5"),
    ({"export": {"postprocessing": [{"name": "remove_small", "min_mm": 5}]}}, "unknown option 'min_mm'"),
    ({"export": {"postprocessing": [{"name": "teeth_from_boundary"}]}}, "teeth_from_boundary reads tooth interior"),
    ({"export": {"postprocessing": [{"name": "teeth_from_jaws"}]}}, "teeth_from_jaws reads upper/lower tooth"),
    ({"data": {"label_table": "tooth-jaw"},
      "stages": [{"name": "a"}, {"name": "b", "data": {"pseudo_labels": "a"}}]}, "pseudo_labels with label_table"),
    # a tooth-boundary model's own output is not a map with one value per tooth
    ({"data": {"label_table": "tooth-boundary"},
      "stages": [{"name": "a"}, {"name": "b", "data": {"pseudo_labels": "a"}}]}, "pseudo_labels with label_table"),
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


def test_a_yaml_number_where_text_is_kept_is_taken_as_text(toy_dataset):
    """``validation: 2`` (two synthetic scans) or a split named 2 is what a YAML user writes."""
    data = toy_recipe(toy_dataset)
    data["data"] = {**data["data"], "source": "synthetic", "validation": 2, "unlabeled": None}
    assert recipe_from_dict(data).data.validation == "2"
    data["name"] = True  # a YAML yes is not a name
    with pytest.raises(InputError, match="name: expected str"):
        recipe_from_dict(data)


def test_a_stage_set_to_null_is_dropped(tmp_path, toy_dataset):
    """``--set stages.0=null`` removes a stage; the other overrides still count the stages as written."""
    data = toy_recipe(toy_dataset)
    data["stages"] = [{"method": "ssl_pretrain", "name": "pretrain"}, {"method": "supervised", "name": "seg"}]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe, raw = load_recipe(path, ["stages.0=null", "stages.1.iterations=5"])
    assert [s.name for s in recipe.stages] == ["seg"] and recipe.stages[0].iterations == 5
    assert [s["name"] for s in raw["stages"]] == ["seg"]  # the saved recipe is the one that ran
    with pytest.raises(InputError, match="no stages"):
        load_recipe(path, ["stages.0=null", "stages.1=null"])
    with pytest.raises(InputError, match="'stages.0' is null, not a mapping"):  # was a TypeError ('internal error')
        load_recipe(path, ["stages.0=null", "stages.0.iterations=5"])


def test_overrides_report_bad_paths(toy_dataset):
    data = toy_recipe(toy_dataset)
    with pytest.raises(InputError, match="key=value"):
        apply_overrides(data, ["stages.0.iterations"])
    with pytest.raises(InputError, match="does not exist"):
        apply_overrides(data, ["stages.3.iterations=2"])


def test_image_extent_puts_every_xray_on_the_training_scale():
    """With data.image_extent, an X-ray of any size and pixel spacing reaches the network at the size the
    training X-rays did; without it, its own spacing decides (a 0.1 mm X-ray would shrink to a few pixels)."""
    import numpy as np
    from toothseg.core import Volume
    from toothseg.train.config import DataConfig
    from toothseg.train.data.dataset import prepare_volume

    data = DataConfig(kind="2d", spacing=[2.0, 2.0], image_extent=[512.0, 512.0], patch_size=[256, 256])
    rng = np.random.default_rng(0)
    for shape, spacing in (((512, 512), 1.0), ((700, 1400), 0.1), ((300, 900), 1.0)):
        xray = Volume(rng.integers(0, 255, (1, *shape), dtype=np.uint8), (spacing, spacing, 1.0), kind="2d")
        image, target, grid = prepare_volume(xray, data)
        assert grid == (256, 256) and image.shape == (1, 256, 256) and target == (2.0, 2.0)
    data.image_extent = None
    _, _, grid = prepare_volume(Volume(np.zeros((1, 700, 1400), np.uint8), (0.1, 0.1, 1.0), kind="2d"), data)
    assert grid == (35, 70)


def test_an_override_that_yaml_would_cut_at_a_comment_is_refused():
    """'--set data.labeled=/data/Study #2/x.json' trained on '/data/Study' without a word."""
    with pytest.raises(InputError, match=r"' #' starts a YAML comment, so '/data/Study #2/x.json' would be read "
                                         r"as '/data/Study'; quote the value"):
        apply_overrides({}, ["data.labeled=/data/Study #2/x.json"])
    quoted = apply_overrides({}, ['data.labeled="/data/Study #2/x.json"'])
    assert quoted == {"data": {"labeled": "/data/Study #2/x.json"}}
    assert apply_overrides({}, ["name=run#2"]) == {"name": "run#2"}  # no space before '#': no comment
    assert apply_overrides({}, ['notes=["a #b"]']) == {"notes": ["a #b"]}  # quoted inside a list: kept
