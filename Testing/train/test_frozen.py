"""``train_only``: a stage trains the layers it names and leaves every other weight as it started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from toothseg.core import InputError
from toothseg.core.models.folder import load_model_folder
from toothseg.train.config.loader import recipe_from_dict
from toothseg.train.engine.frozen import matches

from .conftest import toy_recipe
from .test_trainer import REPO, train

HEAD_RECIPE = REPO / "ToothSegTraining" / "toothseg" / "train" / "recipes" / "contact3d_head_lopo.yaml"


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_model_folder(folder).network.state_dict().items()}


def test_only_the_named_layers_move(tmp_path: Path, toy_dataset):
    """Continued from a trained toy model with train_only the output layers, only they change; continued
    without it, the encoder changes too (so the comparison can tell)."""
    start = train(toy_recipe(toy_dataset, iterations=2), tmp_path / "start").model
    before = _weights(start)
    moved = {}
    for name, only in (("head", ["decoder.seg_layers"]), ("all", None)):
        data = toy_recipe(toy_dataset, iterations=3)
        data["stages"][0].update(init_from=str(start), **({"train_only": only} if only else {}))
        after = _weights(train(data, tmp_path / name).model)
        moved[name] = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved["head"] and all(matches(k, ["decoder.seg_layers"]) for k in moved["head"])
    assert any(k.startswith("decoder.seg_layers") and k.endswith("weight") for k in moved["head"])
    assert any(k.startswith("encoder.") for k in moved["all"])


def test_train_only_is_checked_when_the_recipe_loads():
    """A prefix naming no parameter (a typo), one naming them all, an empty list and a start from random
    weights are refused with the reason, before a run folder records the recipe."""
    data = yaml.safe_load(HEAD_RECIPE.read_text())
    assert recipe_from_dict(json.loads(json.dumps(data))).stages[0].train_only == ["decoder"]
    for value, init_from, message in (
            (["decoder.seg_layer"], None, r"'decoder.seg_layer' names no parameter .*decoder.seg_layers"),
            (["encoder", "decoder"], None, "names every parameter"),
            ([], None, "non-empty list"),
            (["decoder.seg_layers"], "none", "would stay random")):
        bad = json.loads(json.dumps(data))
        bad["stages"][0]["train_only"] = value
        if init_from:
            bad["stages"][0].update(init_from=init_from)
            bad["stages"][0].pop("init_classes")
        with pytest.raises(InputError, match=message):
            recipe_from_dict(bad)


def test_a_prefix_names_whole_modules_only():
    assert matches("decoder.seg_layers.0.weight", ["decoder.seg_layers"])
    assert matches("decoder.seg_layers.0.weight", ["decoder.seg_layers.0.weight"])
    assert not matches("decoder.seg_layers_extra.weight", ["decoder.seg_layers"])
    assert not matches("encoder.stem.weight", ["decoder"])


def test_a_network_left_with_nothing_to_train_is_refused():
    from toothseg.core.networks.build import build_network
    from toothseg.train.engine.frozen import train_only

    network = build_network("resenc_unet", features_per_stage=[4, 8], strides=[1, 2], n_blocks_per_stage=[1, 1],
                            num_classes=2, spatial_dims=2)
    assert train_only(network, ["decoder.seg_layers"])[0] > 0
    assert {n for n, p in network.named_parameters() if p.requires_grad} == \
        {n for n, _ in network.named_parameters() if n.startswith("decoder.seg_layers.")}
    with pytest.raises(InputError, match="leaves no parameter of network 'reconstruction_head' to train"):
        train_only(network, ["head"], "network 'reconstruction_head'")
