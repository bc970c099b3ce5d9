"""``init_classes``: a network whose classes refine a trained one's starts as that network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from toothseg.core import InputError, Volume
from toothseg.core.models.folder import load_model_folder
from toothseg.core.networks.build import build_network
from toothseg.train.config.loader import recipe_from_dict
from toothseg.train.engine.class_init import class_rows, parse_init_classes

from .test_trainer import REPO, train

DEFAULT = REPO / "Resources" / "Models" / "toothseg-cbct-binary-lopo-long"
RECIPE = REPO / "ToothSegTraining" / "toothseg" / "train" / "recipes" / "contact3d_from_binary_lopo.yaml"


def _probabilities(network, x: torch.Tensor) -> torch.Tensor:
    network.eval()
    with torch.no_grad():
        out = network(x)
    return torch.softmax(out[0] if isinstance(out, (list, tuple)) else out, 1)


@pytest.mark.parametrize("offset", [-4.0, -30.0])
def test_the_bundled_binary_default_split_into_tooth_and_contact_keeps_its_tooth_map(offset):
    """The real default (int8 weights) with its tooth class split in two: every tensor but the output layers is
    copied, the output layers are built from its rows (deep-supervision heads too), and the new network's tooth
    probability (tooth + contact) is the old one's, up to the contact's share e^offset; its arg-max is the same."""
    old = load_model_folder(DEFAULT).network
    card = json.loads((DEFAULT / "model.json").read_text())
    new = build_network(card["architecture"], **{**card["kwargs"], "num_classes": 3})
    state, own = old.state_dict(), new.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    rows = class_rows(state, own, parse_init_classes([0, 1, [1, offset]]))
    assert len(rows) >= 2 and set(rows).isdisjoint(usable)
    assert set(usable) | set(rows) == set(own)  # nothing of the new network left as built
    new.load_state_dict({**usable, **rows}, strict=True)

    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    x[..., 8:20, 10:22, 6:26] += 3.0  # something bright, so that some voxels are tooth
    before, after = _probabilities(old, x), _probabilities(new, x)
    tooth_before, tooth_after = before[:, 1], after[:, 1] + after[:, 2]
    share = np.exp(offset)
    assert torch.allclose(tooth_after, tooth_before, atol=share + 1e-5)
    assert torch.equal(after.argmax(1) > 0, before.argmax(1) > 0)
    assert (after.argmax(1) != 2).all()
    assert float(after[:, 2].max()) <= share * float(after[:, 1].max()) + 1e-6


def test_the_classes_are_checked():
    assert parse_init_classes([0, 1, [1, -4]]) == [(0, 0.0), (1, 0.0), (1, -4.0)]
    for bad in ([0], [0, -1], [0, "tooth"], [0, [1]], [0, [1, "low"]], [0, True], "0,1"):
        with pytest.raises(InputError, match="init_classes"):
            parse_init_classes(bad)
    state = {"head.weight": torch.zeros(2, 4, 1, 1, 1), "head.bias": torch.zeros(2), "body.weight": torch.ones(4)}
    new = {"head.weight": torch.zeros(3, 4, 1, 1, 1), "head.bias": torch.zeros(3), "body.weight": torch.ones(4)}
    rows = class_rows(state, new, [(0, 0.0), (1, 0.0), (1, -2.0)])
    assert sorted(rows) == ["head.bias", "head.weight"] and rows["head.bias"].tolist() == [0.0, 0.0, -2.0]
    with pytest.raises(InputError, match="no output layer"):  # a class the checkpoint does not have
        class_rows(state, new, [(0, 0.0), (1, 0.0), (2, 0.0)])


def test_a_recipe_with_init_classes_needs_init_from_and_valid_entries():
    """Refused when the recipe loads, before a run folder records it: a wrong count of entries, a class the
    network it starts from lacks (its card is read), or an encoder-only start."""
    data = yaml.safe_load(RECIPE.read_text())
    assert recipe_from_dict(json.loads(json.dumps(data))).stages[0].init_classes == [0, 1, [1, -4]]
    no_source = json.loads(json.dumps(data))
    no_source["stages"][0]["init_from"] = "none"
    with pytest.raises(InputError, match="init_classes needs init_from"):
        recipe_from_dict(no_source)
    for classes, init_from, message in (
            ([0, 1, [1, "x"]], str(DEFAULT), r"init_classes\[2\]"),
            ([0, 1], str(DEFAULT), "2 entries for a network of 3 classes"),  # the stage's table has 3
            ([0, 1, [2, -4]], str(DEFAULT), "names class 2, but the network of init_from .* has 2 classes"),
            ([0, 1, [1, -4]], "previous.encoder", "encoder only")):
        bad = json.loads(json.dumps(data))
        bad["stages"][0].update(init_classes=classes, init_from=init_from)
        with pytest.raises(InputError, match=message):
            recipe_from_dict(bad)


def test_the_contact_recipe_starts_as_the_bundled_default(tmp_path: Path, sts_labels):
    """contact3d_from_binary_lopo.yaml in miniature, one step at rate 0 (the weights held): the pipeline builds the
    three classes from the default's two, and the exported model numbers a scan exactly as the default does,
    with a tooth/contact card and teeth_from_boundary. A recipe whose init_classes were ignored would start
    from random output layers and not."""
    from toothseg.core.inference import InferenceOptions, Predictor
    from toothseg.core.io import write_volume

    small = tmp_path / "teeth.nii.gz"
    write_volume(Volume(sts_labels.array[::4, ::4, ::4].copy(), tuple(4 * s for s in sts_labels.spacing_zyx),
                        sts_labels.origin, sts_labels.direction), small)
    data = yaml.safe_load(RECIPE.read_text())
    data["data"].update(labeled=str(small), validation=1, workers=0)  # the default's own 64^3 windows
    # contact e^-30 of the tooth class: the probabilities the predictor resamples and compares are the default's
    # to rounding (at the recipe's e^-4 one voxel of 110 592 flipped here; the unit test above bounds that share)
    data["stages"][0].update(iterations=1, checkpoint_every=1, validate_every=1, init_from=str(DEFAULT),
                             init_classes=[0, 1, [1, -30]])
    data["stages"][0]["optimizer"]["lr"] = 0.0
    result = train(data, tmp_path / "run")
    model = load_model_folder(result.model)
    assert model.card.class_values == [0, 1, 2] and model.card.label_table.name == "tooth-contact"
    assert model.card.postprocessing[0]["name"] == "teeth_from_boundary"

    rng = np.random.default_rng(0)
    scan = rng.normal(0, 100, (48, 48, 48)).astype(np.float32)
    scan[16:30, 14:34, 10:38] += 1800  # a bright block, tooth-like
    volume = Volume(scan.astype(np.int16), (1.2,) * 3)  # one 64^3 window holds it all: no overlap to average
    options = InferenceOptions(device="cpu", tta=False, keep_network_labels=True)
    ours = Predictor(result.model, options).predict(volume)
    default = Predictor(DEFAULT, options).predict(volume)
    tooth = default.network_labels.array > 0
    assert 0 < tooth.sum() < tooth.size  # a map to compare: neither empty nor everything
    np.testing.assert_array_equal(ours.network_labels.array > 0, tooth)
    assert (ours.network_labels.array != 2).all()  # no contact drawn before training
    np.testing.assert_array_equal(ours.labels.array, default.labels.array)
